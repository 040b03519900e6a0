"""The result builder the workers and the router share."""

from __future__ import annotations

from sluicegate.runtime.results import ResultBuilder, router_label, total_ms
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import InferenceRequest, Status, Timings
from sluicegate.workers.answers import Answers


def test_a_worker_result_carries_its_labels_and_the_total_time() -> None:
    builder = ResultBuilder(worker="w1", model="text-embed", pool="cpu", model_version="3")
    result = builder.result("r1", Status.OK, outputs={"x": [1]}, created_ms=1)
    assert (result.model, result.pool, result.worker, result.model_version) == (
        "text-embed",
        "cpu",
        "w1",
        "3",
    )
    assert result.outputs == {"x": [1]} and result.error is None
    assert result.timings.total_ms == float(result.produced_ms - 1)


def test_a_router_failure_names_the_requests_model_and_the_retry() -> None:
    builder = ResultBuilder(worker=router_label())
    result = builder.failure(
        "r2",
        model="ocr",
        status=Status.REJECTED,
        code=ErrorCode.OVER_QUOTA,
        message="slow down",
        retry_after_s=1.5,
    )
    assert result.model == "ocr" and result.pool == "" and result.worker.startswith("router:")
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.retry_after_s) == (
        "over_quota",
        "slow down",
        1.5,
    )
    assert type(result.error.code) is str  # plain string on the wire
    assert result.timings.total_ms is None  # no created_ms


def test_explicit_timings_are_kept() -> None:
    timings = Timings(queue_ms=1.0, compute_ms=2.0, batch_size=4, total_ms=9.0)
    result = ResultBuilder(worker="w").result("r", Status.OK, timings=timings)
    assert result.timings == timings


def test_the_workers_answers_build_through_it() -> None:
    answers = Answers(model="text-embed", pool="cpu", worker="w1", model_version="2")
    request = InferenceRequest(request_id="r3", model="text-embed", texts=["a"], created_ms=5)
    result = answers.failure(request, Status.REJECTED, ErrorCode.CANCELLED, "gone")
    assert (result.request_id, result.model, result.pool, result.worker) == (
        "r3",
        "text-embed",
        "cpu",
        "w1",
    )
    assert result.model_version == "2" and result.timings.total_ms is not None
    undecodable = answers.undecodable("r4", ErrorCode.SCHEMA, "bad")
    assert undecodable.status is Status.ERROR and undecodable.timings.total_ms is None
    assert total_ms(request) is not None
