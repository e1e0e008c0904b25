"""Errors the sandbox answers with, shaped like MongoDB's command errors."""

from __future__ import annotations

# A few of the server's error codes (src/mongo/base/error_codes.yml).
BAD_VALUE = 2
FAILED_TO_PARSE = 9
TYPE_MISMATCH = 14
NAMESPACE_NOT_FOUND = 26
INDEX_NOT_FOUND = 27
PATH_NOT_VIABLE = 28
CONFLICTING_UPDATE_OPERATORS = 40
CURSOR_NOT_FOUND = 43
NAMESPACE_EXISTS = 48
COMMAND_NOT_FOUND = 59
IMMUTABLE_FIELD = 66
INVALID_OPTIONS = 72
INVALID_NAMESPACE = 73
INDEX_OPTIONS_CONFLICT = 85
INDEX_KEY_SPECS_CONFLICT = 86
NOT_WRITABLE_PRIMARY = 10107
SHUTDOWN_IN_PROGRESS = 91
NO_SUCH_TRANSACTION = 251
DUPLICATE_KEY = 11000
LOCATION_NOT_SUPPORTED = 40415  # unrecognised field (IDL)

CODE_NAMES = {
    BAD_VALUE: "BadValue",
    FAILED_TO_PARSE: "FailedToParse",
    TYPE_MISMATCH: "TypeMismatch",
    NAMESPACE_NOT_FOUND: "NamespaceNotFound",
    INDEX_NOT_FOUND: "IndexNotFound",
    PATH_NOT_VIABLE: "PathNotViable",
    CONFLICTING_UPDATE_OPERATORS: "ConflictingUpdateOperators",
    CURSOR_NOT_FOUND: "CursorNotFound",
    NAMESPACE_EXISTS: "NamespaceExists",
    COMMAND_NOT_FOUND: "CommandNotFound",
    IMMUTABLE_FIELD: "ImmutableField",
    INVALID_OPTIONS: "InvalidOptions",
    INVALID_NAMESPACE: "InvalidNamespace",
    INDEX_OPTIONS_CONFLICT: "IndexOptionsConflict",
    INDEX_KEY_SPECS_CONFLICT: "IndexKeySpecsConflict",
    NOT_WRITABLE_PRIMARY: "NotWritablePrimary",
    SHUTDOWN_IN_PROGRESS: "ShutdownInProgress",
    NO_SUCH_TRANSACTION: "NoSuchTransaction",
    DUPLICATE_KEY: "DuplicateKey",
    LOCATION_NOT_SUPPORTED: "Location40415",
}


class CommandError(Exception):
    """A command failed; the server answers ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, message: str, code_name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.code_name = code_name or CODE_NAMES.get(code, f"Location{code}")

    def to_reply(self) -> dict:
        return {"ok": 0.0, "errmsg": self.message, "code": self.code,
                "codeName": self.code_name}
