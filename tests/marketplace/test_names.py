"""Names: what is refused (control characters, line breaks, direction overrides), and one-line
subjects cut to fit."""

import pytest

from marketplace.names import name_problem, one_line


@pytest.mark.parametrize(
    "name",
    ["Evil\nBcc: x@example.com", "Evil\r\nBcc: x", "tab\there", "nul\x00", "esc\x1b[31m", "ls\u2028", "rtl\u202eexe"],
    ids=["lf", "crlf", "tab", "nul", "escape", "line-separator", "rtl-override"],
)
def test_names_with_control_characters_are_refused_with_the_character(name):
    problem = name_problem(name)

    assert problem.startswith("must not contain control characters such as line breaks or tabs (found U+")


@pytest.mark.parametrize("name", ["Fancy Button", "Ünïcødé 名前", "👩‍💻 dev kit", "a-b_c.d (2)"])
def test_ordinary_names_pass(name):
    assert name_problem(name) == ""


def test_one_line_turns_controls_into_single_spaces():
    assert one_line("Evil\nBcc: x@example.com\t got\r\n published", 200) == "Evil Bcc: x@example.com got published"


def test_one_line_cuts_a_long_text_with_an_ellipsis_to_the_length():
    text = one_line("x" * 200 + " 2.1.0 is published", 200)

    assert len(text) == 200
    assert text == "x" * 199 + "…"


def test_one_line_leaves_a_short_text_alone():
    assert one_line("Fancy Button got a 5-star rating", 200) == "Fancy Button got a 5-star rating"
