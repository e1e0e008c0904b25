"""File names of a dump directory, as mongodump chooses them.

mongodump (``mongodump/prepare.go``, ``common/util``) names a collection's
files ``url.PathEscape(name)`` + ``.bson`` / ``.metadata.json`` (+ ``.gz``):
letters, digits and ``-._~$&+:=@`` stay, every other byte of the UTF-8 name
becomes ``%XX`` (upper-case hex), so ``/`` is ``%2F`` and a space ``%20``.
When the escaped name is longer than 238 bytes it is cut to 208 bytes and
``%24`` plus the unpadded URL-safe base64 SHA-1 of the real name (27
characters) is appended: 238 bytes, so that the longest file name
(``.metadata.json.gz``) stays within 255 bytes. mongorestore recognises such
a name (238 bytes containing ``%24``) and takes the real name from the
metadata's ``collectionName``.
"""

from __future__ import annotations

import base64
import hashlib

from backupflows.mongodump.errors import DumpFormatError

MAX_ESCAPED = 238
TRUNCATED_KEEP = 208
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~$&+:=@")
_HEX = b"0123456789ABCDEFabcdef"


def escape_collection_name(name: str) -> str:
    """Go's ``url.PathEscape`` of a collection name."""
    out = []
    for byte in name.encode("utf-8"):
        out.append(chr(byte) if byte in _SAFE else f"%{byte:02X}")
    return "".join(out)


def unescape_collection_name(escaped: str) -> str:
    """Go's ``url.PathUnescape``: a malformed ``%`` escape is an error."""
    raw = escaped.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or any(c not in _HEX for c in pair):
                raise DumpFormatError(f"bad escape {raw[i:i + 3].decode(errors='replace')!r} "
                                      f"in file name {escaped!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DumpFormatError(f"file name {escaped!r} does not unescape to UTF-8") from exc


def collection_file_stem(name: str) -> str:
    """The file name of a collection without extension (escaped, maybe hashed)."""
    escaped = escape_collection_name(name)
    if len(escaped) <= MAX_ESCAPED:
        return escaped
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    suffix = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return escaped[:TRUNCATED_KEEP] + "%24" + suffix


def is_truncated_stem(stem: str) -> bool:
    """Whether mongorestore would read the real name from the metadata."""
    return len(stem) == MAX_ESCAPED and "%24" in stem


def check_db_name(db: str) -> None:
    """Refuse database names that cannot be a directory of a dump."""
    if not db or db in (".", "..") or any(c in db for c in '/\\\x00'):
        raise DumpFormatError(f"invalid database name {db!r} for a dump directory")
