"""The answer check: strict where it matters (answer first, case kept), forgiving of chatter."""

from __future__ import annotations

import pytest

from components.evaluation.answer_check import is_correct, normalize_answer


@pytest.mark.parametrize(
    ("answer", "generated"),
    [
        ("42", "42"),
        ("42", "  42.  \n"),
        ("42", "\n42\nsome more text"),
        ("42", "42 is the sum"),
        ("HELLO", "HELLO!"),
        ("Lady Macbeth", "Lady  Macbeth."),
        ("Lady Macbeth", "'Lady Macbeth' speaks it"),
    ],
)
def test_is_correct_accepts(answer: str, generated: str) -> None:
    assert is_correct(answer, generated)


@pytest.mark.parametrize(
    ("answer", "generated"),
    [
        ("42", "421"),
        ("42", "4 2"),
        ("42", "The answer is 42"),  # the answer must come first
        ("42", "43\n42"),  # only the first non-blank line counts
        ("42", ""),
        ("HELLO", "hello"),  # case matters: the `upper` family is about case
        ("Lady Macbeth", "Lady"),
        ("Lady Macbeth", "Macbeth"),
        ("", "anything"),  # an empty expected answer never matches
    ],
)
def test_is_correct_rejects(answer: str, generated: str) -> None:
    assert not is_correct(answer, generated)


def test_normalize_answer_keeps_case_and_inner_punctuation() -> None:
    assert normalize_answer("  'O'er'  \n THE. ") == "O'er THE"
