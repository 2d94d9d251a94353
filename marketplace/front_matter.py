"""YAML front matter of a component's source: parse and validate it with readable errors."""

from __future__ import annotations

from typing import Any

import yaml

from marketplace.errors import ValidationFailed

REQUIRED_FIELDS = ("name", "version", "description")
DELIMITER = "---"


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
    try:
        metadata = yaml.safe_load(text) or {}
        if isinstance(metadata, dict) and "version" in metadata:
            metadata["version"] = _raw_scalar(text, "version", metadata["version"])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        raise ValidationFailed(f"The YAML front matter is not valid YAML{where}.") from exc
    if not isinstance(metadata, dict):
        raise ValidationFailed("The YAML front matter must be a mapping of fields (name: ..., version: ...).")
    missing = [f for f in REQUIRED_FIELDS if not str(metadata.get(f) or "").strip()]
    if missing:
        raise ValidationFailed(f"Missing required front matter field(s): {', '.join(missing)}.")
    # Keep only what JSON can store (dates become ISO strings).
    return {str(k): _jsonable(v) for k, v in metadata.items()}


def _raw_scalar(text: str, key: str, parsed: Any) -> Any:
    """The text of a top-level scalar as written: YAML reads ``version: 1.10`` as the float 1.1."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    for key_node, value_node in getattr(node, "value", []):
        if getattr(key_node, "value", None) == key and isinstance(value_node, yaml.ScalarNode):
            return value_node.value
    return parsed


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
