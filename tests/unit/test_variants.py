"""Version and precision placement (`workers.variants`), batch keying, and the fp32 MiniLM graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sluicegate.inference import weights
from sluicegate.inference.pipelines.embed import TextEmbedder
from sluicegate.inference.triton.params import version_parameters
from sluicegate.ops.models.build import build_repository
from sluicegate.ops.models.variants.minilm_onnx import build_minilm
from sluicegate.schemas.control import PRECISION_HEADER, VERSION_HEADER
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.batcher import BatchPolicy, BudgetBatcher
from sluicegate.workers.variants import Refused, Resolved, ServedVariants, Variant

V1 = Variant(version="1", precision="int8", triton_model="text-embed")
V2 = Variant(version="2", precision="fp32", triton_model="text-embed")
V2_HALF = Variant(version="2", precision="fp16", triton_model="text-embed-fp16", native=False)
SERVED = ServedVariants(model="text-embed", variants=[V1, V2, V2_HALF], default_version="1")


def _place(headers: dict[str, str] | None = None, **params: str | int) -> Resolved | Refused:
    request = InferenceRequest(request_id="r1", model="text-embed", texts=["hi"], parameters=params)
    hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
    return SERVED.place(request, hdrs)


def test_router_headers_pick_the_version_and_precision() -> None:
    placed = _place({VERSION_HEADER: "2", PRECISION_HEADER: "fp16"})
    assert isinstance(placed, Resolved) and placed.variant == V2_HALF and not placed.fell_back


def test_no_ask_gets_the_default_version_at_its_native_precision() -> None:
    placed = _place()
    assert isinstance(placed, Resolved) and placed.variant == V1


def test_request_pin_beats_the_router_header() -> None:
    placed = _place({VERSION_HEADER: "1"}, model_version=2, precision="fp32")
    assert isinstance(placed, Resolved) and placed.variant == V2


def test_a_version_the_pool_lacks_is_refused_never_substituted() -> None:
    placed = _place({VERSION_HEADER: "9"})
    assert isinstance(placed, Refused) and placed.code is ErrorCode.VERSION_UNAVAILABLE
    assert "1 (int8), 2 (fp32, fp16)" in str(placed)
    hostile = _place(model_version="../../etc/passwd\n")
    assert isinstance(hostile, Refused) and hostile.code is ErrorCode.VERSION_UNAVAILABLE
    assert "\n" not in str(hostile)


def test_a_pinned_precision_without_a_variant_is_refused() -> None:
    placed = _place(model_version="1", precision="fp16")
    assert isinstance(placed, Refused) and placed.code is ErrorCode.PRECISION_UNAVAILABLE


def test_the_router_preference_falls_back_to_the_native_precision_and_says_so() -> None:
    placed = _place({VERSION_HEADER: "1", PRECISION_HEADER: "fp32"})
    assert isinstance(placed, Resolved) and placed.variant == V1 and placed.fell_back == "fp32"


def test_batches_never_mix_variants() -> None:
    policy = BatchPolicy(
        max_batch_size=8, max_queue_delay_microseconds=1000, budget=1000, hard_limit=1000
    )
    batcher = BudgetBatcher[str](policy=policy, clock=lambda: 0.0)
    for i in range(6):
        variant = (V1, V2, V2_HALF)[i % 3]
        batcher.add(f"{variant.version}-{variant.precision}-{i}", cost=10, group=variant)
    batches = [batcher.next_batch(force=True) for _ in range(3)]
    assert batcher.next_batch(force=True) is None
    keys = [{item.rsplit("-", 1)[0] for item in b.items} for b in batches if b is not None]
    assert sorted(len(k) for k in keys) == [1, 1, 1] and len(keys) == 3


def test_version_parameters_override_per_version() -> None:
    params = {
        "model_path": "/a",
        "precision": "int8",
        "v2.model_path": "$version/e",
        "v2.precision": "fp32",
    }
    assert version_parameters(params, "1") == {"model_path": "/a", "precision": "int8"}
    assert version_parameters(params, "2") == {"model_path": "$version/e", "precision": "fp32"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("versions") / "repo", drill=True)


def test_cpu_repository_serves_two_versions_an_fp16_variant_and_the_drill(repo: Path) -> None:
    main = (repo / "text-embed" / "config.pbtxt").read_text()
    assert "version_policy: { specific { versions: [ 1, 2, 3 ] } }" in main
    assert '"v2.precision" value: { string_value: "fp32" }' in main
    assert '"v3.fail_fraction"' in main
    half = (repo / "text-embed-fp16" / "config.pbtxt").read_text()
    assert '"precision" value: { string_value: "fp16" }' in half and "v2." not in half
    for rel in ("text-embed/2/encoder.onnx", "text-embed-fp16/2/encoder.onnx"):
        assert (repo / rel).stat().st_size > 10_000_000
    # fp16 Linear weights (the embedding tables stay fp32): about 3/4 of the fp32 file.
    ratio = (repo / "text-embed-fp16/2/encoder.onnx").stat().st_size / (
        repo / "text-embed/2/encoder.onnx"
    ).stat().st_size
    assert 0.6 < ratio < 0.9


def test_fp32_graph_from_safetensors_agrees_with_the_shipped_int8_but_is_not_it(
    tmp_path: Path,
) -> None:
    paths = weights.weight_paths()
    model_dir = paths["tokenizer"].parent
    fp32 = build_minilm(
        model_dir / "model.safetensors", model_dir / "config.json", tmp_path / "fp32.onnx"
    )
    texts = ["The invoice is due tomorrow.", "hello", "A cat sat on the mat all afternoon."]
    int8 = TextEmbedder(model_path=paths["embed_model"], tokenizer_path=paths["tokenizer"])
    full = TextEmbedder(model_path=fp32, tokenizer_path=paths["tokenizer"])
    cosine = (int8.embed(texts).embeddings * full.embed(texts).embeddings).sum(axis=1)
    assert np.all(cosine > 0.99) and np.all(cosine < 0.99999)
