"""backupflows: continuous backup and restore for MongoDB, built on Celery."""

__version__ = "0.1.0"
