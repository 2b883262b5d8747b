"""The reference docs in docs/ follow the code: their generated sections are what the schemas,
the field catalog and the API's description give today, and their examples are valid."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from segments.catalog import FIELDS, PROPERTY_FIELD
from segments.events import EVENT_TYPES, decode_event
from segments.events import event_type as event_type_of
from segments.membership import parse_membership
from streams.local import docs
from streams.schemas import load_schema


def test_the_generated_sections_are_up_to_date() -> None:
    assert docs.stale() == [], "run: python -m streams.local.docs"


def test_a_section_edited_by_hand_is_found(tmp_path: Path) -> None:
    for name in docs.SECTIONS:
        (tmp_path / name).write_text((docs.DOCS_DIR / name).read_text())
    segments = tmp_path / "segments.md"
    segments.write_text(segments.read_text().replace("| `email_domain` |", "| `domain` |"))
    assert docs.stale(tmp_path) == ["segments.md"]


def test_a_doc_without_a_section_is_refused() -> None:
    with pytest.raises(docs.DocsError, match="lacks the generated sections"):
        docs.render("api.md", "# HTTP API\n")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_event_example_is_valid_and_applies(event_type: str) -> None:
    example = docs.event_example(event_type)
    Draft202012Validator(load_schema(event_type)).validate(example)
    Draft202012Validator(load_schema("event")).validate(example)
    assert event_type_of(decode_event(orjson.dumps(example))) == event_type


@pytest.mark.parametrize("kind", sorted(docs.MEMBERSHIP_EXAMPLES))
def test_each_membership_example_is_valid(kind: str) -> None:
    example = docs.MEMBERSHIP_EXAMPLES[kind]
    Draft202012Validator(load_schema("membership")).validate(example)
    assert parse_membership(orjson.dumps(example)).kind == f"segment.member_{kind}"


def test_every_operator_of_the_catalog_has_its_value_shape_documented() -> None:
    operators = {op for spec in (*FIELDS, PROPERTY_FIELD) for op in spec.operators}
    assert operators == set(docs.OPERATOR_VALUES)


def test_the_docs_cite_no_contract_sections() -> None:
    """Users of the repository do not have the contract; the docs stand on their own."""
    for name in docs.SECTIONS:
        assert "contract section" not in (docs.DOCS_DIR / name).read_text(), name
