"""File names of collections, escaped and hashed as mongodump does."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backupflows.mongodump import DumpFormatError
from backupflows.mongodump.names import (
    check_db_name,
    collection_file_stem,
    escape_collection_name,
    is_truncated_stem,
    unescape_collection_name,
)


@pytest.mark.parametrize("name, escaped", [
    ("plain_Name-1.x~", "plain_Name-1.x~"),
    ("keep$&+:=@", "keep$&+:=@"),          # reserved characters PathEscape keeps
    ("a/b", "a%2Fb"), ("semi;colon", "semi%3Bcolon"), ("q?,", "q%3F%2C"),
    ("sp ace", "sp%20ace"), ("100%", "100%25"), ("!*'()", "%21%2A%27%28%29"),
    ('"<>\\#', "%22%3C%3E%5C%23"), ("é", "%C3%A9"), ("中", "%E4%B8%AD"),
    ("system.buckets.x", "system.buckets.x"),
])
def test_escape_like_go_url_path_escape(name: str, escaped: str) -> None:
    assert escape_collection_name(name) == escaped
    assert unescape_collection_name(escaped) == name


@given(st.text(min_size=1))
def test_escape_round_trips_and_is_a_safe_file_name(name: str) -> None:
    escaped = escape_collection_name(name)
    assert "/" not in escaped and "\x00" not in escaped and escaped.isascii()
    assert unescape_collection_name(escaped) == name


@pytest.mark.parametrize("bad", ["%zz", "abc%4", "%", "%C3"])
def test_malformed_escapes_are_errors(bad: str) -> None:
    with pytest.raises(DumpFormatError, match="file name"):
        unescape_collection_name(bad)


def test_short_names_are_not_hashed_up_to_238_bytes() -> None:
    assert collection_file_stem("a" * 238) == "a" * 238
    assert collection_file_stem("/" * 79 + "a") == "%2F" * 79 + "a"  # 238 once escaped


def test_long_names_are_cut_to_208_bytes_plus_24_and_sha1() -> None:
    name = "c" * 100 + "/" * 100
    digest = base64.urlsafe_b64encode(hashlib.sha1(name.encode()).digest()).decode()
    stem = collection_file_stem(name)
    assert stem == ("c" * 100 + "%2F" * 36)[:208] + "%24" + digest.rstrip("=")
    assert len(stem) == 238 and is_truncated_stem(stem)
    assert len(stem + ".metadata.json.gz") <= 255
    assert collection_file_stem(name + "x") != stem


@pytest.mark.parametrize("db", ["", ".", "..", "a/b", "a\\b", "a\x00"])
def test_database_names_that_cannot_be_directories_are_refused(db: str) -> None:
    with pytest.raises(DumpFormatError, match="invalid database name"):
        check_db_name(db)
