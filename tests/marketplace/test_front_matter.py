"""YAML front matter: parsed into JSON-ready metadata, or refused with a reason a user can read."""

import json

import pytest

from marketplace.errors import ApplicationError, ValidationFailed
from marketplace.front_matter import parse_front_matter

VALID = """---
name: Fancy Button
version: 2.1.0
description: A button that sparkles when pressed.
tags: [ui, button]
released: 2024-03-01
updated: 2024-03-02 10:30:00
license: MIT
---
export const Button = () => null;
"""


def _refusal(source: str) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_front_matter(source)
    assert isinstance(info.value, ApplicationError)
    assert info.value.code == "invalid"
    assert str(info.value) == info.value.message
    return info.value.message


def test_valid_front_matter_is_parsed_into_its_fields():
    metadata = parse_front_matter(VALID)

    assert metadata["name"] == "Fancy Button"
    assert metadata["version"] == "2.1.0"
    assert metadata["description"] == "A button that sparkles when pressed."
    assert metadata["tags"] == ["ui", "button"]
    assert metadata["license"] == "MIT"


def test_dates_become_strings_when_parsed():
    metadata = parse_front_matter(VALID)

    assert metadata["released"] == "2024-03-01"
    assert isinstance(metadata["updated"], str)
    assert metadata["updated"].startswith("2024-03-02")
    json.dumps(metadata)  # everything is JSON-ready, as the JSONField stores it


def test_nested_values_are_made_json_ready_when_parsed():
    source = "---\nname: a\nversion: 1.0.0\ndescription: d\nhistory:\n  - {date: 2024-01-05, n: 1}\n---\n"

    metadata = parse_front_matter(source)

    assert metadata["history"] == [{"date": "2024-01-05", "n": 1}]
    assert json.loads(json.dumps(metadata)) == metadata


def test_body_after_the_block_is_not_part_of_the_metadata():
    metadata = parse_front_matter(VALID + "---\nname: other\n")

    assert metadata["name"] == "Fancy Button"
    assert set(metadata) == {"name", "version", "description", "tags", "released", "updated", "license"}


def test_byte_order_mark_is_tolerated_when_source_starts_with_one():
    assert parse_front_matter("\ufeff" + VALID) == parse_front_matter(VALID)


def test_windows_line_endings_are_tolerated():
    assert parse_front_matter(VALID.replace("\n", "\r\n")) == parse_front_matter(VALID)


@pytest.mark.parametrize(
    "source",
    ["", "name: a\nversion: 1\ndescription: d\n", "\n---\nname: a\n---\n", "# title\n---\nname: a\n---\n"],
    ids=["empty", "no-block", "blank-line-first", "text-first"],
)
def test_refused_with_reason_when_no_opening_delimiter(source):
    assert _refusal(source) == "The source must start with a YAML front matter block opened by '---'."


def test_refused_with_reason_when_block_is_not_closed():
    message = _refusal("---\nname: a\nversion: 1.0.0\ndescription: d\n")

    assert message == "The YAML front matter block is not closed by a '---' line."


@pytest.mark.parametrize(
    ("yaml_lines", "line"),
    [
        ("name: a\nversion: 1.0.0\ndescription: [never closed\n", 4),
        ("name: a\n  bad: indentation\nversion: 1.0.0\n", 3),
        ("name: a\n\tversion: 1.0.0\n", 3),
    ],
    ids=["unclosed-flow", "bad-indent", "tab"],
)
def test_refused_with_a_line_number_when_yaml_is_invalid(yaml_lines, line):
    """Lines are counted in the whole source, the opening '---' being line 1."""
    message = _refusal(f"---\n{yaml_lines}---\nbody\n")

    assert message == f"The YAML front matter is not valid YAML at line {line}."


@pytest.mark.parametrize(
    "block",
    ["- name\n- version\n", "just a sentence\n", "42\n"],
    ids=["list", "string", "number"],
)
def test_refused_with_reason_when_front_matter_is_not_a_mapping(block):
    message = _refusal(f"---\n{block}---\n")

    assert message == "The YAML front matter must be a mapping of fields (name: ..., version: ...)."


@pytest.mark.parametrize(
    ("block", "missing"),
    [
        ("version: 1.0.0\ndescription: d\n", "name"),
        ("name: a\ndescription: d\n", "version"),
        ("name: a\nversion: 1.0.0\n", "description"),
        ("name: a\n", "version, description"),
        ("", "name, version, description"),
        ("name: '  '\nversion:\ndescription: d\n", "name, version"),
    ],
    ids=["name", "version", "description", "two", "empty-block", "blank-values"],
)
def test_refusal_lists_each_missing_required_field(block, missing):
    message = _refusal(f"---\n{block}---\nbody\n")

    assert message == f"Missing required front matter field(s): {missing}."


def test_numbers_are_accepted_as_required_fields():
    metadata = parse_front_matter("---\nname: 2048\nversion: 3\ndescription: 1.5\n---\n")

    # The version keeps its text; other fields are what YAML makes of them.
    assert metadata == {"name": 2048, "version": "3", "description": 1.5}


def test_version_keeps_its_text_when_it_looks_like_a_number():
    metadata = parse_front_matter("---\nname: a\nversion: 1.10\ndescription: d\n---\n")

    assert str(metadata["version"]) == "1.10"
