"""Collection metadata: ``<coll>.metadata.json`` as mongodump 100.x writes it.

mongodump marshals this Go struct (``mongodump/metadata_dump.go``) with
``bson.MarshalExtJSON(meta, true, false)``::

    Options        bson.M   `bson:"options,omitempty"`
    Indexes        []bson.D `bson:"indexes"`
    UUID           string   `bson:"uuid,omitempty"`
    CollectionName string   `bson:"collectionName"`
    Type           string   `bson:"type,omitempty"`

so the keys come in that order: ``options`` only when non-empty, ``indexes``
always (``[]`` for views), ``uuid`` (32 lowercase hex digits, absent for
views and time-series collections), ``collectionName``, ``type``
(``collection``, ``view`` or ``timeseries``). Go keeps ``options`` in a map,
so mongodump's order of option keys is random; we keep the server's order.

Older writers are read too: mongodump 3.x/4.0 wrote relaxed legacy JSON with
``options`` first and ``ns`` in each index spec, no ``collectionName`` and no
``type`` (the name then comes from the file name and the type from the
options), and early 100.x versions omitted ``type``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bson import json_util
from bson.binary import UuidRepresentation
from bson.codec_options import DatetimeConversion
from bson.json_util import JSONOptions

from backupflows.mongodump import extjson
from backupflows.mongodump.errors import DumpFormatError

COLLECTION, VIEW, TIMESERIES = "collection", "view", "timeseries"
BUCKETS_PREFIX = "system.buckets."
_TYPES = (COLLECTION, VIEW, TIMESERIES)
_UUID_HEX = re.compile(r"[0-9a-fA-F]{32}")
_READ_OPTIONS = JSONOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
)


@dataclass
class CollectionMeta:
    """What a dump records about one collection besides its documents.

    ``options`` and every index spec are plain dicts in their original field
    order; numbers keep their BSON type (``int`` -> int32 when it fits,
    ``bson.Int64``, ``float``).
    """

    db: str
    name: str
    type: str = COLLECTION
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: bytes | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise DumpFormatError(f"{self.db}.{self.name}: unknown collection type {self.type!r}")
        if self.uuid is not None and len(self.uuid) != 16:
            raise DumpFormatError(f"{self.db}.{self.name}: a collection UUID has 16 bytes")

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def data_name(self) -> str:
        """The collection that holds the documents (the buckets of a time series)."""
        return BUCKETS_PREFIX + self.name if self.type == TIMESERIES else self.name

    @property
    def has_data(self) -> bool:
        """Views have metadata only; mongodump writes no ``.bson`` for them."""
        return self.type != VIEW

    def to_json(self) -> str:
        """The metadata file's text, byte for byte as mongodump 100.x writes it."""
        doc: dict[str, Any] = {}
        if self.options:
            doc["options"] = self.options
        doc["indexes"] = self.indexes
        if self.uuid is not None:
            doc["uuid"] = self.uuid.hex()
        doc["collectionName"] = self.name
        doc["type"] = self.type
        return extjson.dumps(doc)

    @classmethod
    def from_json(cls, text: str | bytes, db: str, name: str | None = None,
                  source: str = "metadata") -> CollectionMeta:
        """Parse a metadata file of any mongodump version.

        ``name`` is the collection name taken from the file name; the
        ``collectionName`` field wins when present. ``source`` names the file
        in error messages.
        """
        doc = _parse(text, source)
        coll = doc.get("collectionName", name)
        if not isinstance(coll, str) or not coll:
            raise DumpFormatError(f"{source}: no collection name in the metadata or file name")
        options = _expect(_or(doc.get("options"), {}), dict, "options", source)
        indexes = _expect(_or(doc.get("indexes"), []), list, "indexes", source)
        for spec in indexes:
            _expect(spec, dict, "an index spec", source)
        return cls(db=db, name=coll, type=_type_of(doc, options, source),
                   options=options, indexes=indexes, uuid=_uuid_of(doc, source))


def _parse(text: str | bytes, source: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DumpFormatError(f"{source}: not UTF-8 at offset {exc.start}") from exc
    try:
        doc = json_util.loads(text, json_options=_READ_OPTIONS)
    except json.JSONDecodeError as exc:
        raise DumpFormatError(
            f"{source}: bad JSON at offset {exc.pos} (line {exc.lineno} column {exc.colno}):"
            f" {exc.msg}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise DumpFormatError(f"{source}: bad Extended JSON: {exc}") from exc
    return _expect(doc, dict, "the metadata", source)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _expect(value: Any, kind: type, what: str, source: str) -> Any:
    if not isinstance(value, kind):
        raise DumpFormatError(f"{source}: {what} must be a JSON "
                              f"{'object' if kind is dict else 'array'}")
    return value


def _type_of(doc: dict[str, Any], options: dict[str, Any], source: str) -> str:
    kind = doc.get("type")
    if kind is None or kind == "":
        if "viewOn" in options:
            return VIEW
        return TIMESERIES if "timeseries" in options else COLLECTION
    if kind not in _TYPES:
        raise DumpFormatError(f"{source}: unknown collection type {kind!r}")
    return str(kind)


def _uuid_of(doc: dict[str, Any], source: str) -> bytes | None:
    value = doc.get("uuid")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _UUID_HEX.fullmatch(value):
        raise DumpFormatError(f"{source}: uuid must be 32 hex digits, got {value!r}")
    return bytes.fromhex(value)
