"""Keep passwords and tokens out of every output and log line.

``redact_uri`` is for a URI we know is one (a deployment's, the catalog's, the
broker's); ``redact_text`` scrubs free text (log messages, tracebacks, error
strings) of any URI password and ``password=...``/``token: ...`` pairs.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

MASK = "***"

# query options whose value is a secret (mongodb, redis, S3 style); compared lower-case
_SECRET_OPTIONS = ("password", "passwd", "pwd", "secret", "token", "authmechanismproperties",
                   "access_key", "accesskey", "secret_key", "secretkey", "api_key", "apikey")

_URI_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*?)@"
)
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b[\w.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
    r"(?:\"|')?)(?P<sep>\s*[=:]\s*(?:\"|')?)(?P<value>[^\s&,;\"'}]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")


def redact_uri(uri: str) -> str:
    """``mongodb://u:secret@h/?authMechanismProperties=...`` -> ``mongodb://u:***@h/?...=***``."""
    text = _URI_USERINFO.sub(_mask_userinfo, uri)
    head, sep, query = text.partition("?")
    if not sep:
        return text
    pairs = parse_qsl(query, keep_blank_values=True)
    cleaned = [(k, MASK if _is_secret(k) else v) for k, v in pairs]
    return head + "?" + urlencode(cleaned, safe=":,/*")


def redact_text(text: str) -> str:
    """Mask URI passwords, ``key=value`` secrets and bearer tokens in free text."""
    if not text:
        return text
    text = _URI_USERINFO.sub(_mask_userinfo, text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)


def _is_secret(option: str) -> bool:
    lowered = option.lower()
    return any(word in lowered for word in _SECRET_OPTIONS)


def _mask_userinfo(match: re.Match[str]) -> str:
    if not match.group("pw"):
        return match.group(0)
    return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
