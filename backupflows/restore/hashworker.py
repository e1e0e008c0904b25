"""A helper process of ``hashpool``: the content hash of whole-document chunks.

Runs as ``python -I hashworker.py`` (standard library only, so it starts in
a few milliseconds and works from a Celery pool process, which may not fork
``multiprocessing`` children). Protocol on stdin/stdout, one answer per
request, in order:

- request: uint32 little-endian length, then that many bytes (BSON documents
  back to back); a zero length ends the process;
- answer: ``b"K"`` + uint32 documents + 32-byte big-endian sum of the
  documents' BLAKE2b-256 digests modulo 2**256 (``backupflows.contenthash``),
  or ``b"E"`` + uint32 offset + int32 length of the first malformed document.
"""

from __future__ import annotations

import struct
import sys
from hashlib import blake2b

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i").unpack_from
_MOD = 1 << 256
_TEMPLATE = blake2b(digest_size=32)


def hash_documents(data: bytes) -> tuple[int, int, int]:
    """(documents, digest sum mod 2**256, -1) or (-1, offset, bad length)."""
    view = memoryview(data)
    pos, end, n, total = 0, len(data), 0, 0
    from_bytes, fresh, i32 = int.from_bytes, _TEMPLATE.copy, _I32
    while pos < end:
        size = i32(data, pos)[0] if end - pos >= 5 else 0
        if size < 5 or pos + size > end or data[pos + size - 1] != 0:
            return -1, pos, size
        h = fresh()  # copying an initialised state is cheaper than a constructor call
        h.update(view[pos:pos + size])
        total += from_bytes(h.digest(), "big")
        pos += size
        n += 1
    return n, total % _MOD, -1


def _read(stream: object, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise EOFError
        got += k
    return bytes(buf)


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            size = _U32.unpack(_read(stdin, 4))[0]
            if size == 0:
                return
            data = _read(stdin, size)
        except EOFError:
            return
        n, a, b = hash_documents(data)
        if n < 0:
            stdout.write(b"E" + _U32.pack(a) + struct.pack("<i", b))
        else:
            stdout.write(b"K" + _U32.pack(n) + a.to_bytes(32, "big"))
        stdout.flush()


if __name__ == "__main__":
    main()
