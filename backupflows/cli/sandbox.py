"""``backupflows sandbox``: run the MongoDB-wire-compatible sandbox in the foreground."""

from __future__ import annotations

import signal
import threading

import click


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (and to advertise in hello).")
@click.option("--port", type=click.IntRange(0, 65535), default=27017, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--oplog-size-mb", type=click.FloatRange(min=0.01), default=192.0,
              show_default=True, help="Oplog size cap; the oldest entries drop off.")
@click.option("--noop-interval", type=click.FloatRange(min=0.05), default=10.0,
              show_default=True, help="Seconds between periodic noop oplog entries.")
def sandbox(host: str, port: int, oplog_size_mb: float, noop_interval: float) -> None:
    """Run a one-member replica set (rs0) that pymongo can use, until Ctrl-C.

    Connect with mongodb://HOST:PORT/?replicaSet=rs0 (or directConnection=true).
    Data lives in memory only.
    """
    from backupflows.sandbox.server import SandboxServer

    server = SandboxServer(host=host, port=port,
                           oplog_size_bytes=max(4096, int(oplog_size_mb * 1024 * 1024)),
                           noop_interval=noop_interval)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"sandbox rs0 listening on {server.address}  uri: {server.uri}", err=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        click.echo("sandbox stopped", err=True)
