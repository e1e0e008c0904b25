"""backupflows.tasks"""
