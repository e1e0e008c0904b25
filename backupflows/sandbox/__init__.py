"""backupflows.sandbox"""
