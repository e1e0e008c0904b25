"""A write load on a few collections, in a thread, at a chosen rate.

``WriteLoad(client, ["shop.orders", ...], rate_per_s=200, seed=1)`` runs
inserts, ``$set``/``$inc``/``$push`` updates, updates that grow documents,
replacements and deletes, picked at random by the weights of ``mix``, at
``rate_per_s`` writes per second (a token bucket). With ``ddl_interval`` it
also runs a DDL step every so many seconds, in rotation: create a scratch
collection (with a few documents), create an index on it, rename it, drop
the index, drop it.

Updates, replacements and deletes aim at ``_id`` values the load knows: up
to ``max_known_ids`` read from each collection when the load starts, plus
the ones it inserts. New documents come from ``sampledocs.DocumentFactory``
(the kind is the collection name when it is one, else ``misc``). Every
pymongo error is counted (``stats.errors``) and the load goes on; any other
exception ends the thread and is raised again by ``stop()``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pymongo
import pymongo.errors
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from backupflows.sandbox.sampledocs import KINDS, DocumentFactory

WRITE_KINDS = ("insert", "set", "inc", "push", "grow", "replace", "delete")
DDL_STEPS = ("create_collection", "create_index", "rename_collection", "drop_index",
             "drop_collection")
DEFAULT_MIX: dict[str, float] = {"insert": 3, "set": 3, "inc": 2, "push": 2, "grow": 1,
                                 "replace": 1, "delete": 1}
_RAW = CodecOptions(document_class=RawBSONDocument)
_ID_ONLY = {"_id": 1}


@dataclass
class WriteLoadStats:
    """Counters of what the load did (a snapshot when read from ``stats``)."""

    counts: Counter[str] = field(default_factory=Counter)  # write kind / DDL step -> done
    errors: int = 0
    error_types: Counter[str] = field(default_factory=Counter)  # exception class -> count
    seconds: float = 0.0

    @property
    def writes(self) -> int:
        return sum(self.counts[kind] for kind in WRITE_KINDS)

    @property
    def rate(self) -> float:
        """Writes per second achieved."""
        return self.writes / self.seconds if self.seconds > 0 else 0.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = 1.0
        self.last = time.monotonic()

    def take(self) -> float:
        """Take a token: 0 if one was there, else the seconds to wait for one."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Target:
    """One collection under load: its document factory and known ``_id`` values."""

    def __init__(self, client: pymongo.MongoClient, ns: str, rng: random.Random,
                 id_start: int, max_known: int) -> None:
        db, coll = ns.split(".", 1)
        self.ns = ns
        self.collection = client[db].get_collection(coll, codec_options=_RAW)
        self.factory = DocumentFactory(coll if coll in KINDS else "misc", rng, id_start)
        self.ids: list[object] = []
        self.max_known = max_known
        self.loaded = False

    def load_ids(self) -> None:
        plain = self.collection.with_options(codec_options=CodecOptions())
        self.ids = [d["_id"] for d in plain.find({}, _ID_ONLY).limit(self.max_known)]
        self.loaded = True

    def remember(self, _id: object, rng: random.Random) -> None:
        if len(self.ids) < self.max_known:
            self.ids.append(_id)
        else:
            self.ids[rng.randrange(len(self.ids))] = _id

    def forget(self, index: int) -> None:
        self.ids[index] = self.ids[-1]
        self.ids.pop()


class WriteLoad:
    """A write load generator running in a thread (``start``/``stop`` or ``with``)."""

    def __init__(self, client: pymongo.MongoClient, namespaces: Sequence[str],
                 rate_per_s: float, seed: int = 0, *, mix: Mapping[str, float] | None = None,
                 ddl_interval: float | None = None, max_known_ids: int = 50_000,
                 burst: float | None = None) -> None:
        _check_args(namespaces, rate_per_s, mix, ddl_interval)
        self.rng = random.Random(f"writeload:{seed}")
        id_start = 1_000_000_000 + (seed % 1000) * 1_000_000
        self.targets = [_Target(client, ns, self.rng, id_start, max_known_ids)
                        for ns in namespaces]
        self.mix = dict(mix if mix is not None else DEFAULT_MIX)
        self._kinds, self._weights = list(self.mix), list(self.mix.values())
        self.rate_per_s = float(rate_per_s)
        self.burst = burst if burst is not None else max(1.0, self.rate_per_s / 20)
        self.ddl_interval = ddl_interval
        self._client = client
        self._ddl_step = 0
        self._ddl_round = 0
        self._stats = WriteLoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._started = self._ended = 0.0
        self._scratch_prefix = f"wl_ddl_{seed}_"

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> WriteLoad:
        if self._thread is not None:
            raise RuntimeError("write load already started")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="writeload", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> WriteLoadStats:
        """Stop after the write in flight; the final counters. Raises what
        ended the thread early (other than pymongo errors, which are counted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"write load did not stop within {timeout} s")
        if self._failure is not None:
            raise RuntimeError("write load failed") from self._failure
        return self.stats

    def __enter__(self) -> WriteLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> WriteLoadStats:
        with self._lock:
            end = time.monotonic() if self.running else self._ended
            return WriteLoadStats(Counter(self._stats.counts), self._stats.errors,
                                  Counter(self._stats.error_types),
                                  end - self._started if self._started else 0.0)

    # -- the loop ----------------------------------------------------------
    def _run(self) -> None:
        bucket = TokenBucket(self.rate_per_s, self.burst)
        next_ddl = time.monotonic() + (self.ddl_interval or 0)
        try:
            while not self._stop.is_set():
                if self.ddl_interval and time.monotonic() >= next_ddl:
                    next_ddl += self.ddl_interval
                    self._guarded(self._ddl)
                    continue
                wait = bucket.take()
                if wait:
                    self._stop.wait(wait)
                    continue
                self._guarded(self._one_write)
        except BaseException as exc:  # a bug, not a server error: surface it in stop()
            self._failure = exc
        finally:
            self._ended = time.monotonic()

    def _guarded(self, step: Callable[[], str]) -> None:
        try:
            kind = step()
        except pymongo.errors.PyMongoError as exc:
            with self._lock:
                self._stats.errors += 1
                self._stats.error_types[type(exc).__name__] += 1
            self._stop.wait(0.02)  # do not spin while the server is away
        else:
            with self._lock:
                self._stats.counts[kind] += 1

    def _one_write(self) -> str:
        target = self.rng.choice(self.targets)
        if not target.loaded:
            target.load_ids()
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind != "insert" and not target.ids:
            kind = "insert"
        return getattr(self, f"_do_{kind}")(target)

    # -- writes ------------------------------------------------------------
    def _do_insert(self, target: _Target) -> str:
        raw = target.factory.next_document()
        doc = RawBSONDocument(raw, _RAW)
        target.collection.insert_one(doc)
        target.remember(_raw_id(raw), self.rng)
        return "insert"

    def _pick(self, target: _Target) -> tuple[int, object]:
        index = self.rng.randrange(len(target.ids))
        return index, target.ids[index]

    def _do_set(self, target: _Target) -> str:
        _, _id = self._pick(target)
        target.collection.update_one({"_id": _id}, {"$set": {
            "status": self.rng.choice(("active", "idle", "flagged", "archived")),
            "touched": target.factory.date()}})
        return "set"

    def _do_inc(self, target: _Target) -> str:
        _, _id = self._pick(target)
        target.collection.update_one({"_id": _id}, {"$inc": {"version": 1,
                                                            "stats.hits": self.rng.randint(1, 9)}})
        return "inc"

    def _do_push(self, target: _Target) -> str:
        _, _id = self._pick(target)
        entry = {"at": target.factory.date(), "by": f"u{self.rng.randrange(1000)}"}
        target.collection.update_one({"_id": _id}, {"$push": {"history": entry}})
        return "push"

    def _do_grow(self, target: _Target) -> str:
        """Push a 1-8 KB note, keeping the last four: grows the document by
        up to 32 KB, then stays bounded."""
        _, _id = self._pick(target)
        note = target.factory.text(self.rng.randint(1024, 8192))
        target.collection.update_one({"_id": _id}, {"$push": {"notes": {"$each": [note],
                                                                        "$slice": -4}}})
        return "grow"

    def _do_replace(self, target: _Target) -> str:
        _, _id = self._pick(target)
        raw = target.factory.build(_id)
        target.collection.replace_one({"_id": _id}, RawBSONDocument(raw, _RAW))
        return "replace"

    def _do_delete(self, target: _Target) -> str:
        index, _id = self._pick(target)
        target.forget(index)
        target.collection.delete_one({"_id": _id})
        return "delete"

    # -- DDL ---------------------------------------------------------------
    def _ddl(self) -> str:
        """One step of the rotation on this round's scratch collection."""
        step = DDL_STEPS[self._ddl_step]
        self._ddl_step = (self._ddl_step + 1) % len(DDL_STEPS)
        db = self._client[self.targets[self._ddl_round % len(self.targets)].ns.split(".")[0]]
        name = f"{self._scratch_prefix}{self._ddl_round}"
        if step == "drop_collection":
            self._ddl_round += 1
        if step == "create_collection":
            db.create_collection(name)
            db[name].insert_many([{"_id": i, "n": i} for i in range(3)])
        elif step == "create_index":
            db[name].create_index("n", name="wl_n")
        elif step == "rename_collection":
            db[name].rename(f"{name}_renamed")
        elif step == "drop_index":
            db[f"{name}_renamed"].drop_index("wl_n")
        else:
            db.drop_collection(f"{name}_renamed")
        return step


def _raw_id(raw: bytes) -> object:
    return RawBSONDocument(raw)["_id"]


def _check_args(namespaces: Sequence[str], rate_per_s: float,
                mix: Mapping[str, float] | None, ddl_interval: float | None) -> None:
    if isinstance(namespaces, str) or not namespaces:
        raise ValueError("namespaces must be a non-empty sequence of 'db.collection' names")
    for ns in namespaces:
        db, sep, coll = ns.partition(".")
        if not sep or not db or not coll:
            raise ValueError(f"invalid namespace {ns!r} (expected db.collection)")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
    if mix is not None:
        unknown = set(mix) - set(WRITE_KINDS)
        if unknown or any(w < 0 for w in mix.values()) or not sum(mix.values()) > 0:
            raise ValueError(f"mix must weigh write kinds {', '.join(WRITE_KINDS)} with "
                             f"non-negative weights, some positive; got {dict(mix)!r}")
    if ddl_interval is not None and not ddl_interval > 0:
        raise ValueError(f"ddl_interval must be positive seconds, got {ddl_interval!r}")
