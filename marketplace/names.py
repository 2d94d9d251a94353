"""Names people give things, checked once for the API and the services, and made safe for one-line
places (an email subject) where an old stored name still goes."""

from __future__ import annotations

import re
import unicodedata

# Control characters (line breaks, tabs, NUL, escapes), line and paragraph separators, lone
# surrogates, and the bidirectional overrides that make a name read differently from what it is.
_REFUSED_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}
_BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = re.compile(r"\s+")
ELLIPSIS = "…"


def _refused(char: str) -> bool:
    return char in _BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES


def name_problem(name: str) -> str:
    """Why ``name`` cannot be a name (empty string when it can): no control characters, line
    breaks or direction overrides, since a name ends up in email subjects and on one line."""
    bad = next((char for char in name if _refused(char)), None)
    if bad is None:
        return ""
    return f"must not contain control characters such as line breaks or tabs (found U+{ord(bad):04X})"


def one_line(text: str, max_length: int) -> str:
    """``text`` on one line and at most ``max_length`` characters: refused characters become
    spaces, runs of spaces one space, and a cut text ends with an ellipsis."""
    flat = _SPACES.sub(" ", "".join(" " if _refused(char) else char for char in text)).strip()
    if len(flat) <= max_length:
        return flat
    return flat[: max_length - len(ELLIPSIS)].rstrip() + ELLIPSIS
