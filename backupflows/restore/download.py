"""Destination: a downloadable file behind a token-protected link (``--download``).

The restore writes ``<data dir>/downloads/restore-<id>.tar.gz``: a gzipped
tar of the mongodump directory (under ``dump/``), built one collection at a
time (each collection is written to a staging directory, added to the tar
and deleted, so the extra disk space is one collection's). With
``format="archive"`` the file is a gzipped mongodump archive
(``restore-<id>.archive.gz``) instead.

Links: ``create_link`` records a ``download_links`` row that expires after
``ttl`` seconds (default 1 h, ``BACKUPFLOWS_DOWNLOAD_TTL``) and works
``uses`` times (default 1, ``BACKUPFLOWS_DOWNLOAD_USES``). The token is
``<link id>-<HMAC-SHA256(secret, salt)>``; the catalog keeps only its
SHA-256 and the salt, so reading the catalog does not give the links. The
secret is ``BACKUPFLOWS_DOWNLOAD_SECRET``, else ``BACKUPFLOWS_API_TOKEN``,
else a key file created in the data directory (mode 0600): the worker
(which creates links) and ``backupflows serve`` (which shows them) must see
the same one. ``use_link`` spends one use with a conditional UPDATE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from backupflows.catalog.models import utcnow
from backupflows.catalog.restore_models import DownloadLink
from backupflows.errors import ConfigError, RestoreError
from backupflows.restore.archive import ArchiveDestination
from backupflows.restore.destination import Destination
from backupflows.restore.dir import DirDestination
from backupflows.restore.plan import Item
from backupflows.restore.verify import Checked

DEFAULT_TTL = 3600
DEFAULT_USES = 1
TAR_ROOT = "dump"


def downloads_dir() -> Path:
    from backupflows.settings import get_settings

    path = get_settings().data_dir / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r}: must be greater than zero")
    return value


def default_ttl() -> int:
    return _env_int("BACKUPFLOWS_DOWNLOAD_TTL", DEFAULT_TTL)


def default_uses() -> int:
    return _env_int("BACKUPFLOWS_DOWNLOAD_USES", DEFAULT_USES)


class TarDestination(Destination):
    """A ``.tar.gz`` of the mongodump directory, streamed collection by collection."""

    kind = "download"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.staging = path.with_name(path.name + ".staging")
        self.inner = DirDestination(self.staging)
        self.tar: tarfile.TarFile | None = None

    def prepare(self, items: list[Item]) -> None:
        if self.path.exists():
            raise RestoreError(f"download file {self.path} exists already")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.inner.prepare(items)
        self.tar = tarfile.open(self.partial, "w:gz", compresslevel=6)  # noqa: SIM115

    def write(self, item: Item, stream: Checked) -> None:
        assert self.tar is not None and self.inner.writer is not None
        self.inner.write(item, stream)
        w = self.inner.writer
        files = [w.bson_path(item.meta)] if item.meta.has_data else []
        for path in [*files, w.metadata_path(item.meta)]:
            self.tar.add(path, arcname=f"{TAR_ROOT}/{path.relative_to(self.staging)}",
                         recursive=False)
            path.unlink()

    def finish(self) -> dict[str, Any]:
        assert self.tar is not None
        self.tar.close()
        shutil.rmtree(self.staging, ignore_errors=True)
        os.replace(self.partial, self.path)
        return {"kind": self.kind, "format": "dir", "file": self.path.name,
                "size": self.path.stat().st_size}

    def abort(self) -> None:
        if self.tar is not None:
            self.tar.close()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.partial.unlink(missing_ok=True)


def download_destination(restore_id: int, fmt: str = "dir") -> Destination:
    """Where a download restore writes its file."""
    if fmt == "archive":
        dest = ArchiveDestination(downloads_dir() / f"restore-{restore_id}.archive.gz",
                                  gzip=True)
        dest.kind = "download"
        return dest
    if fmt != "dir":
        raise RestoreError(f"download format must be 'dir' or 'archive', got {fmt!r}")
    return TarDestination(downloads_dir() / f"restore-{restore_id}.tar.gz")


# -- links --------------------------------------------------------------------------------

def _secret() -> bytes:
    for name in ("BACKUPFLOWS_DOWNLOAD_SECRET", "BACKUPFLOWS_API_TOKEN"):
        value = os.environ.get(name, "").strip()
        if value:
            return hashlib.sha256(b"backupflows-download:" + value.encode()).digest()
    from backupflows.settings import get_settings

    key = get_settings().data_dir / "download.key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return key.read_bytes()


def make_token(link_id: int, salt: str) -> str:
    mac = hmac.new(_secret(), salt.encode(), hashlib.sha256).digest()
    return f"{link_id}-{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class LinkInfo:
    token: str
    expires_at: datetime
    uses_left: int
    max_uses: int
    filename: str
    size: int

    def to_json(self, base_url: str | None = None) -> dict[str, Any]:
        path = f"/downloads/{self.token}"
        return {"url": (base_url.rstrip("/") + path) if base_url else path,
                "token": self.token, "expires_at": self.expires_at.isoformat(),
                "uses_left": self.uses_left, "max_uses": self.max_uses,
                "file": self.filename, "size": self.size}


def create_link(s: Session, restore_id: int, path: Path, *, ttl: int | None = None,
                uses: int | None = None) -> LinkInfo:
    """Record a link to ``path`` for restore ``restore_id`` (one per restore)."""
    ttl = ttl or default_ttl()
    uses = uses or default_uses()
    salt = secrets.token_hex(16)
    row = DownloadLink(restore_id=restore_id, token_hash="pending-" + salt[:20], salt=salt,
                       path=str(path), filename=path.name, size=path.stat().st_size,
                       expires_at=utcnow() + timedelta(seconds=ttl), uses_left=uses,
                       max_uses=uses)
    s.add(row)
    s.flush()
    token = make_token(row.id, salt)
    row.token_hash = token_hash(token)
    return _info(row, token)


def _info(row: DownloadLink, token: str) -> LinkInfo:
    return LinkInfo(token, row.expires_at, row.uses_left, row.max_uses, row.filename, row.size)


def link_of(s: Session, restore_id: int) -> LinkInfo | None:
    """The link of a restore (its token re-derived), if it has one."""
    row = s.query(DownloadLink).filter(DownloadLink.restore_id == restore_id) \
        .order_by(DownloadLink.id.desc()).first()
    if row is None:
        return None
    return _info(row, make_token(row.id, row.salt))


class LinkGone(RestoreError):
    """The link expired or its uses are spent (HTTP 410)."""


class LinkUnknown(RestoreError):
    """No such link (HTTP 404)."""


def use_link(s: Session, token: str) -> DownloadLink:
    """Spend one use of the link ``token`` (conditional UPDATE: the claim);
    ``LinkUnknown`` or ``LinkGone`` otherwise."""
    digest = token_hash(token)
    row = s.query(DownloadLink).filter(DownloadLink.token_hash == digest).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise LinkUnknown("unknown download link")
    now = utcnow()
    hit = s.execute(update(DownloadLink).where(
        DownloadLink.id == row.id, DownloadLink.uses_left > 0, DownloadLink.expires_at > now,
    ).values(uses_left=DownloadLink.uses_left - 1)).rowcount == 1
    if not hit:
        why = "expired" if row.expires_at <= now else "used up"
        raise LinkGone(f"download link {why}")
    s.refresh(row)
    if not Path(row.path).is_file():
        raise LinkGone("the download file is gone")
    return row


def remove_dead_files(s: Session) -> int:
    """Delete the files of links that expired or are used up; returns how many."""
    now = utcnow()
    rows = s.query(DownloadLink).filter(
        (DownloadLink.expires_at <= now) | (DownloadLink.uses_left <= 0)).all()
    n = 0
    for row in rows:
        path = Path(row.path)
        if path.exists():
            path.unlink(missing_ok=True)
            n += 1
    return n
