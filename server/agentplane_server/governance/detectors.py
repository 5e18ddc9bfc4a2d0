"""Built-in ValidateOutput detectors: e-mail addresses, phone numbers, payment card numbers
(with the Luhn check) and secrets. Offsets are UTF-8 byte offsets into the content.

Phone numbers use `phonenumbers` (Google's libphonenumber rules: it finds national and
international formats and tells real numbers from other digit runs). E-mail, card and secret
patterns are regular expressions written here: the maintained secret scanners (detect-secrets,
trufflehog) scan files line by line behind plugin registries and do not report offsets into a
string; the patterns below are the well-known token formats of the major providers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from agentplane.governance.v1 import decision_pb2

D = decision_pb2
PHONE_REGION = "US"  # numbers without a country code are read as North American
PHONE_MAX_TRIES = 2000  # bounds the matcher's work on long digit-heavy content


@dataclass(frozen=True, slots=True)
class Hit:
    detector: int
    name: str
    severity: int
    start: int  # characters
    end: int
    message: str


EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
CARD = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")
SECRETS: list[tuple[str, re.Pattern[str], str]] = [
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|$)"
        ),
        "a private key",
    ),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (
        "aws_secret_key",
        re.compile(r"(?i)aws.{0,20}secret.{0,20}?[=:\"'\s]+([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"),
        "an AWS secret access key",
    ),
    (
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        "a GitHub token",
    ),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"), "a GitLab token"),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), "a Slack token"),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"), "a Stripe key"),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), "a Google API key"),
    (
        "openai_key",
        re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),
        "an OpenAI/Anthropic-style API key",
    ),
    ("agentplane_key", re.compile(r"\bapk_[A-Za-z0-9_-]{20,}\b"), "an Agentplane API key"),
    (
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        "a JSON Web Token",
    ),
    (
        "url_password",
        re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:([^\s:/@]{1,128})@"),
        "a password in a URL",
    ),
    (
        "generic_secret",
        re.compile(
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


def find_emails(text: str) -> list[Hit]:
    return [
        Hit(D.DETECTOR_EMAIL, "email", D.SEVERITY_MEDIUM, m.start(), m.end(), "an e-mail address")
        for m in EMAIL.finditer(text)
    ]


def find_phones(text: str) -> list[Hit]:
    return [
        Hit(D.DETECTOR_PHONE, "phone", D.SEVERITY_MEDIUM, m.start, m.end, "a phone number")
        for m in phonenumbers.PhoneNumberMatcher(
            text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID, max_tries=PHONE_MAX_TRIES
        )
    ]


def find_cards(text: str) -> list[Hit]:
    hits = []
    for m in CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            hits.append(
                Hit(
                    D.DETECTOR_CARD_NUMBER,
                    "card_number",
                    D.SEVERITY_HIGH,
                    m.start(),
                    m.end(),
                    "a payment card number (passes the Luhn check)",
                )
            )
    return hits


def find_secrets(text: str) -> list[Hit]:
    hits = []
    for name, pattern, what in SECRETS:
        for m in pattern.finditer(text):
            start, end = (m.start(1), m.end(1)) if pattern.groups else (m.start(), m.end())
            hits.append(Hit(D.DETECTOR_SECRET, name, D.SEVERITY_CRITICAL, start, end, what))
    return hits


FINDERS = {
    D.DETECTOR_EMAIL: find_emails,
    D.DETECTOR_PHONE: find_phones,
    D.DETECTOR_CARD_NUMBER: find_cards,
    D.DETECTOR_SECRET: find_secrets,
}


def run(text: str, detectors: list[int]) -> list[Hit]:
    """Hits of the detectors asked for, in content order; where two overlap, the more severe
    one is kept (a card number is not also a phone number)."""
    hits: list[Hit] = []
    for detector in detectors:
        finder = FINDERS.get(detector)
        if finder is not None:
            hits.extend(finder(text))
    hits.sort(key=lambda h: (-h.severity, h.start, -(h.end - h.start)))
    kept: list[Hit] = []
    for hit in hits:
        if all(hit.end <= k.start or hit.start >= k.end for k in kept):
            kept.append(hit)
    kept.sort(key=lambda h: (h.start, h.end))
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


def redact(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with every character of each span replaced by "*"."""
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
    for p in sorted(set(positions)):
        result[p] = len(text[:p].encode("utf-8"))
    return result
