import pytest

from components.data.documents import Doc
from components.data.pii import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP,
    PHONE,
    PiiRedactor,
    redact,
)
from components.data.pii_check import find_pii
from components.data.pii_rules import iban_ok, luhn_ok


@pytest.mark.parametrize(
    "text, kind",
    [
        ("write to jane.doe+news@example.co.uk today", EMAIL),
        ("call +44 20 7946 0958 now", PHONE),
        ("call (212) 555-2590 now", PHONE),
        ("server 8.8.4.4 is down", IP),
        ("server 2a00:1450:4001:81c::200e is down", IP),
        ("card 4111 1111 1111 1111 expired", CREDIT_CARD),
        ("card 5500-0000-0000-0004 expired", CREDIT_CARD),
        ("pay to GB82 WEST 1234 5698 7654 32 please", IBAN),
        ("pay to DE89370400440532013000 please", IBAN),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder(text, kind):
    out, counts = redact(text)
    assert counts == {kind: 1}, (out, counts)
    assert f"<{kind}>" in out


@pytest.mark.parametrize(
    "text",
    [
        "In 1599 the play was performed 1234 times.",  # years and counts
        "version 3.11.7 released",  # not an IP (3 dots, but 4 parts?)
        "card 4111 1111 1111 1112 is not valid",  # fails Luhn
        "IBAN-like GB00 WEST 1234 5698 7654 32",  # fails mod-97
        "999.999.999.999 is not an address",
        "Act 3, Scene 2, line 45",
        "version 3.11.7.2 released",  # a version with four parts
        "see section 4.8.3.1. Keyword arguments",
        "released on 2008-06-02, patched 2008/06/30",  # dates
        "call 555-0100 now",  # seven digits, no area code
        "'+3.140000; -3.140000'",  # a formatted float, not +3 …
        "ISBN 0-306-40615-2 and timestamp 1700000000",
        "connect to 192.0.2.1 or 2001:db8::1",  # documentation addresses (RFC 5737, 3849)
        "bind to 127.0.0.1, 10.0.0.1 or 192.168.10.254",  # not routed: identifies no one
        ">>> math.pi\n3.14159265359",  # its digits after the point read as a US number
        "0 1 1 2 3 5 8 13 21 34 55 89 144 233 377 610 987 1597",  # a list of numbers
    ],
)
def test_ordinary_numbers_survive(text):
    assert redact(text) == (text, {})


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")


def test_redactor_counts_and_keeps_clean_docs_identical():
    r = PiiRedactor()
    clean = Doc("a", "nothing to see here", "s")
    assert r.apply(clean) is clean
    out = r.apply(Doc("b", "mail a@b.org or c@d.net", "s", lang="en", quality=0.9))
    assert out.text == "mail <EMAIL> or <EMAIL>" and out.id == "b"
    assert (out.lang, out.quality) == ("en", 0.9)
    assert r.counters == {f"pii.{EMAIL}": 2, "pii.docs_redacted": 1}


@pytest.mark.parametrize(
    "text",
    [
        ">>> 17 / 3\n5.666666666666667\n",  # decimal digits pass Luhn by chance
        "4.8.3.1. Keyword-Only Arguments",  # section number at a line start
        'sign ::= "+" | "-"',  # grammar, not an IPv6 address
        "on Mon, 02 Jun 2008 14:52:46 +0000.",  # time-zone offset, not a phone
    ],
)
def test_false_positives_seen_in_the_bundled_corpus(text):
    assert redact(text) == (text, {})


@pytest.mark.parametrize(
    "text, redacted",
    [
        ("call (212) 555-2590.", "call <PHONE>."),  # a sentence's full stop
        ("or 212-555-2590.", "or <PHONE>."),
        ("(office: 212.555.2590)", "(office: <PHONE>)"),  # brackets
        ("[+44 20 7946 0958]", "[<PHONE>]"),
        ("dial 212-555-2590 ext. 123, then", "dial <PHONE>, then"),  # the extension goes too
        ("+1 212 555 2590; or", "<PHONE>; or"),
        ("(555) 123-4567.", "<PHONE>."),  # fictional, but written as a phone number
        ("mail jane@postbox.de.", "mail <EMAIL>."),
        ("at 8.8.8.8.", "at <IP_ADDRESS>."),
        ("card 4111-1111-1111-1111.", "card <CREDIT_CARD>."),
    ],
)
def test_trailing_punctuation_brackets_and_extensions(text, redacted):
    assert redact(text)[0] == redacted


@pytest.mark.parametrize(
    "text",
    [
        "call (212) 555-2590.",
        "or 212-555-2590.",
        "+44 20 7946 0958",
        "jane.doe+news@example.co.uk",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        "8.8.4.4",
        "2a00:1450:4001:81c::200e",
    ],
)
def test_the_gate_detector_finds_what_the_redactor_removes(text):
    # Independent detectors (components/data/pii_check.py): both must see it, neither after.
    assert sum(find_pii(text).values()) == 1
    assert not find_pii(redact(text)[0])
