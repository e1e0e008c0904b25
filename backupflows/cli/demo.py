"""``backupflows demo`` (foundation version; the full demo comes with later issues).

What it does today, for real: migrates the catalog in the data directory,
starts a sandbox replica set member on a free port, writes a few documents
through pymongo and reads back the oplog entries the sandbox wrote for them.
What it does NOT do yet: back up, snapshot or restore anything; it says so.
"""

from __future__ import annotations

import click

from backupflows.errors import BackupflowsError

_NOT_YET = (
    "not done yet: backup job, snapshot, restore and verification "
    "(they arrive with the backup, snapshot and restore issues)"
)


@click.command()
@click.option("--documents", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Documents to write into the sandbox.")
def demo(documents: int) -> None:
    """Foundation demo: catalog + sandbox + oplog (no backup yet; it says so)."""
    from backupflows.catalog import migrate
    from backupflows.redact import redact_uri
    from backupflows.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    revision = migrate.upgrade(settings.catalog_url)
    click.echo(f"catalog {redact_uri(settings.catalog_url)}: migrated to revision {revision}")
    _sandbox_round_trip(documents)
    click.echo(_NOT_YET)


def _sandbox_round_trip(documents: int) -> None:
    try:
        from backupflows.sandbox.server import SandboxServer
    except ImportError as exc:
        raise BackupflowsError(f"the sandbox is not available in this build: {exc}") from None
    import pymongo
    import pymongo.errors

    with SandboxServer() as server:
        click.echo(f"sandbox replica set rs0 listening at {server.uri}")
        client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000)
        try:
            coll = client["demo"]["items"]
            coll.insert_many([{"_id": i, "n": i, "tags": ["demo"]} for i in range(documents)])
            coll.update_many({}, {"$inc": {"n": 1}})
            count = coll.count_documents({})
            oplog = client["local"]["oplog.rs"]
            entries = oplog.count_documents({"ns": "demo.items"})
        except pymongo.errors.PyMongoError as exc:
            raise BackupflowsError(f"sandbox round trip failed: {exc}") from None
        finally:
            client.close()
    click.echo(f"wrote {documents} documents and updated them: {count} in demo.items, "
               f"{entries} oplog entries for demo.items in local.oplog.rs")
    if count != documents or entries < 2 * documents:
        raise BackupflowsError(
            f"sandbox check failed: expected {documents} documents and at least "
            f"{2 * documents} oplog entries"
        )
