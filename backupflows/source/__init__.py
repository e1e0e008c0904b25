"""backupflows.source"""
