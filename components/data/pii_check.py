"""PII left in curated text, found independently of the redactor (components/data/pii.py).

The post-curation gate must not share the redactor's blind spots, so these detectors are
written differently: whole-text patterns with no candidate windows, phones by a North-American
3-3-4 pattern and an international +CC pattern instead of libphonenumber, e-mails by a looser
pattern. Only the checks that are arithmetic, not detection (Luhn, mod-97, whether an address
is globally routed), are shared. Anything found here fails the gate.
"""

from __future__ import annotations

import re
from collections import Counter

from components.data.pii import CREDIT_CARD, EMAIL, IBAN, IP, PHONE, iban_ok, ip_is_pii, luhn_ok

_EMAIL = re.compile(r"[^\s@<>()\[\]\"',;:]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# NANP: area code and exchange start with 2-9; a sentence's full stop may follow.
_NANP = re.compile(
    r"(?<![\w+.-])(?<!\d )(?:\+?1[ .-]?)?(?:\([2-9]\d\d\)|[2-9]\d\d)[ .-]?"
    r"[2-9]\d\d[ .-]\d{4}(?!\d|-\d)"
)
_INTERNATIONAL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)")
_CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w]|\.\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# A section number at a line start ("4.8.3.1. Keyword") or a version is not an address.
_IPV4 = re.compile(r"(?<![\w.])(?<!version )(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d|\. [A-Z])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f:]*::?[0-9A-Fa-f:]*[0-9A-Fa-f](?![\w:])")


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def find_pii(text: str) -> Counter:
    """Counts of PII per kind still present in `text`."""
    found: Counter = Counter()
    found[EMAIL] += len(_EMAIL.findall(text))
    found[PHONE] += len(_NANP.findall(text))
    found[PHONE] += sum(8 <= len(_digits(m)) <= 15 for m in _INTERNATIONAL.findall(text))
    found[CREDIT_CARD] += sum(luhn_ok(_digits(m)) for m in _CARD.findall(text))
    # IBAN candidates end at a word boundary the pattern may overshoot: try shorter prefixes.
    found[IBAN] += sum(
        any(iban_ok(m.replace(" ", "")[:n]) for n in range(15, 35)) for m in _IBAN.findall(text)
    )
    found[IP] += sum(ip_is_pii(m) for m in _IPV4.findall(text))
    found[IP] += sum(m.count(":") >= 2 and ip_is_pii(m) for m in _IPV6.findall(text))
    return +found  # drop zero counts
