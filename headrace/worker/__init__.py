"""The worker: leases tasks from the queue, extracts text, chunks it and stores it."""
