"""One router per concern: health, jobs, events, search."""
