"""YAML front matter: parsed into JSON-ready metadata, or refused with a reason a user can read."""

import json
import tracemalloc

import pytest

from marketplace import front_matter
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


# --- hostile documents: refused quickly, with a reason ------------------------------------------

# The "billion laughs": nine levels of nine aliases, 387,420,489 strings once expanded.
ALIAS_BOMB = (
    "---\nname: bomb\nversion: 1.0.0\ndescription: d\n"
    + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
    + "---\n"
)
HEAD = "---\nname: a\nversion: 1.0.0\ndescription: d\n"


def test_alias_bomb_is_refused_within_bounded_memory():
    tracemalloc.start()
    try:
        message = _refusal(ALIAS_BOMB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert message == "Anchors and aliases (&name, *name) are not allowed (line 5)."
    # Refused at the first anchor, before anything expands: kilobytes (expanded, this document
    # took 10 s and 426 MiB). Memory, unlike time, does not depend on how busy the machine is.
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize(
    "block",
    ["base: &b {x: 1}\nother: 2\n", "tags: [&t ui]\n", "base: {x: 1}\nmore: *b\n"],
    ids=["anchor-on-mapping", "anchor-on-scalar", "undefined-alias"],
)
def test_anchors_and_aliases_are_refused_even_when_harmless(block):
    assert "Anchors and aliases (&name, *name) are not allowed" in _refusal(f"{HEAD}{block}---\n")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[" * 3000 + "]" * 3000, "The front matter is nested more than 20 levels deep (line 5)."),
        ("[" * 21 + "]" * 21, "The front matter is nested more than 20 levels deep (line 5)."),
        ("2024-13-01", "The date '2024-13-01' is not valid (line 5)."),
        ("2024-02-30 10:00:00", "The date '2024-02-30 10:00:00' is not valid (line 5)."),
        ("9" * 5000, "An integer has more than 64 digits (line 5)."),
        (
            ":".join(["9"] * 64),
            "The integer '9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:9:...' is 64 digits or more (line 5).",
        ),
        ("0x" + "f" * 300, f"The integer '0x{'f' * 38}...' is 64 digits or more (line 5)."),
        (".inf", "The number '.inf' is not a finite number (JSON cannot store it) (line 5)."),
        (".NaN", "The number '.NaN' is not a finite number (JSON cannot store it) (line 5)."),
        ('"a\\0b"', "The front matter must not contain NUL characters (\\0)."),
    ],
    ids=["3000-deep", "21-deep", "month-13", "february-30", "5000-digits", "sexagesimal", "hex", "inf", "nan", "nul"],
)
def test_values_python_or_json_cannot_hold_are_refused_with_where_they_are(value, reason):
    assert _refusal(f"{HEAD}x: {value}\n---\n") == reason


def test_nesting_up_to_the_limit_is_accepted():
    metadata = parse_front_matter(f"{HEAD}x: {'[' * 19}1{']' * 19}\n---\n")

    assert json.dumps(metadata["x"]) == "[" * 19 + "1" + "]" * 19


def test_a_lone_surrogate_is_refused():
    assert _refusal(f'{HEAD}x: "\\ud800"\n---\n').startswith("The YAML front matter is not valid YAML")


def test_a_nul_in_a_key_is_refused():
    assert _refusal(f'{HEAD}"a\\0": 1\n---\n') == "The front matter must not contain NUL characters (\\0)."


def test_a_block_over_64_kib_is_refused_before_it_is_parsed():
    message = _refusal(f"{HEAD}# {'x' * 64 * 1024}\n---\n")

    assert message == "The YAML front matter is larger than 64 KiB."


def test_metadata_over_16_kib_of_json_is_refused():
    message = _refusal(f"{HEAD}x: [{', '.join(['abcdefgh'] * 2000)}]\n---\n")

    assert message.startswith("The front matter makes ")
    assert message.endswith(" bytes of metadata; at most 16 KiB is stored.")


def test_metadata_just_under_16_kib_is_accepted():
    metadata = parse_front_matter(f"{HEAD}x: {'y' * 16_000}\n---\n")

    assert len(json.dumps(metadata).encode()) <= 16 * 1024


def test_an_unforeseen_parser_error_is_a_refusal_with_its_kind_and_is_logged(monkeypatch, caplog):
    def broken(loader, node):
        raise TypeError("a constructor bug")

    monkeypatch.setitem(front_matter._FrontMatterLoader.yaml_constructors, "tag:yaml.org,2002:bool", broken)

    assert _refusal(f"{HEAD}flag: yes\n---\n") == "The YAML front matter could not be read (TypeError)."
    assert "front matter refused by an unexpected parser error" in caplog.text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('!!int "12\\0"', "The integer '12\\x00' is not valid (line 5)."),
        ('!!timestamp "2024-01-01\\0"', "The date '2024-01-01\\x00' is not valid (line 5)."),
        ('!!float "nope\\a"', "The number 'nope\\x07' is not valid (line 5)."),
    ],
    ids=["int", "timestamp", "float"],
)
def test_explicitly_tagged_scalars_that_do_not_convert_are_refused_with_controls_escaped(value, reason):
    message = _refusal(f"{HEAD}x: {value}\n---\n")

    assert message == reason
    assert message.isprintable()  # stored as the rejection reason and emailed
