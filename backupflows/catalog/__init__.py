"""backupflows.catalog"""
