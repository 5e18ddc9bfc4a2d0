"""Built-in ValidateOutput detectors: e-mail addresses, phone numbers, payment card numbers
(with the Luhn check) and secrets. Offsets are UTF-8 byte offsets into the content.

Phone numbers use `phonenumbers` (Google's libphonenumber rules: it finds national and
international formats and tells real numbers from other digit runs). E-mail, card and secret
patterns are regular expressions written here: the maintained secret scanners (detect-secrets,
trufflehog) scan files line by line behind plugin registries and do not report offsets into a
string; the patterns below are the well-known token formats of the major providers.

The work of one call is bounded: secret patterns run on RE2 (google-re2: linear time, no
backtracking; none of them needs a lookaround), the e-mail and card patterns are written so that
Python's engine never rescans a run of characters from many starting points, every pattern stops
after MAX_HITS hits (phone numbers, costly to verify, after PHONE_MAX_HITS), and overlap removal
is a sort and a sweep.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers
import re2

from agentplane.governance.v1 import decision_pb2

D = decision_pb2
PHONE_REGION = "US"  # numbers without a country code are read as North American
PHONE_MAX_TRIES = 500  # candidates that fail verification (~1 ms each) before phones stop
# Findings one call reports; past it the response says findings_truncated.
MAX_FINDINGS = 1000
# Hits read from one pattern: past it that pattern stops, and the content from its next hit on
# counts as not scanned (Scan.unreported_from).
MAX_HITS = MAX_FINDINGS
PHONE_MAX_HITS = 100  # verifying a phone number costs milliseconds, not microseconds


@dataclass(frozen=True, slots=True)
class Hit:
    detector: int
    name: str
    severity: int
    start: int  # characters
    end: int
    message: str


# The local part must start where a run of local-part characters starts: the lookbehind after
# the first character lets the engine skip ahead by character class instead of trying the
# lookbehind at every offset.
EMAIL = re.compile(
    r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
# 13 to 19 digits, single spaces or hyphens between them, not inside a longer digit run.
CARD = re.compile(r"[0-9](?<![0-9][0-9])(?:[ -]?[0-9]){12,18}(?![0-9])")
# RE2 syntax (no lookarounds): a trailing "(?:[^...]|$)" stands for "not followed by", and the
# reported span is then group 1. RE2's \b and \s are ASCII: a token right after a non-ASCII
# letter is still found.
SECRETS: list[tuple[str, re2._Regexp, str]] = [
    (
        "private_key",
        re2.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|$)"
        ),
        "a private key",
    ),
    ("aws_access_key", re2.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (
        "aws_secret_key",
        re2.compile(
            r"(?i)aws.{0,20}secret.{0,20}?[=:\"'\s]+([A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|$)"
        ),
        "an AWS secret access key",
    ),
    (
        "github_token",
        re2.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        "a GitHub token",
    ),
    ("gitlab_token", re2.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"), "a GitLab token"),
    ("slack_token", re2.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), "a Slack token"),
    ("stripe_key", re2.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"), "a Stripe key"),
    (
        "google_api_key",
        re2.compile(r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)"),
        "a Google API key",
    ),
    (
        "openai_key",
        re2.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),
        "an OpenAI/Anthropic-style API key",
    ),
    ("agentplane_key", re2.compile(r"\bapk_[A-Za-z0-9_-]{20,}\b"), "an Agentplane API key"),
    (
        "jwt",
        re2.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        "a JSON Web Token",
    ),
    (
        "url_password",
        re2.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:([^\s:/@]{1,128})@"),
        "a password in a URL",
    ),
    (
        "generic_secret",
        re2.compile(
            r"(?i)\b(?:api[_-]?key|secret|token|password|passwd)\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9_\-+/=.]{12,})"
        ),
        "a credential assigned in text",
    ),
]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def find_emails(text: str) -> Iterator[Hit]:
    for m in EMAIL.finditer(text):
        yield Hit(
            D.DETECTOR_EMAIL, "email", D.SEVERITY_MEDIUM, m.start(), m.end(), "an e-mail address"
        )


class Truncated(Exception):
    """A hit stream stopped before the end of the content: from `at` on it was not scanned."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


def find_phones(text: str) -> Iterator[Hit]:
    matcher = phonenumbers.PhoneNumberMatcher(
        text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID, max_tries=PHONE_MAX_TRIES
    )
    last_end = 0
    for m in matcher:
        last_end = m.end
        yield Hit(D.DETECTOR_PHONE, "phone", D.SEVERITY_MEDIUM, m.start, m.end, "a phone number")
    # The matcher ends quietly once max_tries candidates have failed, without saying where;
    # from its last number on, the content counts as not scanned.
    if matcher._max_tries <= 0:
        raise Truncated(last_end)


def find_cards(text: str) -> Iterator[Hit]:
    for m in CARD.finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield Hit(
                D.DETECTOR_CARD_NUMBER,
                "card_number",
                D.SEVERITY_HIGH,
                m.start(),
                m.end(),
                "a payment card number (passes the Luhn check)",
            )


def _secret_finder(name: str, pattern: re2._Regexp, what: str) -> Callable[[str], Iterator[Hit]]:
    def find(text: str) -> Iterator[Hit]:
        for m in pattern.finditer(text):
            start, end = (m.start(1), m.end(1)) if pattern.groups else (m.start(), m.end())
            yield Hit(D.DETECTOR_SECRET, name, D.SEVERITY_CRITICAL, start, end, what)

    return find


# Per detector, its hit streams (each in content order) and how many hits to read from each.
FINDERS: dict[int, list[tuple[Callable[[str], Iterator[Hit]], int]]] = {
    D.DETECTOR_EMAIL: [(find_emails, MAX_HITS)],
    D.DETECTOR_PHONE: [(find_phones, PHONE_MAX_HITS)],
    D.DETECTOR_CARD_NUMBER: [(find_cards, MAX_HITS)],
    D.DETECTOR_SECRET: [(_secret_finder(*secret), MAX_HITS) for secret in SECRETS],
}


@dataclass(frozen=True, slots=True)
class Scan:
    hits: list[Hit] = field(default_factory=list)  # in content order, at most the limit
    truncated: bool = False  # hits were left out
    # Content from here on may hold hits that were left out (its length when none were).
    unreported_from: int = 0


def run(text: str, detectors: list[int], limit: int = MAX_FINDINGS) -> Scan:
    """Hits of the detectors asked for, in content order; where two overlap, the more severe
    one is kept (a card number is not also a phone number). At most `limit` hits: past it, or
    where a pattern stopped at its own limit, the scan is truncated."""
    hits: list[Hit] = []
    cut = len(text)  # a pattern that stopped early left hits from here on unread
    for detector in detectors:
        for find, most in FINDERS.get(detector, ()):
            try:
                for hit in find(text):
                    if most == 0:
                        raise Truncated(hit.start)
                    hits.append(hit)
                    most -= 1
            except Truncated as stopped:
                cut = min(cut, stopped.at)
    kept = [hit for hit in without_overlaps(hits) if hit.start < cut]
    if cut == len(text) and len(kept) <= limit:
        return Scan(kept, False, len(text))
    kept = kept[:limit]
    return Scan(kept, True, kept[-1].end if kept else 0)


def without_overlaps(hits: list[Hit]) -> list[Hit]:
    """`hits` less each one that overlaps a hit before it in (severity descending, start,
    longest first) order, in content order. Kept hits never overlap, so one severity at a time
    a sweep by start finds overlaps with its own kept hits (only the last can overlap) and a
    binary search finds them among the kept hits of higher severities: O(n log n)."""
    kept: list[Hit] = []  # kept hits of the severities done so far, by start
    by_severity = sorted(hits, key=lambda h: (-h.severity, h.start, h.start - h.end))
    for _, group in itertools.groupby(by_severity, key=lambda h: h.severity):
        starts = [k.start for k in kept]
        added: list[Hit] = []
        for hit in group:
            if added and added[-1].end > hit.start:
                continue
            # The last kept hit that starts before this one ends: the only one that can overlap.
            before = bisect.bisect_left(starts, hit.end) - 1
            if before >= 0 and kept[before].end > hit.start:
                continue
            added.append(hit)
        kept = list(heapq.merge(kept, added, key=lambda h: h.start))
    return kept


def mask(text: str) -> str:
    """Most characters masked, keeping structure: j***@e******.com, ************1111."""
    if "@" in text and "." in text.rsplit("@", 1)[1]:
        local, domain = text.rsplit("@", 1)
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}{'*' * (len(local) - 1)}@{host[:1]}{'*' * (len(host) - 1)}.{tld}"
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 12 and digits >= len(text) * 0.7:  # card numbers: the last four stay
        seen, out = 0, []
        for ch in reversed(text):
            if ch.isdigit():
                seen += 1
                out.append(ch if seen <= 4 else "*")
            else:
                out.append(ch)
        return "".join(reversed(out))
    if digits >= 7:  # phone numbers: the last two digits stay
        seen, out = 0, []
        for ch in reversed(text):
            if ch.isdigit():
                seen += 1
                out.append(ch if seen <= 2 else "*")
            else:
                out.append(ch)
        return "".join(reversed(out))
    keep = 4 if len(text) >= 16 else 1
    return text[:keep] + "*" * min(len(text) - keep, 32)


def redact(text: str, spans: list[tuple[int, int]], masked_from: int | None = None) -> str:
    """`text` with every character of each span, and of everything from `masked_from` on,
    replaced by "*"."""
    if masked_from is not None and masked_from < len(text):
        spans = [*spans, (masked_from, len(text))]
    if not spans:
        return text
    out, last = [], 0
    for start, end in sorted(spans):
        start = max(start, last)
        if start >= end:
            continue
        out.append(text[last:start])
        out.append("*" * (end - start))
        last = end
    out.append(text[last:])
    return "".join(out)


def byte_offsets(text: str, positions: list[int]) -> dict[int, int]:
    """Character positions to UTF-8 byte offsets."""
    if text.isascii():
        return {p: p for p in positions}
    result: dict[int, int] = {}
    last = offset = 0
    for p in sorted(set(positions)):  # one pass over the text, not one prefix per position
        offset += len(text[last:p].encode("utf-8"))
        result[p] = offset
        last = p
    return result
