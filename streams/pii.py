"""PII masking: done by the router before a request is forwarded, logged or traced.

Each tenant has a policy: which kinds of PII to look for (built-in patterns
for emails, phone numbers, user ids and national id formats, plus the
tenant's own regexes) and what to put in their place: a keyed hash
(`[pii.email.1f3a9c0b2d4e]`, the same value always gives the same token under one
key, so joins and dedupe still work, but the value cannot be read back
without the key) or a fixed `[EMAIL]`-style redaction. Texts and string
parameters are masked; image pixels are not inspected.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sluicegate.schemas.models import InferenceRequest, ParamValue

PiiKind = Literal["email", "phone", "user_id", "national_id", "card"]

# Order matters: the more specific formats run first so that, say, an SSN is
# not half-eaten by the phone pattern.
BUILTIN: dict[PiiKind, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"),
    # US SSN, UK National Insurance number, French NIR (social security number).
    "national_id": re.compile(
        r"\b\d{3}-\d{2}-\d{4}\b"
        r"|\b[A-CEGHJ-PR-TSTW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
        r"|\b[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3}(?: ?\d{2})?\b"
    ),
    "card": re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b"),
    # Labelled user ids ("user id: u-88123", "customer #4471", "uid=abc_12") and
    # prefixed ids ("usr_7Hk2p9Qa").
    "user_id": re.compile(
        r"\b(?:user|customer|account|member|uid)(?:[ _-]?id)?\s*[:=#]\s*[A-Za-z0-9_\-]{3,}"
        r"|\busr_[A-Za-z0-9]{6,}\b",
        re.IGNORECASE,
    ),
    # International or national numbers with separators: +44 20 7946 0958,
    # (415) 555-0132, 06 12 34 56 78, 415.555.0132.
    "phone": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\d{2,4}[ .\-])"
        r"\d{2,4}(?:[ .\-]\d{2,4}){1,3}(?!\w)"
    ),
}


# A cheap necessary condition of each built-in kind, tried before the pattern itself:
# a text the screen does not match cannot match the kind's pattern, so most texts skip
# the expensive patterns. Keep each screen implied by its pattern when editing BUILTIN
# (tests/unit/test_pii.py checks every kind's examples pass their screen).
SCREEN: dict[PiiKind, re.Pattern[str]] = {
    "email": re.compile("@"),
    # SSN 123-45-6789, NI AB 12 34 56 C, NIR 1 84 12 ...: two digit pairs, at most a
    # space or dash between them.
    "national_id": re.compile(r"\d\d[ -]?\d\d"),
    "card": re.compile(r"\d{4}"),
    "user_id": re.compile(r"user|customer|account|member|uid|usr_", re.IGNORECASE),
    # Every number has a group of 2-4 digits, a separator and another such group.
    "phone": re.compile(r"\d\d[ .\-]\d\d"),
}


_DATE_OR_TIME = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _plausible(kind: str, value: str) -> bool:
    """Second look at a match: a phone number has 7-15 digits and is not a date."""
    if kind != "phone":
        return True
    digits = sum(ch.isdigit() for ch in value)
    return 7 <= digits <= 15 and not _DATE_OR_TIME.fullmatch(value.strip())


class PiiPolicy(BaseModel):
    """One tenant's masking policy."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["hash", "redact", "off"] = "hash"
    kinds: tuple[PiiKind, ...] = ("email", "national_id", "card", "user_id", "phone")
    # The tenant's own patterns: name -> regex; run after the built-in kinds.
    patterns: dict[str, str] = Field(default_factory=dict)
    mask_parameters: bool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"PII pattern {name!r} is not a valid regex: {exc}") from None
        return value


class PiiSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Key of the masking hash; set SLUICEGATE_PII__KEY in production.
    key: SecretStr = SecretStr("sluicegate-local-pii-key")
    default: PiiPolicy = PiiPolicy()
    tenants: dict[str, PiiPolicy] = Field(default_factory=dict)


# (kind, its screen or None for a tenant's own pattern, the pattern)
_Kind = tuple[str, re.Pattern[str] | None, re.Pattern[str]]


@dataclass(frozen=True, kw_only=True)
class Masked:
    request: InferenceRequest
    # How many values of each kind were replaced (for metrics; never the values).
    found: dict[str, int]


class PiiMasker:
    """Masks requests by their tenant's policy. Pure and thread-safe."""

    def __init__(self, *, settings: PiiSettings | None = None) -> None:
        self._settings = settings or PiiSettings()
        self._key = self._settings.key.get_secret_value().encode()
        self._compiled: dict[str, list[_Kind]] = {}

    def _patterns(self, tenant: str) -> tuple[PiiPolicy, list[_Kind]]:
        policy = self._settings.tenants.get(tenant, self._settings.default)
        if tenant not in self._compiled:
            own: list[_Kind] = [(name, None, re.compile(p)) for name, p in policy.patterns.items()]
            builtin: list[_Kind] = [(k, SCREEN[k], BUILTIN[k]) for k in policy.kinds]
            self._compiled[tenant] = builtin + own
        return policy, self._compiled[tenant]

    def token(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:12]
        # No ':' '=' '#' '@' in a token, so no pattern matches a token again.
        return f"[pii.{kind}.{digest}]"

    def mask_text(self, text: str, *, tenant: str = "default") -> tuple[str, Counter[str]]:
        found: dict[str, int] = {}
        return self._mask_text(text, tenant, found), Counter(found)

    def _mask_text(self, text: str, tenant: str, found: dict[str, int]) -> str:
        """`text` masked by `tenant`'s policy; what was replaced is counted into `found`."""
        policy, patterns = self._patterns(tenant)
        if policy.mode == "off":
            return text
        for kind, screen, pattern in patterns:
            if screen is not None and screen.search(text) is None:
                continue  # the pattern cannot match
            if pattern.search(text) is None:
                continue  # the common case: no replacer to build, no new string
            text = pattern.sub(self._replacer(kind, policy, found), text)
        return text

    def _replacer(
        self, kind: str, policy: PiiPolicy, found: dict[str, int]
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            if not _plausible(kind, value):
                return value
            found[kind] = found.get(kind, 0) + 1
            if policy.mode == "redact":
                return f"[{kind.upper()}]"
            return self.token(kind, value)

        return replace

    def mask(self, request: InferenceRequest) -> Masked:
        """`request` with its texts (and string parameters) masked; the same object when
        nothing was found."""
        tenant = request.tenant
        policy, _ = self._patterns(tenant)
        found: dict[str, int] = {}
        texts = [self._mask_text(text, tenant, found) for text in request.texts]
        parameters: dict[str, ParamValue] = dict(request.parameters)
        if policy.mask_parameters:
            for name, value in request.parameters.items():
                if isinstance(value, str):
                    parameters[name] = self._mask_text(value, tenant, found)
        if not found:
            return Masked(request=request, found={})
        update = {"texts": texts, "parameters": parameters}
        return Masked(request=request.model_copy(update=update), found=found)
