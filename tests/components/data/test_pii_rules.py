"""The redactor and the gate's checker agree on what PII is, on real code-heavy documentation
(tests/fixtures/docstrings.py)."""

from collections import Counter

import pytest

from components.data.pii import find_spans, redact
from components.data.pii_check import find_pii
from components.data.pii_rules import (
    EMAIL,
    IP,
    PHONE,
    dotted_quad_is_address,
    email_counts,
    ip_counts,
    local_part,
)
from tests.fixtures.docstrings import DOCSTRINGS


@pytest.mark.parametrize("name", sorted(DOCSTRINGS))
def test_documentation_holds_no_pii_for_either_detector(name):
    text = DOCSTRINGS[name]
    assert find_spans(text) == [], name
    assert find_pii(text) == Counter(), name


@pytest.mark.parametrize(
    "text, kind",
    [
        # The same shapes as above, but reachable: both detectors see them.
        ("contact ``guido@python.org`` for details", EMAIL),
        ("`jörg.müller@postbox.de`", EMAIL),  # a local part in another script (RFC 6531)
        (">>> ip_address('8.8.4.4')", IP),
        ("X-Forwarded-For: 2a00:1450:4001:81c::200e", IP),
        ("call (212) 555-2590 after 5pm", PHONE),
    ],
)
def test_the_same_shapes_with_real_pii_are_found_by_both_and_redacted(text, kind):
    assert [k for _, _, k in find_spans(text)] == [kind]
    assert find_pii(text) == Counter({kind: 1})
    assert find_pii(redact(text)[0]) == Counter()


def test_email_rules():
    assert local_part("see ``") == "" and local_part("``jane.doe") == "jane.doe"
    assert local_part("(.+jane") == "jane"
    assert email_counts("jane", "postbox.de") and email_counts("jane", "mail.python.org")
    assert not email_counts("", "dataclasses.dataclass")  # "@dataclasses.dataclass"
    assert not email_counts("obj", "functools.lru_cache")  # no such top-level domain
    for domain in ("example.com", "lists.example.org", "example.net", "host.test", "a.invalid"):
        assert not email_counts("jane", domain), domain


def test_address_rules():
    assert ip_counts("8.8.8.8") and ip_counts("2a00:1450:4001:81c::200e")
    for documentation in ("192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1"):
        assert not ip_counts(documentation), documentation
    assert not ip_counts("::2") and not ip_counts("1::2")  # slices, grammars
    text = "v1.2.3.4, 8.8.8.8, version 8.8.4.4, 1.2.3.4.5"
    quads = [(0 + 1, 8), (10, 17), (27, 34), (36, 43)]
    assert [dotted_quad_is_address(text, a, b) for a, b in quads] == [False, True, False, False]


def test_a_numeric_table_is_not_a_phone():
    # pandas/core/frame.py (DataFrame.diff): digits across rows read as one number.
    text = """>>> df.diff()
     a    b     c
0  NaN  NaN   NaN
1  1.0  0.0   3.0
2  1.0  1.0   5.0
3  1.0  1.0   7.0
4  1.0  2.0   9.0
5  1.0  3.0  11.0"""
    assert find_spans(text) == [] and find_pii(text) == Counter()
