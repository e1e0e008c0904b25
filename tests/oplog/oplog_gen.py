"""A seeded generator of long, well-formed oplogs of every entry kind, for
the idempotency, crash and error tests (which compare heads with heads, so
the generator needs no model of document contents, only of which
collections and ``_id``s exist)."""

from __future__ import annotations

import random
from typing import Any

from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId

from tests.oplog.helpers import Op, uuid


class OplogGenerator:
    """``legacy``: updates as a 3.6-4.4 server writes them ($set/$unset),
    else as 5.0+ writes them ($v: 2 deltas); both write replacements. (One
    server version writes one style: field order after replaying a mix of
    styles over a later state can legitimately differ.)"""

    def __init__(self, seed: int, dbs: tuple[str, ...] = ("app", "shop"),
                 legacy: bool = False) -> None:
        self.legacy = legacy
        self.rng = random.Random(seed)
        self.op = Op()
        self.colls: dict[str, Binary] = {}
        self.ids: dict[str, list[Any]] = {}
        self.indexes: dict[str, set[str]] = {}
        self.next_uuid = 1
        self.next_txn = 1
        self.dbs = dbs
        self.out: list[bytes] = []

    # -- helpers --

    def _new_uuid(self) -> Binary:
        self.next_uuid += 1
        return uuid(self.next_uuid)

    def _coll(self) -> str:
        return self.rng.choice(sorted(self.colls))

    def _new_id(self) -> Any:
        r = self.rng.random()
        n = self.rng.randrange(10_000)
        if r < 0.4:
            return n
        if r < 0.55:
            return Int64(n)
        if r < 0.7:
            return float(n) + (0.5 if self.rng.random() < 0.5 else 0.0)
        if r < 0.85:
            return f"k{n}"
        return ObjectId(n.to_bytes(12, "big"))

    def _doc(self, _id: Any) -> dict[str, Any]:
        rng = self.rng
        return {"_id": _id, "a": rng.randrange(100), "s": "x" * rng.randrange(40),
                "sub": {"x": rng.randrange(9), "y": [1, 2]},
                "arr": [rng.randrange(9) for _ in range(rng.randrange(5))]}

    def _crud(self) -> tuple[str, Any, Any, dict[str, Any]] | None:
        """One CRUD op as (op, ns, o, extra) on the model."""
        if not self.colls:
            return None
        ns = self._coll()
        ids = self.ids[ns]
        r = self.rng.random()
        if r < 0.35 or not ids:
            _id = self._new_id()
            if _id in ids:
                return None
            ids.append(_id)
            return "i", ns, self._doc(_id), {}
        _id = self.rng.choice(ids)
        if r < 0.8:
            return "u", ns, self._update(), {"o2": {"_id": _id}}
        ids.remove(_id)
        return "d", ns, {"_id": _id}, {}

    def _update(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.1:
            return {"a": rng.randrange(100), "z": "replaced"}
        if self.legacy:
            return rng.choice([
                {"$set": {"a": rng.randrange(100), "sub.x": rng.randrange(9)}},
                {"$unset": {"s": True}},
                {"$v": 1, "$set": {"arr.2": rng.randrange(9), "n": 1}},
                {"$set": {"sub.y.1": 5}, "$unset": {"arr": True}},
            ])
        diffs: list[dict[str, Any]] = [
            {"u": {"a": rng.randrange(100)}},
            {"i": {"n": rng.randrange(9)}},
            {"d": {"s": False}},
            {"u": {"a": 1}, "ssub": {"u": {"x": rng.randrange(9)}}},
            {"sarr": {"a": True, "u0": rng.randrange(9)}},
            {"sarr": {"a": True, "l": 1}},
            {"ssub": {"sy": {"a": True, "u3": 7}}},
        ]
        return {"$v": 2, "diff": rng.choice(diffs)}

    def _emit(self, op: str, ns: str, o: Any, **extra: Any) -> None:
        ui = self.colls.get(ns)
        self.out.append(self.op.entry(op, ns, o, ui=ui, **extra))

    # -- entry kinds --

    def create(self) -> None:
        db = self.rng.choice(self.dbs)
        name = f"c{self.rng.randrange(6)}"
        ns = f"{db}.{name}"
        if ns in self.colls:
            return
        ui = self._new_uuid()
        self.colls[ns], self.ids[ns], self.indexes[ns] = ui, [], set()
        self.out.append(self.op.c(db, {"create": name, "idIndex": {
            "v": 2, "key": {"_id": 1}, "name": "_id_"}}, ui=ui))

    def drop(self) -> None:
        if len(self.colls) < 2:
            return
        ns = self._coll()
        db, name = ns.split(".", 1)
        self.indexes.pop(ns)
        self.out.append(self.op.c(db, {"drop": name}, ui=self.colls.pop(ns),
                                  o2={"numRecords": len(self.ids.pop(ns))}))

    def rename(self) -> None:
        if not self.colls:
            return
        ns = self._coll()
        db, _ = ns.split(".", 1)
        dst_db = self.rng.choice(self.dbs)
        dst = f"{dst_db}.r{self.rng.randrange(6)}"
        if dst == ns:
            return
        o: dict[str, Any] = {"renameCollection": ns, "to": dst, "stayTemp": False}
        if dst in self.colls:
            o["dropTarget"] = self.colls.pop(dst)
            self.ids.pop(dst)
            self.indexes.pop(dst)
        self.out.append(self.op.c(db, o, ui=self.colls[ns]))
        self.colls[dst], self.ids[dst] = self.colls.pop(ns), self.ids.pop(ns)
        self.indexes[dst] = self.indexes.pop(ns)

    def index(self) -> None:
        if not self.colls:
            return
        ns = self._coll()
        db, name = ns.split(".", 1)
        field = self.rng.choice("asz")
        ui, have = self.colls[ns], self.indexes[ns]
        r = self.rng.random()
        if r < 0.6:
            name_ = f"{field}_{'1' if r < 0.4 else '-1'}"
            if name_ in have:
                return
            have.add(name_)
            spec = {"v": 2, "key": {field: 1 if r < 0.4 else -1}, "name": name_}
            if r < 0.4:
                self.out.append(self.op.c(db, {"createIndexes": name, **spec}, ui=ui))
                return
            build = uuid(10_000 + self.rng.randrange(1000))
            self.out.append(self.op.c(db, {"startIndexBuild": name, "indexBuildUUID": build,
                                           "indexes": [spec]}, ui=ui))
            verb = "commitIndexBuild" if self.rng.random() < 0.7 else "abortIndexBuild"
            if verb == "abortIndexBuild":
                have.discard(name_)
            self.out.append(self.op.c(db, {verb: name, "indexBuildUUID": build,
                                           "indexes": [spec]}, ui=ui))
            return
        if not have:
            return
        name_ = self.rng.choice(sorted(have))
        if r < 0.8:
            self.out.append(self.op.c(db, {"collMod": name, "index": {
                "name": name_, "expireAfterSeconds": self.rng.randrange(99)}}, ui=ui))
        else:
            have.discard(name_)
            self.out.append(self.op.c(db, {"dropIndexes": name, "index": name_}, ui=ui))

    def _txn_ops(self, n: int) -> list[dict[str, Any]]:
        ops = []
        for _ in range(n):
            crud = self._crud()
            if crud is None:
                continue
            op, ns, o, extra = crud
            ops.append({"op": op, "ns": ns, "ui": self.colls[ns], "o": o, **extra})
        return ops

    def _session(self) -> dict[str, Any]:
        self.next_txn += 1
        return {"lsid": {"id": uuid(50_000 + self.next_txn)}, "txnNumber": Int64(1)}

    def transaction(self) -> None:
        session = self._session()
        kind = self.rng.random()
        if kind < 0.4:
            ops = self._txn_ops(self.rng.randrange(1, 5))
            if ops:
                self.out.append(self.op.c("admin", {"applyOps": ops}, **session))
            return
        parts = [self._txn_ops(self.rng.randrange(1, 4)) for _ in range(self.rng.randrange(1, 4))]
        parts = [p for p in parts if p]
        if not parts:
            return
        prepared = kind > 0.75
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            o: dict[str, Any] = {"applyOps": p}
            if not last:
                o["partialTxn"] = True
            elif prepared:
                o["prepare"] = True
            else:
                o["count"] = Int64(sum(map(len, parts)))
            self.out.append(self.op.c("admin", o, **session))
            if self.rng.random() < 0.3:
                self.crud()  # interleaved writes of other sessions
        if prepared:
            verb = "commitTransaction" if self.rng.random() < 0.7 else "abortTransaction"
            o = {verb: 1}
            if verb == "commitTransaction":
                o["commitTimestamp"] = self.op.ts()
            self.out.append(self.op.c("admin", o, **session))

    def crud(self) -> None:
        crud = self._crud()
        if crud is not None:
            op, ns, o, extra = crud
            self._emit(op, ns, o, **extra)

    def generate(self, n: int) -> list[bytes]:
        kinds = [(self.crud, 80), (self.create, 3), (self.drop, 0.6), (self.rename, 0.8),
                 (self.index, 3), (self.transaction, 6),
                 (lambda: self.out.append(self.op.n()), 2)]
        funcs, weights = zip(*kinds)
        for _ in range(3):
            self.create()
        while len(self.out) < n:
            self.rng.choices(funcs, weights)[0]()
        return self.out


def generate(seed: int, n: int, legacy: bool = False) -> list[bytes]:
    """``n`` (or a few more) raw oplog entries with increasing timestamps."""
    return OplogGenerator(seed, legacy=legacy).generate(n)
