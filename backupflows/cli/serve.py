"""``backupflows serve``: the HTTP service of restores (``backupflows.restore.http``)."""

from __future__ import annotations

import threading

import click


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0: any free).")
def serve(host: str, port: int) -> None:
    """Serve POST/GET /restores, download links and GET /metrics (BACKUPFLOWS_API_TOKEN required)."""
    from backupflows.catalog import migrate
    from backupflows.logging import configure_logging
    from backupflows.ops import metrics
    from backupflows.restore import http
    from backupflows.storage.service import Storage
    from backupflows.tasks.restores import enqueue

    configure_logging()  # request lines: JSON with BACKUPFLOWS_LOG_JSON=1, redacted
    migrate.require_current()
    metrics.register()  # GET /metrics (Prometheus text, same bearer token)
    storage = Storage.open()
    server = http.make_server(storage, lambda rid: enqueue(storage, rid), host, port)
    stop = threading.Event()
    threading.Thread(target=http.sweep_forever, args=(storage, stop), daemon=True).start()
    click.echo(f"backupflows serve: listening on {server.url}", err=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
