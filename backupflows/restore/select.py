"""Which namespaces a restore delivers, and under which names.

Patterns follow ``mongorestore`` (mongo-tools ``mongorestore/ns/ns.go``):

- ``--ns-include`` / ``--ns-exclude``: ``db.coll`` with ``*`` wildcards
  (``db.*``, ``*.users``, ``dept*.bar``); a ``*`` matches any characters,
  dots included; ``\\*`` is a literal asterisk and ``\\\\`` a backslash; ``$``
  is not allowed. A bare ``db`` (no dot, no wildcard) means every collection
  of ``db`` (``db.*``), as the backup filters read it. No include means
  everything. Exclude wins. Patterns are matched against the SOURCE names
  (before renaming), as mongorestore does.
- ``--ns-from`` / ``--ns-to`` (pairs, in order): either ``*`` wildcards (the
  same number on both sides, matched in order: ``shop.*`` -> ``shop_copy.*``)
  or ``$name$`` variables (``$db$.orders`` -> ``archive.$db$_orders``); when
  several pairs match, the LAST one given wins (mongo-tools' precedence).
- users and roles (``admin.system.users``, ``admin.system.roles``) are left
  out unless ``include_users``; ``system.profile`` is never restored.

A time-series collection is selected and renamed by its own name; its
buckets (``system.buckets.<name>``) follow it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backupflows.errors import RestoreError

USERS_AND_ROLES = ("admin.system.users", "admin.system.roles")
_WILDCARD = re.compile(r"(?s)^(|.*[^\\])\*(.*)$")
_VARIABLE = re.compile(r"(?s)^\$([^$]*)\$(.*)$")
_SPECIAL = set("*[](){}\\?$^+!.|")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "\\*":
            out.append(text[i + 1])
            i += 2
            continue
        if c != "\\":
            out.append(c)
        i += 1
    return "".join(out)


def _wildcards_to_variables(text: str) -> str:
    """``pre*.*`` -> ``pre$1$.$2$`` (unescaped asterisks only, numbered left to right)."""
    count = text.count("*") - text.count("\\*")
    n = count
    while (m := _WILDCARD.match(text)) is not None:
        text = f"{m.group(1)}${n}${m.group(2)}"
        n -= 1
    return _unescape(text)


def _compile(source: str, target: str) -> tuple[re.Pattern[str], list[Any]]:
    """A regex for ``source`` and the replacement parts (str or group number) for ``target``."""
    variables: dict[str, int] = {}
    pattern = ""
    rest = source
    while rest:
        m = _VARIABLE.match(rest)
        if m is not None:
            if m.group(1) in variables:
                raise ValueError(f"variable {m.group(1)!r} used more than once")
            variables[m.group(1)] = len(variables) + 1
            pattern += "(.*?)"
            rest = m.group(2)
            continue
        c, rest = rest[0], rest[1:]
        if c == "$":
            raise ValueError("extraneous '$'")
        pattern += ("\\" + c) if c in _SPECIAL else c
    parts: list[Any] = []
    rest = target
    while rest:
        m = _VARIABLE.match(rest)
        if m is not None:
            if m.group(1) not in variables:
                raise ValueError(f"unknown variable {m.group(1)!r}")
            parts.append(variables[m.group(1)])
            rest = m.group(2)
            continue
        c, rest = rest[0], rest[1:]
        if c == "$":
            raise ValueError("extraneous '$'")
        parts.append(c)
    return re.compile(f"(?s)^{pattern}$"), parts


class Matcher:
    """Namespace patterns (``--ns-include`` / ``--ns-exclude``)."""

    def __init__(self, patterns: Sequence[str], what: str = "pattern") -> None:
        self.patterns = list(patterns)
        self._res: list[re.Pattern[str]] = []
        for p in self.patterns:
            if not isinstance(p, str) or not p:
                raise RestoreError(f"bad {what} {p!r}: expected db, db.collection or a wildcard")
            if "$" in p:
                raise RestoreError(f"bad {what} {p!r}: '$' is not allowed in include/exclude "
                                   "patterns")
            if "." not in p and "*" not in p:
                p = p + ".*"  # a database: all its collections
            self._res.append(_compile(_wildcards_to_variables(p), "")[0])

    def has(self, ns: str) -> bool:
        return any(r.match(ns) for r in self._res)


class Renamer:
    """``--ns-from`` / ``--ns-to`` pairs (see the module docstring)."""

    def __init__(self, sources: Sequence[str], targets: Sequence[str]) -> None:
        if len(sources) != len(targets):
            raise RestoreError(f"--ns-from and --ns-to come in pairs: {len(sources)} from, "
                               f"{len(targets)} to")
        self._rules: list[tuple[re.Pattern[str], list[Any]]] = []
        for src, dst in reversed(list(zip(sources, targets))):  # the last pair wins
            self._rules.append(_rule(src, dst))

    def get(self, ns: str) -> str:
        for regex, parts in self._rules:
            m = regex.match(ns)
            if m is not None:
                return "".join(m.group(p) if isinstance(p, int) else p for p in parts)
        return ns


def _rule(src: str, dst: str) -> tuple[re.Pattern[str], list[Any]]:
    if not src or not dst:
        raise RestoreError(f"bad renaming {src!r} -> {dst!r}: empty namespace")
    if "$" in src:
        if src.count("$") % 2 or dst.count("$") % 2:
            raise RestoreError(f"bad renaming {src!r} -> {dst!r}: odd number of '$'")
    else:
        stars = (src.count("*") - src.count("\\*"), dst.count("*") - dst.count("\\*"))
        if stars[0] != stars[1]:
            raise RestoreError(f"bad renaming {src!r} -> {dst!r}: {stars[0]} wildcard(s) in "
                               f"--ns-from, {stars[1]} in --ns-to")
        src, dst = _wildcards_to_variables(src), _wildcards_to_variables(dst)
    try:
        return _compile(src, dst)
    except ValueError as exc:
        raise RestoreError(f"bad renaming {src!r} -> {dst!r}: {exc}") from None


@dataclass
class Selection:
    """What a restore delivers (the ``selection`` of the task contract)."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ns_from: list[str] = field(default_factory=list)
    ns_to: list[str] = field(default_factory=list)
    include_users: bool = False

    def __post_init__(self) -> None:
        self._include = Matcher(self.include, "--ns-include")
        self._exclude = Matcher(self.exclude, "--ns-exclude")
        self._renamer = Renamer(self.ns_from, self.ns_to)

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Selection:
        value = dict(value or {})
        unknown = set(value) - {"include", "exclude", "ns_from", "ns_to", "include_users"}
        if unknown:
            raise RestoreError(f"unknown selection key(s): {', '.join(sorted(unknown))}")
        lists = {k: _str_list(value.get(k), k) for k in ("include", "exclude", "ns_from",
                                                           "ns_to")}
        return cls(**lists, include_users=bool(value.get("include_users", False)))

    def to_json(self) -> dict[str, Any]:
        return {"include": self.include, "exclude": self.exclude, "ns_from": self.ns_from,
                "ns_to": self.ns_to, "include_users": self.include_users}

    @property
    def is_everything(self) -> bool:
        """True when no namespace is left out (users and roles aside)."""
        return not self.include and not self.exclude

    def matches_ns(self, ns: str) -> bool:
        """Whether source namespace ``ns`` is restored (time-series buckets
        follow their collection)."""
        db, _, coll = ns.partition(".")
        if coll.startswith("system.buckets."):
            ns = f"{db}.{coll[len('system.buckets.'):]}"
        if ns in USERS_AND_ROLES and not self.include_users:
            return False
        if coll == "system.profile":
            return False
        if self.include and not self._include.has(ns):
            return False
        return not self._exclude.has(ns)

    def rename(self, db: str, name: str) -> tuple[str, str]:
        """The target ``(db, collection)`` of source ``db.name``."""
        target = self._renamer.get(f"{db}.{name}")
        new_db, dot, new_name = target.partition(".")
        if not dot or not new_db or not new_name:
            raise RestoreError(f"renaming {db}.{name} gives {target!r}: not db.collection")
        return new_db, new_name


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise RestoreError(f"selection {key!r} must be a list of strings")
    return list(value)
