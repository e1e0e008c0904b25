"""Another service asking for a restore: a bare Celery app that knows only
the broker (and result backend) URL, no backupflows task or route.

Usage: python other_service.py BROKER BACKEND KEYPREFIX KWARGS_JSON
Prints {"restore": <id>} (the request task's result).
"""

from __future__ import annotations

import json
import sys

from celery import Celery


def main() -> None:
    broker, backend, prefix, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    if broker.startswith("sqlite://"):  # the embedded broker's kombu transport, nothing else
        from backupflows.tasks import sqlite_broker

        sqlite_broker.register()
    app = Celery("other-service", broker=broker, backend=backend)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    result_accept_content=["json"])
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    result = app.send_task("backupflows.restore.request", kwargs=json.loads(kwargs),
                           queue="restore")
    print(json.dumps({"restore": result.get(timeout=90)}))


if __name__ == "__main__":
    main()
