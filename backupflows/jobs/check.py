"""``check --against-source``: the head and the source, collection by collection.

For every collection the filter copies (on either side): the document count
and the content hash (``backupflows.contenthash``: raw bytes, field order
included) of the head, read in one consistent snapshot at its applied optime,
next to the same of the source read now. The source keeps changing: when its
newest optime is past the head's, a difference may be a write not applied
yet (``source_ahead`` says so). Runs where the head is (the job's daemon).
"""

from __future__ import annotations

from typing import Any

from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob
from backupflows.errors import HeadError, NotFound
from backupflows.head.store import HeadStore
from backupflows.jobs import resources
from backupflows.source.compare import collection_summary
from backupflows.source.namespaces import NamespaceFilter, list_namespaces
from backupflows.source.topology import newest_optime


def check_against_source(job_id: int) -> dict[str, Any]:
    """The comparison report (stable keys, the ``check --json`` shape)."""
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        if job is None:
            raise NotFound(f"no backup job {job_id}")
        name, uri, generation = job.deployment.name, job.deployment.uri, job.generation
        filt = NamespaceFilter(job.deployment.include_ns, job.deployment.exclude_ns)
        state = job.state
    path = resources.head_path(job_id, generation)
    if not path.exists():
        raise HeadError(f"job {job_id} ({name}) has no head on this daemon yet ({path}): "
                        f"its state is {state}")
    with HeadStore(path) as head, head.snapshot() as snap:
        head_ts = snap.optime().ts
        ours = {c.ns: snap.content_hash(c) for c in snap.collections() if c.holds_documents}
    client = resources.source_client(uri)
    newest = optime.pack(newest_optime(client))
    theirs = {i.ns for i in list_namespaces(client, filt) if i.type == "collection"}
    rows = [_row(ns, ours.get(ns), client if ns in theirs else None)
            for ns in sorted(set(ours) | theirs)]
    differences = sum(1 for r in rows if not r["equal"])
    return {"deployment": name, "job": job_id, "generation": generation, "state": state,
            "head_ts": optime.to_json(head_ts), "source_ts": optime.to_json(newest),
            "source_ahead": newest > head_ts, "collections": rows,
            "differences": differences, "ok": differences == 0}


def _row(ns: str, head_hash: Any, client: Any) -> dict[str, Any]:
    source = collection_summary(client, ns) if client is not None else None
    row = {"ns": ns,
           "head_count": head_hash.count if head_hash is not None else None,
           "source_count": source.count if source is not None else None,
           "head_hash": head_hash.hexdigest() if head_hash is not None else None,
           "source_hash": source.hexdigest if source is not None else None}
    row["equal"] = (row["head_count"] == row["source_count"]
                    and row["head_hash"] == row["source_hash"])
    return row
