"""Oplog positions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Optime:
    """An oplog position: ``ts`` packed as seconds << 32 | increment, term ``t``."""

    ts: int
    t: int

    @property
    def seconds(self) -> int:
        return self.ts >> 32

    @property
    def increment(self) -> int:
        return self.ts & 0xFFFFFFFF

    def __str__(self) -> str:
        return f"Timestamp({self.seconds}, {self.increment}) t={self.t}"

    @classmethod
    def of(cls, seconds: int, increment: int, t: int = -1) -> Optime:
        return cls((seconds << 32) | increment, t)
