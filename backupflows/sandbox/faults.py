"""Fault injection: MongoDB's ``failCommand`` fail point, plus sandbox extras.

The admin command has the shape of the server's own test command, so a test
runs unchanged against a real ``mongod --setParameter enableTestCommands=1``::

    {configureFailPoint: "failCommand",
     mode: {times: N} | {skip: N} | "alwaysOn" | "off",
     data: {failCommands: ["find", ...], errorCode: 91, closeConnection: false,
            blockConnection: false, blockTimeMS: 0, errorLabels: [...],
            appName: "..."}}

Sandbox-only admin commands (documented in commands_admin.py):
``sandboxCloseConnections``, ``sandboxSetLatency {ms}``,
``sandboxTruncateOplog {before: Timestamp}``. ``SandboxServer`` exposes the
same as methods (``fail_commands``, ``close_all_connections``,
``set_latency``, ``truncate_oplog_before``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from backupflows.sandbox.errors import BAD_VALUE, CommandError

RETRYABLE_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150,
                   134}
_NEVER_FAILED = {"configureFailPoint", "sandboxCloseConnections", "sandboxSetLatency",
                 "sandboxTruncateOplog"}
_RETRYABLE_WRITES = {"insert", "update", "delete", "findAndModify", "commitTransaction",
                     "abortTransaction"}


@dataclass
class Action:
    """What the fail point does to one command."""

    error_code: int = 0
    close_connection: bool = False
    block_ms: float = 0.0
    labels: list[str] | None = None


class FaultInjector:
    """State of the ``failCommand`` fail point and the added latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mode: Any = "off"
        self.data: dict = {}
        self.times_entered = 0
        self.latency_ms = 0.0

    def configure(self, mode: Any, data: dict | None) -> int:
        """Set the fail point; returns how often it fired before (``count``)."""
        if mode not in ("off", "alwaysOn") and not (
                isinstance(mode, dict) and len(mode) == 1
                and set(mode) <= {"times", "skip", "activationProbability"}):
            raise CommandError(BAD_VALUE, f"invalid mode for failCommand: {mode!r}")
        data = dict(data or {})
        names = data.get("failCommands")
        if mode != "off" and names is not None and not isinstance(names, list):
            raise CommandError(BAD_VALUE, "'failCommands' must be an array of command names")
        with self._lock:
            previous = self.times_entered
            self.mode = dict(mode) if isinstance(mode, dict) else mode
            self.data = data
            self.times_entered = 0
        return previous

    def _fires(self) -> bool:
        mode = self.mode
        if mode == "alwaysOn":
            return True
        if isinstance(mode, dict):
            if "skip" in mode:
                if mode["skip"] > 0:
                    mode["skip"] -= 1
                    return False
                self.mode = "alwaysOn"
                return True
            if "times" in mode:
                if mode["times"] <= 0:
                    self.mode = "off"
                    return False
                mode["times"] -= 1
                if mode["times"] <= 0:
                    self.mode = "off"
                return True
        return False

    def _applies(self, name: str, app_name: str) -> bool:
        names = self.data.get("failCommands")
        if name in _NEVER_FAILED or (names is not None and name not in names):
            return False
        wanted_app = self.data.get("appName")
        return not (wanted_app and wanted_app != app_name)

    def check(self, name: str, app_name: str = "", cmd: dict | None = None) -> Action | None:
        """The action to take for command ``name``, if the fail point fires."""
        if self.mode == "off":
            return None
        with self._lock:
            if self.mode == "off" or not self._applies(name, app_name) or not self._fires():
                return None
            self.times_entered += 1
            data = self.data
        block = float(data.get("blockTimeMS", 0)) if data.get("blockConnection") else 0.0
        labels = data.get("errorLabels")
        code = int(data.get("errorCode", 0) or 0)
        if labels is None and code in RETRYABLE_CODES and name in _RETRYABLE_WRITES \
                and cmd is not None and "txnNumber" in cmd:
            labels = ["RetryableWriteError"]
        return Action(code, bool(data.get("closeConnection")), block, labels)
