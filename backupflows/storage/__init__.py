"""backupflows.storage"""
