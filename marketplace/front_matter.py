"""YAML front matter of a component's source: parse and validate it with readable errors.

The source is untrusted, and the parsed metadata is stored and served to anyone, so the parser
refuses what YAML allows but a metadata block never needs and an attacker can abuse:

- anchors and aliases (``&a`` / ``*a``): safe_load keeps an alias as a shared reference, so a few
  hundred bytes of nested aliases expand into gigabytes once copied out (the "billion laughs");
- nesting deeper than ``MAX_DEPTH``: the constructor and every later reader recurse;
- scalars Python cannot turn into a value (``2024-13-01``, a 5,000-digit integer) or JSON cannot
  store (``.inf``, ``.nan``, NUL characters, lone surrogates);
- a block over ``MAX_YAML_BYTES`` or metadata over ``MAX_METADATA_BYTES`` of JSON.

Each refusal is a ``ValidationFailed`` with a reason the author can act on: the upload is rejected,
never left pending or dead-lettered.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from marketplace.errors import ValidationFailed

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("name", "version", "description")
DELIMITER = "---"
MAX_DEPTH = 20
MAX_YAML_BYTES = 64 * 1024
MAX_METADATA_BYTES = 16 * 1024
# 64 digits is more than any real version, count or id needs, and far below Python's limit on
# int <-> str conversion (4,300 digits), which would otherwise fail when the JSON is written.
MAX_INTEGER_DIGITS = 64
# Lines are counted in the whole source: the opening '---' is line 1, the YAML starts on line 2.
FIRST_YAML_LINE = 2

# libyaml when it is there: the pure-Python parser is about five times slower.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(yaml.YAMLError):
    """A document YAML accepts and the marketplace does not, with the reason and where."""

    def __init__(self, reason: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark

    def message(self) -> str:
        where = f" (line {self.mark.line + FIRST_YAML_LINE})" if self.mark else ""
        return f"{self.reason}{where}."


def _checked(construct: Any, noun: str, refuse: Any) -> Any:
    """A constructor that turns any error of ``construct``, or a value ``refuse`` names a reason
    for, into a refusal that says which scalar (a ``noun``) and where."""

    def construct_checked(loader: SafeConstructor, node: yaml.ScalarNode) -> Any:
        # Quoted into the reason, which is stored and emailed: controls (a NUL) are escaped.
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in node.value[:40])
        shown += "..." if len(node.value) > 40 else ""
        try:
            value = construct(loader, node)
        except _Refused:
            raise
        except Exception:
            # Any failure to convert one scalar is that scalar's fault: ValueError for 2024-13-01,
            # AttributeError for an explicit !!timestamp on a quoted non-date.
            raise _Refused(f"The {noun} '{shown}' is not valid", node.start_mark) from None
        reason = refuse(value)
        if reason:
            raise _Refused(f"The {noun} '{shown}' {reason}", node.start_mark)
        return value

    return construct_checked


def _construct_int(loader: SafeConstructor, node: yaml.ScalarNode) -> int:
    # Counted before converting: Python refuses to read more than 4,300 digits, and would take
    # quadratic time up to there.
    if sum(c.isdigit() for c in node.value) > MAX_INTEGER_DIGITS:
        raise _Refused(f"An integer has more than {MAX_INTEGER_DIGITS} digits", node.start_mark)
    return SafeConstructor.construct_yaml_int(loader, node)


def _integer_problem(value: int) -> str:
    return f"is {MAX_INTEGER_DIGITS} digits or more" if abs(value) >= 10**MAX_INTEGER_DIGITS else ""


def _float_problem(value: float) -> str:
    return "is not a finite number (JSON cannot store it)" if not math.isfinite(value) else ""


class _FrontMatterLoader(_BaseLoader):
    """The safe loader, with scalars that fail as refusals instead of Python errors."""


_FrontMatterLoader.add_constructor("tag:yaml.org,2002:int", _checked(_construct_int, "integer", _integer_problem))
_FrontMatterLoader.add_constructor(
    "tag:yaml.org,2002:float", _checked(SafeConstructor.construct_yaml_float, "number", _float_problem)
)
_FrontMatterLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", _checked(SafeConstructor.construct_yaml_timestamp, "date", lambda value: "")
)


def _check_events(text: str) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before anything is built:
    the first offending event stops the parse, so a bomb costs no more than its own bytes."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("Anchors and aliases (&name, *name) are not allowed", event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"The front matter is nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    """The document's value and its node (to read scalars as written)."""
    _check_events(text)
    loader = _FrontMatterLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def parse_front_matter(source: str) -> dict[str, Any]:
    """The metadata mapping at the top of ``source``; ValidationFailed with a reason otherwise."""
    lines = source.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != DELIMITER:
        raise ValidationFailed("The source must start with a YAML front matter block opened by '---'.")
    try:
        end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == DELIMITER)
    except StopIteration:
        raise ValidationFailed("The YAML front matter block is not closed by a '---' line.") from None
    text = "\n".join(lines[1:end])
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ValidationFailed(f"The YAML front matter is larger than {MAX_YAML_BYTES // 1024} KiB.")
    metadata, node = _parse(text)
    if metadata is None:  # an empty block: the required fields are missing, said below
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValidationFailed("The YAML front matter must be a mapping of fields (name: ..., version: ...).")
    if "version" in metadata:
        metadata["version"] = _raw_scalar(node, "version", metadata["version"])
    missing = [f for f in REQUIRED_FIELDS if not str(metadata.get(f) or "").strip()]
    if missing:
        raise ValidationFailed(f"Missing required front matter field(s): {', '.join(missing)}.")
    # Keep only what JSON can store (dates become ISO strings).
    result = {_text(k): _jsonable(v) for k, v in metadata.items()}
    size = len(json.dumps(result, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationFailed(
            f"The front matter makes {size} bytes of metadata; at most {MAX_METADATA_BYTES // 1024} KiB is stored."
        )
    return result


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    try:
        metadata, node = _load(text)
    except _Refused as exc:
        raise ValidationFailed(f"{exc.message()}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # libyaml places an error found at the end of the stream one line past the block's last.
        last_line = text.count("\n")
        where = f" at line {min(mark.line, last_line) + FIRST_YAML_LINE}" if mark else ""
        raise ValidationFailed(f"The YAML front matter is not valid YAML{where}.") from exc
    except Exception as exc:
        # Parsing is a pure function of the text: a document that breaks it in a way not foreseen
        # above is still the document's fault. The upload is rejected (not retried into a dead
        # letter), and the log keeps the traceback for whoever makes the refusal precise.
        logger.exception("front matter refused by an unexpected parser error")
        raise ValidationFailed(f"The YAML front matter could not be read ({type(exc).__name__}).") from exc
    return metadata, node


def _raw_scalar(node: yaml.Node | None, key: str, parsed: Any) -> Any:
    """The text of a top-level scalar as written: YAML reads ``version: 1.10`` as the float 1.1."""
    for key_node, value_node in getattr(node, "value", []):
        if getattr(key_node, "value", None) == key and isinstance(value_node, yaml.ScalarNode):
            return value_node.value
    return parsed


def _text(value: Any) -> str:
    text = str(value)
    # PostgreSQL's jsonb cannot hold NUL (\u0000) nor a lone surrogate, both of which a
    # double-quoted YAML escape can produce: refused here, not as a database error later.
    if "\x00" in text:
        raise ValidationFailed("The front matter must not contain NUL characters (\\0).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("The front matter must be valid Unicode text (no lone surrogates).") from None
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _text(value)
