"""backupflows.head"""
