"""A whole poll admitted at once (`admit_all`: one tokenizer call) answers as `admit` does alone."""

from __future__ import annotations

import msgpack
import pytest

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import WireLimits, encode
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.errors import WireError
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.admission import Admitted, admit, admit_all

COUNTER = TokenCounter()
LIMITS = WireLimits(max_text_chars=2000)
SERVING = lookup("text-embed")


def request(rid: str, texts: list[str], model: str = "text-embed") -> bytes:
    return encode(InferenceRequest(request_id=rid, model=model, texts=texts))


POLL: list[bytes | None] = [
    request("a", ["a short one"]),
    b"\xc1 not msgpack",
    request("b", ["a second one, a little longer than the first"]),
    request("c", ["x" * 2001]),  # over max_text_chars
    request("two", ["one text", "too many"]),  # text-embed takes one
    request("d", ["wrong topic"], model="ocr"),
    msgpack.packb({"request_id": "e", "model": "text-embed", "priority": 99}),
    request("f", []),  # no text: check_inputs refuses it
    None,
    request("g", ["word " * 399]),  # truncated at the model's 256 tokens
]


def alone(value: bytes | None) -> Admitted | WireError:
    try:
        return admit(value, [], serving=SERVING, counter=COUNTER, limits=LIMITS)
    except WireError as exc:
        return exc


def test_a_poll_gets_the_outcome_each_record_gets_alone() -> None:
    together = admit_all(
        [(value, []) for value in POLL], serving=SERVING, counter=COUNTER, limits=LIMITS
    )
    assert len(together) == len(POLL)
    for value, got in zip(POLL, together, strict=True):
        want = alone(value)
        if isinstance(want, WireError):
            assert isinstance(got, WireError), got
            assert (type(got), got.code, str(got)) == (type(want), want.code, str(want))
        else:
            assert isinstance(got, Admitted), got
            assert (got.request, got.cost, got.inputs) == (want.request, want.cost, want.inputs)
    admitted = [o for o in together if isinstance(o, Admitted)]
    assert [o.request.request_id for o in admitted] == ["a", "b", "g"]
    a, b, g = (o.cost.tokens for o in admitted)
    assert a < b == COUNTER.count(admitted[1].request.texts)[0]
    assert g == 256


@pytest.mark.parametrize("poll", [[], [b"\xc1"], [None, None]])
def test_a_poll_without_texts_to_count_still_answers_each_record(poll: list[bytes | None]) -> None:
    outcomes = admit_all([(v, []) for v in poll], serving=SERVING, counter=COUNTER)
    assert len(outcomes) == len(poll) and all(isinstance(o, WireError) for o in outcomes)
