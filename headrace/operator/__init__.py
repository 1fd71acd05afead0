"""The kopf operator: reconciles IngestionJobs into worker Jobs, HPAs and status."""
