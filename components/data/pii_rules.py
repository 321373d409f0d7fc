"""What counts as PII: the rules the redactor (pii.py) and the gate's checker (pii_check.py) share.

The two find candidates in different ways, so that the gate does not share the redactor's
blind spots, but they must agree on what an e-mail, an address and a phone number is: where
they disagree, text the redactor rightly left alone fails the post-curation gate and stops the
pipeline. Documentation shows it most: ``@dataclasses.dataclass`` is a decorator, not an
address; user@example.com (RFC 2606), 192.0.2.1 (RFC 5737) and 2001:db8::1 (RFC 3849) are
reserved for examples and identify no one; ``x[::2]`` is a slice; 1.2.3.4 after "version" is a
version; 2018-01-01 00:00:00 in a doctest's output is a timestamp and 1.5+2.0j a complex number.

These are the checks on a candidate both detectors found, plus the arithmetic (Luhn, mod-97)
that says whether a number is a card or an IBAN at all.
"""

from __future__ import annotations

import ipaddress
import re

from tld import is_tld

# The kinds, as placeholders (<EMAIL>) and counter names (pii.EMAIL) show them.
EMAIL, PHONE, IP, CREDIT_CARD, IBAN = "EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN"

# RFC 2606 §2-3 (and RFC 6761): second-level domains and TLDs reserved for documentation.
DOCUMENTATION_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost"})
# Besides letters and digits (any script, RFC 6531), what a local part is written with here.
_LOCAL_PUNCT = frozenset("._%+-")


def is_local_char(ch: str) -> bool:
    return ch.isalnum() or ch in _LOCAL_PUNCT


def local_part(before_at: str) -> str:
    """The e-mail local part that ends where `before_at` ends: its longest tail of local-part
    characters, starting with a letter or digit (a backtick, quote or bracket ends it)."""
    start = len(before_at)
    while start > 0 and is_local_char(before_at[start - 1]) and len(before_at) - start < 64:
        start -= 1
    local = before_at[start:]
    return local.lstrip("._%+-")


def email_counts(local: str, domain: str) -> bool:
    """An address someone can be reached at: a local part, and a domain under a real top-level
    domain (the public suffix list) that is not reserved for documentation."""
    domain = domain.lower().rstrip(".")
    labels = domain.split(".")
    if not local or len(labels) < 2 or labels[-1] in RESERVED_TLDS:
        return False
    if ".".join(labels[-2:]) in DOCUMENTATION_DOMAINS:
        return False
    return is_tld(labels[-1])


def ip_counts(candidate: str) -> bool:
    """Globally routed addresses only, as DataTrove's PIIFormatter: private, loopback and the
    documentation ranges (RFC 5737, RFC 3849) are not routed. An IPv6 address needs three
    groups written: "::2" or "1::2" in text is a slice, a grammar or a ratio."""
    if ":" in candidate and sum(1 for g in candidate.split(":") if g) < 3:
        return False
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


# Words before a dotted quad that make it a version or a section number, not an address.
_VERSION_BEFORE = re.compile(
    r"(?:\bv|\b(?:version|release|python|python3|section|sect?\.|§)\s?[(\['\"]{0,2})\Z",
    re.IGNORECASE,
)


def dotted_quad_is_address(text: str, start: int, end: int) -> bool:
    """Whether the dotted quad text[start:end] stands as an address: not a section number at a
    line start ("4.8.3.1. Keyword"), not a version ("version 3.11.7.2", "v1.2.3.4",
    "Version('1.2.3.4')"), not part
    of a longer dotted number ("1.2.3.4.5"), and globally routed."""
    line_start = start == 0 or text[start - 1] == "\n"
    if line_start and text[end : end + 2] == ". ":
        return False
    if _VERSION_BEFORE.search(text, max(0, start - 9), start):
        return False
    if text[start - 1 : start] == "." or re.match(r"\.\d", text[end : end + 2]):
        return False
    return ip_counts(text[start:end])


_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_TIME = re.compile(r"\d\d:\d\d")


def phone_counts(text: str, start: int, end: int) -> bool:
    """Whether digits at text[start:end] that look like a phone number stand as one, not as
    part of a number around them: a decimal, a longer list or a table's rows ("3.14159265359",
    "610 987 1597 2584"), a complex, float or negative number ("+4.0614962j", "1e+308",
    "-2147483648"), a date or a time."""
    span = text[start:end]
    if "\n" in span:
        return False  # digits of a table's rows, not one number written on one line
    if span.isdigit():
        return False  # a bare digit run is a number ("2147483647"); phones are written grouped
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    if (
        before[-1:] in (".", ",")
        and before[:1].isdigit()
        or after[:1] in (".", ",")
        and after[1:].isdigit()
        or before[-1:].isspace()
        and before[:1].isdigit()
        or after[:1].isspace()
        and after[1:].isdigit()
    ):
        return False
    if after[:1] in ("j", "J", "e", "E") or before[-1:] in ("e", "E"):
        return False
    if before[-1:] == "-" and not before[:1].isdigit():
        return False  # a negative number: "-2147483648"
    near = text[max(0, start - 10) : end + 6]
    return not (_DATE.search(near) or _TIME.search(near))


def card_counts(candidate: str) -> bool:
    """A card number passes Luhn and is not two dates side by side ("2020-01-01 2020-01-01"
    passes by chance)."""
    digits = "".join(c for c in candidate if c.isdigit())
    return 13 <= len(digits) <= 19 and luhn_ok(digits) and not _DATE.search(candidate)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rotated = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rotated)) % 97 == 1
