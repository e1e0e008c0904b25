"""Reading a source stream ahead, on a thread, while the caller works.

``prefetched(items)`` runs ``items`` (typically a cursor over the source) on a
daemon thread and hands its items over in chunks through a bounded queue:
the source serves the next batch while the caller compares or writes the
previous one (a socket wait releases the GIL). The thread starts at once:
the source is read before the caller asks for the first item (validation
starts the next collection's scan while it compares this one). Memory is at
most ``depth`` chunks of ``chunk`` items. An exception of the stream is
raised in the caller; when the caller stops early (``close()`` of the
generator, or an exception), the thread stops at its next item and the
stream is closed, also before the first item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_END = object()
_PUT_WAIT = 0.1


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(items: Iterable[T], *, chunk: int = 1024, depth: int = 4
               ) -> Generator[T, None, None]:
    """The items of ``items``, read ahead on a thread started now (see the
    module docstring)."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, q, stop, chunk), daemon=True,
                              name="prefetch")
    thread.start()
    handed = _hand_over(q, stop, thread)
    next(handed)  # into its ``try``: a close() before the first item stops the thread too
    return handed


def _hand_over(q: queue.Queue[object], stop: threading.Event, thread: threading.Thread
               ) -> Generator[T, None, None]:
    try:
        yield None  # type: ignore[misc]  # taken by ``prefetched`` itself
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, _Failed):
                raise got.exc
            yield from got  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _produce(items: Iterable[T], q: queue.Queue[object], stop: threading.Event,
             chunk: int) -> None:
    it = iter(items)
    buf: list[T] = []
    try:
        for item in it:
            buf.append(item)
            if len(buf) >= chunk:
                if not _put(q, buf, stop):
                    return
                buf = []
        if buf and not _put(q, buf, stop):
            return
        _put(q, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
        if not buf or _put(q, buf, stop):  # the items read before the failure first
            _put(q, _Failed(exc), stop)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the caller has stopped (then False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_PUT_WAIT)
            return True
        except queue.Full:
            continue
    return False
