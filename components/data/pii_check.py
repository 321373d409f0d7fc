"""PII left in curated text, found independently of the redactor (components/data/pii.py).

The post-curation gate must not share the redactor's blind spots, so these detectors are
written differently: whole-text patterns with no candidate windows, phones by a North-American
3-3-4 pattern and an international +CC pattern instead of libphonenumber, e-mails by a looser
pattern. What counts once found is shared (components/data/pii_rules.py): a real top-level
domain and no documentation domain for e-mails, globally routed addresses that are not versions
or slices, phones that are not part of a decimal, date or time; so is the arithmetic (Luhn,
mod-97). Anything found here fails the gate.
"""

from __future__ import annotations

import re
from collections import Counter

from components.data.pii_rules import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP,
    PHONE,
    card_counts,
    dotted_quad_is_address,
    email_counts,
    iban_ok,
    ip_counts,
    local_part,
    phone_counts,
)

_EMAIL = re.compile(r"([^\s@<>()\[\]\"',;:]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
# NANP: area code and exchange start with 2-9; a sentence's full stop may follow.
_NANP = re.compile(
    r"(?<![\w+.-])(?<!\d )(?:\+?1[ .-]?)?(?:\([2-9]\d\d\)|[2-9]\d\d)[ .-]?"
    r"[2-9]\d\d[ .-]\d{4}(?!\d|-\d)"
)
_INTERNATIONAL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)")
_CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w]|\.\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f:]*::?[0-9A-Fa-f:]*[0-9A-Fa-f](?![\w:])")


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _phones(text: str) -> int:
    spans = [m.span() for m in _NANP.finditer(text)]
    spans += [m.span() for m in _INTERNATIONAL.finditer(text) if 8 <= len(_digits(m[0])) <= 15]
    return sum(phone_counts(text, a, b) for a, b in spans)


def find_pii(text: str) -> Counter:
    """Counts of PII per kind still present in `text`."""
    found: Counter = Counter()
    found[EMAIL] += sum(email_counts(local_part(m[1]), m[2]) for m in _EMAIL.finditer(text))
    found[PHONE] += _phones(text)
    found[CREDIT_CARD] += sum(card_counts(m) for m in _CARD.findall(text))
    # IBAN candidates end at a word boundary the pattern may overshoot: try shorter prefixes.
    found[IBAN] += sum(
        any(iban_ok(m.replace(" ", "")[:n]) for n in range(15, 35)) for m in _IBAN.findall(text)
    )
    found[IP] += sum(dotted_quad_is_address(text, *m.span()) for m in _IPV4.finditer(text))
    found[IP] += sum(m.count(":") >= 2 and ip_counts(m) for m in _IPV6.findall(text))
    return +found  # drop zero counts
