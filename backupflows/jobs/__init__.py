"""Backup jobs: deployments, the job state machine, and the steps of the
initial sync and routine work (domain code: no Celery here; ``backupflows.tasks``
wraps these functions into tasks)."""
