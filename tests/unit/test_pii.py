"""PII masking on realistic text: what is masked, what is left alone, per-tenant policy."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from sluicegate.schemas.models import InferenceRequest
from sluicegate.streams.pii import BUILTIN, SCREEN, PiiMasker, PiiPolicy, PiiSettings

TICKET = (
    "Ticket #4471 from Maria Keller <maria.keller@firma-beispiel.de>, tel. +49 30 1234 5678, "
    "customer id: MK-20931. She says her card 4111 1111 1111 1111 was charged twice on "
    "2024-05-01 for order 77812 (total 318.40 EUR). SSN on file 078-05-1120; "
    "call back (415) 555-0132 after 10:30. Account ref usr_7Hk2p9Qa."
)
SECRETS = [
    "maria.keller@firma-beispiel.de",
    "+49 30 1234 5678",
    "MK-20931",
    "4111 1111 1111 1111",
    "078-05-1120",
    "(415) 555-0132",
    "usr_7Hk2p9Qa",
]


def test_masks_every_kind_and_keeps_the_rest_readable() -> None:
    masked, found = PiiMasker().mask_text(TICKET)
    for secret in SECRETS:
        assert secret not in masked, secret
    for kept in ("Maria Keller", "2024-05-01", "order 77812", "318.40 EUR", "10:30", "#4471"):
        assert kept in masked, kept
    assert found == {"email": 1, "phone": 2, "user_id": 2, "card": 1, "national_id": 1}


def test_keyed_hash_is_stable_per_key_and_differs_across_keys() -> None:
    one, _ = PiiMasker().mask_text("write to a@b.example")
    again, _ = PiiMasker().mask_text("write to a@b.example")
    other_key = PiiMasker(settings=PiiSettings(key=SecretStr("another")))
    other, _ = other_key.mask_text("write to a@b.example")
    assert one == again and one != other
    assert one.startswith("write to [pii.email.") and len(one) == len("write to [pii.email.]") + 12


def test_tenant_policies_redact_skip_and_add_patterns() -> None:
    settings = PiiSettings(
        tenants={
            "strict": PiiPolicy(mode="redact", patterns={"iban": r"\bDE\d{20}\b"}),
            "internal": PiiPolicy(mode="off"),
        }
    )
    masker = PiiMasker(settings=settings)
    text = "IBAN DE89370400440532013000, mail x@y.example"
    strict, _ = masker.mask_text(text, tenant="strict")
    assert strict == "IBAN [IBAN], mail [EMAIL]"
    assert masker.mask_text(text, tenant="internal")[0] == text
    assert "DE89370400440532013000" in masker.mask_text(text, tenant="other")[0]


def test_mask_request_covers_texts_and_string_parameters() -> None:
    request = InferenceRequest(
        request_id="r1",
        model="text-embed",
        texts=["mail me: jo@example.com"],
        parameters={"note": "ssn 078-05-1120", "k": 3},
    )
    masked = PiiMasker().mask(request)
    assert "jo@example.com" not in masked.request.texts[0]
    assert "078-05-1120" not in str(masked.request.parameters["note"])
    assert masked.request.parameters["k"] == 3
    assert masked.found == {"email": 1, "national_id": 1}
    clean = InferenceRequest(request_id="r2", model="text-embed", texts=["nothing here"])
    assert PiiMasker().mask(clean).request is clean


def test_each_kinds_screen_passes_whatever_its_pattern_matches() -> None:
    """The screens only skip texts a pattern cannot match: every match passes its screen."""
    assert SCREEN.keys() == BUILTIN.keys()
    samples = [
        TICKET,
        "AB 12 34 56 C",
        "1 84 12 76 451 089 46",
        "uid=abc_12",
        "member-id # 9aZ",
        "USR_ABCDEFG",
        "415.555.0132 or 06 12 34 56 78",
        "4111-1111-1111-1111",
        "x@y.example",
    ]
    matched = set()
    for text in samples:
        for kind, pattern in BUILTIN.items():
            for match in pattern.finditer(text):
                matched.add(kind)
                assert SCREEN[kind].search(match.group(0)), (kind, match.group(0))
    assert matched == set(BUILTIN)


def _unscreened(masker: PiiMasker, text: str) -> tuple[str, Counter[str]]:
    """Masking as it was before the screens: every pattern, in order."""
    counts = Counter[str]()
    for kind, pattern in BUILTIN.items():
        text = pattern.sub(masker._replacer(kind, PiiPolicy(), counts), text)
    return text, counts


def test_masking_with_screens_equals_masking_without() -> None:
    """Skipping the patterns a screen rules out changes no text and no count."""
    texts = [TICKET, "Order 17: two boxes, deliver by Friday.", "no digits at all", "a@b.example"]
    masker = PiiMasker()
    for text in texts:
        assert masker.mask_text(text) == _unscreened(masker, text)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "1",
                "23",
                "456",
                "7890",
                " ",
                "-",
                ".",
                "(",
                ")",
                "+",
                "@",
                "x",
                "ab",
                "AB",
                "usr_",
                "uid",
                "=",
                ":",
                "#",
                "Customer",
                "id",
                "example",
                ".org",
                "_",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_screens_never_change_a_mask(text: str) -> None:
    masker = PiiMasker()
    assert masker.mask_text(text) == _unscreened(masker, text)
