"""backupflows.oplog"""
