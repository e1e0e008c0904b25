"""backupflows.restore"""
