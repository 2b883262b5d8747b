"""The membership schema fits `segments.membership` records; `segstream schema` prints JSON."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.membership import (
    SegmentRecords,
    change_id,
    email_update_record,
    iso_ms,
    membership_record,
    parse_membership,
)
from streams.schemas import SCHEMA_NAMES
from tests.schemas.helpers import validator

REASONS = ["event", "time", "backfill", "segment_deleted", "customer_deleted"]
ROOT = Path(__file__).resolve().parents[2]


@given(cause=st.text(), segment_id=st.text(), version=st.integers(1, 2**31),
       customer_id=st.text(), kind=st.sampled_from(["segment.member_added",
                                                    "segment.member_removed"]))
def test_change_ids_keep_their_formula(cause: str, segment_id: str, version: int,
                                       customer_id: str, kind: str) -> None:
    """Consumers drop duplicates by these ids across upgrades: the formula is fixed."""
    text = "\x1f".join((cause, segment_id, str(version), customer_id, kind))
    expected = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    assert change_id(cause, segment_id, version, customer_id, kind) == expected
    assert change_id("ev-1", "vip", 2, "c-1", "segment.member_added") == (
        "2fe9e161515a39e129f2226b614fc824")


@settings(max_examples=200, deadline=None)
@given(added=st.booleans(), segment_id=st.text(min_size=1, max_size=20),
       version=st.integers(1, 2**31), customer_id=st.text(min_size=1, max_size=20),
       email=st.none() | st.emails(), changed_ms=st.integers(0, 253402300799999),
       reason=st.sampled_from(REASONS),
       cause_event_id=st.none() | st.text(min_size=1, max_size=128))
def test_membership_records_validate(added: bool, segment_id: str, version: int,
                                     customer_id: str, email: str | None, changed_ms: int,
                                     reason: str, cause_event_id: str | None) -> None:
    record = orjson.loads(membership_record(
        added=added, segment_id=segment_id, version=version, customer_id=customer_id,
        email=email, changed_at=iso_ms(changed_ms), reason=reason,
        cause=cause_event_id or reason, cause_event_id=cause_event_id))
    errors = [e.message for e in validator("membership").iter_errors(record)]
    assert not errors, (errors, record)


@settings(max_examples=100, deadline=None)
@given(segment_id=st.text(min_size=1, max_size=20), version=st.integers(1, 2**31),
       customer_id=st.text(min_size=1, max_size=20), email=st.none() | st.emails(),
       previous=st.none() | st.emails(), changed_ms=st.integers(0, 253402300799999),
       cause_event_id=st.text(min_size=1, max_size=128))
def test_email_update_records_validate(segment_id: str, version: int, customer_id: str,
                                       email: str | None, previous: str | None,
                                       changed_ms: int, cause_event_id: str) -> None:
    raw = email_update_record(segment_id=segment_id, version=version, customer_id=customer_id,
                              email=email, previous_email=previous,
                              changed_at=iso_ms(changed_ms), cause_event_id=cause_event_id)
    record = orjson.loads(raw)
    errors = [e.message for e in validator("membership").iter_errors(record)]
    assert not errors, (errors, record)
    assert record["event_id"] == change_id(cause_event_id, segment_id, version, customer_id,
                                           "segment.member_updated")
    parsed = parse_membership(raw)
    assert (parsed.kind, parsed.member, parsed.previous_email) == (
        "segment.member_updated", True, (previous and previous.strip()) or None)


def _record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(membership_record(
        added=True, segment_id="vip", version=3, customer_id="c-1042",
        email="a@example.com", changed_at="2026-11-28T17:32:00.120Z", reason="event",
        cause="e-1", cause_event_id="e-1"))
    record.update(change)
    return {k: v for k, v in record.items() if v is not ...}


def test_membership_schema_rejects_what_is_not_a_record() -> None:
    check = validator("membership")
    assert check.is_valid(_record())
    assert check.is_valid(_record(cause_event_id=..., email=None))
    for bad in (dict(type="segment.member_moved"), dict(reason="manual"),
                dict(segment_version=0), dict(segment_version="3"), dict(email=...),
                dict(changed_at="2026-11-28T17:32:00.120"), dict(customer_id=""),
                dict(event_id=...), dict(cause_event_id=None)):
        assert not check.is_valid(_record(**bad)), bad


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "schema", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_cli_prints_every_schema_as_json() -> None:
    result = _cli()
    assert result.returncode == 0, result.stderr
    schemas = json.loads(result.stdout)
    assert tuple(schemas) == SCHEMA_NAMES
    assert schemas["order.placed"]["$id"] == "urn:segstream:schema:order.placed"


def test_cli_prints_one_schema_and_lists_names() -> None:
    one = _cli("membership")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["title"] == "segment membership change"
    listed = _cli("--list")
    assert listed.stdout.split() == list(SCHEMA_NAMES)
    unknown = _cli("order.shipped")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "--list" in unknown.stderr


def test_asyncapi_refers_to_the_shipped_schemas() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {"customers", "orders", "segment-membership", "segments.dlq"}
    refs = []
    for message in doc["components"]["messages"].values():
        payload = message["payload"]
        if "schema" in payload:
            refs.append(payload["schema"]["$ref"])
    assert refs
    for ref in refs:
        target = (ROOT / "docs" / ref).resolve()
        assert target.is_file(), ref
        assert target.stem in SCHEMA_NAMES


@settings(max_examples=300, deadline=None)
@given(added=st.booleans(), segment_id=st.text(min_size=1, max_size=20),
       version=st.integers(1, 2**31), customer_id=st.text(min_size=1, max_size=20),
       email=st.none() | st.text(max_size=30), changed_ms=st.integers(0, 253402300799999),
       reason=st.sampled_from(REASONS),
       cause_event_id=st.none() | st.text(min_size=1, max_size=128))
def test_the_engines_prepared_records_are_byte_identical(
    added: bool, segment_id: str, version: int, customer_id: str, email: str | None,
    changed_ms: int, reason: str, cause_event_id: str | None,
) -> None:
    """The engine builds records from per-segment parts; same bytes, same ids as the reference."""
    changed_at = iso_ms(changed_ms)
    prepared = SegmentRecords(segment_id, version, changed_at, reason).record(
        added, SegmentRecords.cause_prefix(cause_event_id),
        SegmentRecords.customer_suffixes(customer_id), SegmentRecords.who(customer_id, email),
        SegmentRecords.cause_tail(cause_event_id))
    assert prepared == membership_record(
        added=added, segment_id=segment_id, version=version, customer_id=customer_id,
        email=email, changed_at=changed_at, reason=reason, cause=cause_event_id or reason,
        cause_event_id=cause_event_id)
