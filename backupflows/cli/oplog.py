"""``backupflows oplog``: oplog tools."""

from __future__ import annotations

import click

from backupflows.oplog.replay import parse_until, replay


@click.group()
def oplog() -> None:
    """Oplog tools."""


@oplog.command("replay")
@click.option("--dump", "dump_dir", required=True, metavar="DIR",
              help="mongodump directory (<db>/<coll>.bson + metadata, .gz too).")
@click.option("--oplog", "oplog_file", required=True, metavar="FILE",
              help="Oplog entries as a BSON file (e.g. the dump's oplog.bson).")
@click.option("--until", metavar="SECONDS[:INCREMENT]", default=None,
              help="Apply only entries before this timestamp (like --oplogLimit).")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Output mongodump directory (must not exist or be empty).")
@click.option("--head", "head_path", default=None, metavar="PATH",
              help="Keep the head database here (default: a temporary one).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1),
              help="Oplog entries per head transaction.")
def replay_cmd(dump_dir: str, oplog_file: str, until: str | None, out_dir: str,
               head_path: str | None, batch_size: int) -> None:
    """Point-in-time recovery without mongod: DUMP + OPLOG (up to --until) -> OUT."""
    limit = parse_until(until) if until is not None else None
    result = replay(dump_dir, oplog_file, out_dir, until=limit, head_path=head_path,
                    batch_size=batch_size, progress=lambda m: click.echo(m, err=True))
    click.echo(f"replayed {result.applied} oplog entries onto {result.loaded} dumped "
               f"documents; wrote {result.written} documents to {out_dir} "
               f"(head at {result.last})", err=True)
