"""PII redaction: e-mail, phone, IP, credit-card and IBAN numbers → typed placeholders.

Phones by Google's libphonenumber (`phonenumbers`, national and international formats,
extensions; valid by numbering plan, or possible and written in a phone's 3-3-4 grouping);
e-mails, IPs, cards and IBANs by patterns in the style of Presidio's recognizers with their
checks: Luhn for cards, ISO 13616 mod-97 for IBANs. What counts as an e-mail, an address or a
phone once found (a real top-level domain, not a documentation domain or range, not a version,
a slice, a date or a decimal) is components/data/pii_rules.py, shared with the gate's checker.

Speed: most text has no PII, so the expensive detectors run only in windows around cheap
candidates: an `@` for e-mails, a run of digits and separators for cards, IBANs, IPv4 and
phones, two colons for IPv6; the phone matcher's verdict on a short segment is cached. The
post-curation gate checks the output with detectors of its own (components/data/pii_check.py),
not these.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache

import phonenumbers

from components.data.documents import Doc
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

# National numbers are read as this region's (a leading + names any other country).
PHONE_REGION = "US"

Span = tuple[int, int, str]  # start, end, kind

# An e-mail is found from its `@` (a literal: the regex engine skips to it fast); the local part
# is then read backwards from there.
_EMAIL_DOMAIN = re.compile(r"@([\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,})\b")
# A digit run with separators, at least 7 characters: every card, IBAN tail, IPv4 and phone has
# one. The detectors below look only at a window around each.
_DIGIT_RUN = re.compile(r"\d[\d .()/+-]{5,}\d")
_BEFORE, _AFTER = 40, 20  # window margins: an IBAN's letters before, a phone's extension after
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# Not inside a decimal number (5.666666666666667 passes Luhn by chance).
_CARD = re.compile(r"\d(?<![\w.]\d)(?:[ -]?\d){12,18}(?!\w|\.\d)")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:")
# Candidates only; ipaddress decides (times like 10:30:00 are not addresses).
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def _windows(pattern: re.Pattern, text: str, before: int, after: int) -> Iterator[tuple[int, int]]:
    """Merged (start, end) windows around every match of a cheap candidate pattern."""
    start = end = -1
    for m in pattern.finditer(text):
        a, b = max(0, m.start() - before), min(len(text), m.end() + after)
        if a <= end:
            end = max(end, b)
            continue
        if end >= 0:
            yield start, end
        start, end = a, b
    if end >= 0:
        yield start, end


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        local = local_part(text[max(0, m.start() - 64) : m.start()])
        if email_counts(local, m.group(1)):
            yield m.start() - len(local), m.end(), EMAIL


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The matcher's span can take in an opening bracket ("[+44 ..."): keep it to the number."""
    while start < end and text[start] not in "+(0123456789":
        start += 1
    while end > start and not (text[end - 1].isdigit() or text[end - 1] == ")"):
        end -= 1
    return start, end


def _numbers(text: str, a: int, b: int) -> Iterator[Span]:
    """Cards, IBANs, IPv4s and phones within text[a:b] (a window around a digit run)."""
    for m in _IBAN.finditer(text, a, b):
        if iban_ok(m.group(0)):
            yield m.start(), m.end(), IBAN
    for m in _CARD.finditer(text, a, b):
        if card_counts(m.group(0)):
            yield m.start(), m.end(), CREDIT_CARD
    for m in _IPV4.finditer(text, a, b):
        if dotted_quad_is_address(text, m.start(), m.end()):
            yield m.start(), m.end(), IP
    for run in _DIGIT_RUN.finditer(text, a, b):
        seg_start = max(0, run.start() - _PHONE_BEFORE)
        segment = text[seg_start : run.end() + _PHONE_AFTER]
        for start, end in _phones_in(segment):
            start, end = _trim(text, seg_start + start, seg_start + end)
            if phone_counts(text, start, end):
                yield start, end, PHONE


# A phone's digit run plus what libphonenumber needs around it: a leading "+" or "(" and the
# character before (a letter there makes it part of a word), an extension after.
_PHONE_BEFORE, _PHONE_AFTER = 3, 16


@lru_cache(maxsize=65_536)
def _phones_in(segment: str) -> tuple[tuple[int, int], ...]:
    """(start, end) of phone numbers in a short segment. Cached: the same runs recur (copyright
    years, version strings), and the matcher costs ~0.3 ms a candidate."""
    matcher = phonenumbers.PhoneNumberMatcher(
        segment, PHONE_REGION, leniency=phonenumbers.Leniency.POSSIBLE
    )
    return tuple(
        (m.start, m.end)
        for m in matcher
        if phonenumbers.is_valid_number(m.number) or _phone_grouping(m.raw_string)
    )


_EXTENSION = re.compile(r"(?i)\s*(?:ext\.?|x|#)\s*\d+$")


def _phone_grouping(raw: str) -> bool:
    """A number the numbering plan makes possible but not valid (an unassigned area code, a
    555 number) is still a phone when written as one: in North-American 3-3-4 groups. Bare
    digit runs, ISBNs, decimals ("+3.140000") and timestamps are possible numbers too, and are
    not; an international number (+CC) must be valid."""
    if raw.startswith("+"):
        return False
    groups = [len(g) for g in re.findall(r"\d+", _EXTENSION.sub("", raw))]
    return groups[-3:] == [3, 3, 4] and (len(groups) == 3 or groups[:-3] == [1])


def _ipv6(text: str) -> Iterator[Span]:
    for a, b in _windows(_COLONS, text, 40, 40):
        for m in _IPV6.finditer(text, a, b):
            if ip_counts(m.group(0)):
                yield m.start(), m.end(), IP


# Earlier kinds win an overlap: an IBAN or a card is not half-eaten as a phone.
_PRIORITY = {EMAIL: 0, IBAN: 1, CREDIT_CARD: 2, IP: 3, PHONE: 4}


def find_spans(text: str) -> list[Span]:
    """Non-overlapping PII spans, in text order."""
    spans = list(_emails(text))
    for a, b in _windows(_DIGIT_RUN, text, _BEFORE, _AFTER):
        spans += _numbers(text, a, b)
    if "::" in text or text.count(":") >= 3:
        spans += _ipv6(text)
    chosen: list[Span] = []
    for span in sorted(set(spans), key=lambda s: (_PRIORITY[s[2]], s[0], -s[1])):
        if all(span[1] <= c[0] or span[0] >= c[1] for c in chosen):
            chosen.append(span)
    return sorted(chosen)


def redact(text: str) -> tuple[str, Counter]:
    spans = find_spans(text)
    if not spans:
        return text, Counter()
    parts, pos = [], 0
    for start, end, kind in spans:
        parts += [text[pos:start], f"<{kind}>"]
        pos = end
    parts.append(text[pos:])
    return "".join(parts), Counter(kind for _, _, kind in spans)


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
