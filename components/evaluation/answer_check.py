"""How a generated answer is judged against the expected one: the one rule evaluation uses."""

from __future__ import annotations

_EDGE_PUNCT = ".,;:!?\"'`()[]{}<>*"


def normalize_answer(s: str) -> str:
    """Canonical answer text: whitespace collapsed, punctuation stripped from the ends of each
    whitespace-delimited token. Case is kept on purpose: the `upper` family is about case."""
    tokens = (t.strip(_EDGE_PUNCT) for t in s.split())
    return " ".join(t for t in tokens if t)


def is_correct(answer: str, generated: str) -> bool:
    """Whether `generated` answers with `answer`.

    Rule: take the first non-blank line of `generated`, normalise it with `normalize_answer`,
    and accept iff its first k tokens equal the k tokens of the normalised `answer`. So
    "42", "  42.\\n" and "42 is the sum" are right for "42", while "421", "4 2", "The answer
    is 42" (answer not first) and "hello" for "HELLO" (case differs) are wrong. The prefix rule
    forgives a small model that keeps talking after the answer instead of stopping.
    """
    expected = normalize_answer(answer).split()
    first_line = next((line for line in generated.splitlines() if line.strip()), "")
    got = normalize_answer(first_line).split()
    return bool(expected) and got[: len(expected)] == expected
