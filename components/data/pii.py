"""PII redaction: e-mail, phone, IP, credit-card and IBAN numbers → typed placeholders.

Patterns in the style of Presidio's pattern recognizers, with their checksum validation (Luhn
for cards, ISO 13616 mod-97 for IBANs) so that ordinary numbers survive. Presidio itself needs
a spaCy model download for its analyzer engine, which this offline pipeline cannot do.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import replace

from components.data.documents import Doc

EMAIL, PHONE, IP, CREDIT_CARD, IBAN = "EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN"

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# Not inside a decimal number (5.666666666666667 passes Luhn by chance).
_CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?!\w|\.\d)")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# Candidates only; ipaddress decides (times like 10:30:00 are not addresses).
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# International numbers start with +CC; national ones are North-American style 3-3-4 with
# separators. Bare digit runs and longer digit groups (cards, IBANs, versions) are not phones.
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])"
    r"|(?<![\d.-])(?<!\d )\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\d.-]|\s\d)"
)


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


def _ip_ok(m: re.Match) -> bool:
    candidate = m.group(0)
    if ":" in candidate and sum(1 for g in candidate.split(":") if g) < 3:
        return False  # "::" in a grammar, "a:b" ratios: not addresses worth a placeholder
    line_start = m.start() == 0 or m.string[m.start() - 1] == "\n"
    if line_start and m.string[m.end() : m.end() + 2] == ". ":
        return False  # a section number such as "4.8.3.1. Keyword arguments"
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _card_ok(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _iban_ok(m: re.Match) -> bool:
    return iban_ok(m.group(0))


def _phone_ok(m: re.Match) -> bool:
    return 8 <= sum(c.isdigit() for c in m.group(0)) <= 15  # E.164 allows at most 15 digits


# Order matters: IBANs and cards before phones, so a card is not half-eaten as a phone.
RULES: tuple[tuple[str, re.Pattern, object], ...] = (
    (EMAIL, _EMAIL, None),
    (IBAN, _IBAN, _iban_ok),
    (CREDIT_CARD, _CARD, _card_ok),
    (IP, _IPV4, _ip_ok),
    (IP, _IPV6, _ip_ok),
    (PHONE, _PHONE, _phone_ok),
)


def redact(text: str) -> tuple[str, Counter]:
    counts: Counter = Counter()
    for kind, pattern, valid in RULES:

        def sub(m: re.Match, kind=kind, valid=valid) -> str:
            if valid is not None and not valid(m):
                return m.group(0)
            counts[kind] += 1
            return f"<{kind}>"

        text = pattern.sub(sub, text)
    return text, counts


def find_pii(text: str) -> Counter:
    """PII still present (what the post-curation gate checks is zero)."""
    return redact(text)[1]


class PiiRedactor:
    """A transform block: returns the document with PII replaced. Counts placeholders per
    type (`pii.EMAIL`, ...) and documents changed (`pii.docs_redacted`, 0 when none)."""

    name = "pii"

    def __init__(self) -> None:
        self.counters: Counter = Counter({"pii.docs_redacted": 0})

    def apply(self, doc: Doc) -> Doc:
        text, found = redact(doc.text)
        if not found:
            return doc
        self.counters.update({f"pii.{kind}": n for kind, n in found.items()})
        self.counters["pii.docs_redacted"] += 1
        return replace(doc, text=text)  # keeps the tags earlier blocks set
