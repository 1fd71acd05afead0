"""One router per concern: health, metrics, jobs, events, search."""
