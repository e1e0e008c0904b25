"""Restores: a snapshot (optionally rolled forward to a point in time by the
stored oplog) delivered, verified, to a destination.

- ``select``: which namespaces, under which names (mongorestore's patterns);
- ``source``: snapshot or point in time, the restorable window;
- ``rollforward``: the temporary head of a point-in-time restore;
- ``plan``: the items to deliver, their streams and expected hashes;
- ``verify``: the checked streams;
- ``destination`` + ``dir``, ``archive``, ``download``, ``target``: where;
- ``service``: requests, runs, listing (the catalog side); ``http``: the
  ``backupflows serve`` routes.

Domain code: no Celery here (``backupflows.tasks.restores`` wraps it).
"""
