"""The three reference models on a real local Triton server, over gRPC (aio).

Builds the model repository into a temporary folder, starts ``tritonserver``
from the nvidia-pytriton wheel on free ports, and checks what each model
answers: embedding semantics and token counts, OCR accuracy on images
rendered from known strings, per-request errors for undecodable images, and
doc-match similarity. Every output's byte size is asserted non-zero: under
numpy 2 the backend stub answers with the right shapes and no data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from sluicegate.ops.models.build import MANIFEST_NAME, build_repository, weight_paths
from sluicegate.ops.samples import cer, normalise, render_page
from sluicegate.ops.stack.process import free_port, pid_alive, port_is_open
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig
from sluicegate.schemas.cost import load_tokenizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    root = tmp_path_factory.mktemp("triton")
    repository = build_repository(root / "model-repository")
    server = LocalTriton(
        TritonLocalConfig(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            repository=repository,
            state_dir=root / "state",
            cache_dir=root / "cache",
        )
    )
    server.start(timeout=180)
    pid = server.pid()
    try:
        yield server
    finally:
        assert server.stop(grace=30)
        assert not server.is_running()
        assert pid is not None and not pid_alive(pid)
        assert not port_is_open(server.config.host, server.config.grpc_port)


@pytest.fixture(scope="module")
async def client(triton: LocalTriton) -> AsyncIterator[grpcaio.InferenceServerClient]:
    c = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        yield c
    finally:
        await c.close()


def _bytes_input(name: str, items: list[bytes]) -> InferInput:
    tensor = InferInput(name, [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    return tensor


def _strings(array: npt.NDArray[np.object_] | None) -> list[str]:
    assert array is not None
    return [bytes(item).decode("utf-8") for item in array.reshape(-1)]


# (lines, font file, glyph size px, canvas w x h): a few sizes and both faces.
PAGES = [
    (
        ["Invoice 2024-117", "Total due: 342.50 EUR", "Payment within 30 days"],
        "DejaVuSerif.ttf",
        24,
        (960, 720),
    ),
    (
        ["Sluice gates control water flow.", "Gate 7 opens at 06:15"],
        "DejaVuSans.ttf",
        28,
        (1280, 720),
    ),
    (["The quick brown fox", "jumps over the lazy dog"], "DejaVuSerif.ttf", 32, (960, 720)),
    (["Order 88213 shipped", "to Rotterdam on 12 March"], "DejaVuSans.ttf", 40, (1280, 720)),
]


async def test_text_embed(client: grpcaio.InferenceServerClient) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone is playing an acoustic guitar on stage.",
        "The central bank raised interest rates by half a point.",
        "",
        "word " * 400,  # longer than the model's 256-token window
    ]
    result = await client.infer(
        "text-embed",
        [_bytes_input("TEXT", [t.encode() for t in texts])],
        model_version="1",  # the shipped int8 build (the session repository also has v2, v3)
        outputs=[InferRequestedOutput("EMBEDDING"), InferRequestedOutput("TOKENS")],
    )
    emb = result.as_numpy("EMBEDDING")
    tokens = result.as_numpy("TOKENS")
    assert emb is not None and tokens is not None
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32 and emb.nbytes > 0
    assert tokens.shape == (len(texts), 1) and tokens.dtype == np.int32 and tokens.nbytes > 0
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)

    tokenizer = load_tokenizer(weight_paths()["tokenizer"])
    expected = [len(tokenizer.encode(t).ids) for t in texts]
    assert tokens.ravel().tolist() == expected
    assert expected[3] == 2 and expected[4] == 256  # [CLS][SEP]; truncated, not padded to 128

    paraphrase = float(emb[0] @ emb[1])
    unrelated = float(emb[0] @ emb[2])
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


async def test_ocr_batch_reads_rendered_text(client: grpcaio.InferenceServerClient) -> None:
    images = [render_page(lines, font_name=f, glyph_px=s, canvas=c) for lines, f, s, c in PAGES]
    blank = render_page([], font_name="DejaVuSans.ttf", glyph_px=24, canvas=(320, 240))
    result = await client.infer("ocr", [_bytes_input("IMAGE", [*images, blank])], model_version="1")
    texts = _strings(result.as_numpy("TEXT"))
    scores = result.as_numpy("SCORE")
    lines_json = _strings(result.as_numpy("LINES"))
    assert scores is not None and scores.shape == (len(PAGES) + 1, 1) and scores.nbytes > 0

    refs = [" ".join(lines) for lines, *_ in PAGES]
    errors = sum(cer(ref, hyp) * len(ref) for ref, hyp in zip(refs, texts, strict=False))
    rate = errors / sum(map(len, refs))
    print(f"OCR CER {rate:.4f}; got {texts[:-1]!r}")
    assert rate <= 0.05, texts

    for (_, _, _, (width, height)), text, score, raw in zip(
        PAGES, texts, scores.ravel(), lines_json, strict=False
    ):
        parsed = json.loads(raw)
        assert [line["text"] for line in parsed] == text.split("\n")
        assert 0.5 <= score <= 1.0
        for line in parsed:
            assert len(line["box"]) == 4
            assert all(0 <= x <= width and 0 <= y <= height for x, y in line["box"])
    # No text: empty TEXT, SCORE 0, no lines.
    assert texts[-1] == "" and float(scores[-1, 0]) == 0.0 and json.loads(lines_json[-1]) == []


async def test_undecodable_image_fails_only_its_request(
    client: grpcaio.InferenceServerClient,
) -> None:
    good = render_page(["Gate 7 opens"], font_name="DejaVuSans.ttf", glyph_px=32, canvas=(480, 200))
    garbage = b"\x89PNG\r\n\x1a\nthis is not an image"

    outcomes = await asyncio.gather(
        client.infer("ocr", [_bytes_input("IMAGE", [good])], model_version="1"),
        client.infer("ocr", [_bytes_input("IMAGE", [garbage])], model_version="1"),
        client.infer("ocr", [_bytes_input("IMAGE", [good])], model_version="1"),
        return_exceptions=True,
    )
    ok_first, failed, ok_last = outcomes
    assert isinstance(failed, InferenceServerException)
    assert "INVALID_ARGUMENT" in str(failed.status())
    assert "invalid_image" in str(failed.message())
    for ok in (ok_first, ok_last):
        assert not isinstance(ok, BaseException), ok
        assert normalise(_strings(ok.as_numpy("TEXT"))[0]) == "Gate 7 opens"

    # Inside one request the batch fails as a whole (one response per request),
    # naming the bad item so the worker can bisect.
    with pytest.raises(InferenceServerException, match=r"invalid_image: IMAGE item 1 of 2"):
        await client.infer("ocr", [_bytes_input("IMAGE", [good, garbage])], model_version="1")
    # The model instance survived.
    again = await client.infer("ocr", [_bytes_input("IMAGE", [good])], model_version="1")
    assert normalise(_strings(again.as_numpy("TEXT"))[0]) == "Gate 7 opens"


async def test_doc_match(client: grpcaio.InferenceServerClient) -> None:
    page = render_page(
        ["Invoice 2024-117", "Total due: 342.50 EUR"],
        font_name="DejaVuSans.ttf",
        glyph_px=32,
        canvas=(960, 480),
    )
    queries = ["invoice total amount due in euros", "a recipe for chocolate chip cookies"]
    result = await client.infer(
        "doc-match",
        [_bytes_input("IMAGE", [page, page]), _bytes_input("TEXT", [q.encode() for q in queries])],
    )
    ocr_text = _strings(result.as_numpy("OCR_TEXT"))
    similarity = result.as_numpy("SIMILARITY")
    assert similarity is not None and similarity.shape == (2, 1) and similarity.nbytes > 0
    assert all("342.50" in t for t in ocr_text), ocr_text
    matching, unrelated = float(similarity[0, 0]), float(similarity[1, 0])
    print(f"doc-match similarity: matching {matching:.3f}, unrelated {unrelated:.3f}")
    assert matching > unrelated + 0.2, (matching, unrelated)


def test_build_is_idempotent(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "repo")
    manifest = repository / MANIFEST_NAME
    first = manifest.stat().st_mtime_ns
    assert build_repository(tmp_path / "repo") == repository
    assert manifest.stat().st_mtime_ns == first  # nothing rewritten
    # A missing file makes the repository stale: it is rebuilt whole.
    (repository / "ocr" / "1" / "model.py").unlink()
    build_repository(tmp_path / "repo")
    assert (repository / "ocr" / "1" / "model.py").is_file()
    # No staging leftovers (model-variants: text-embed v2's built weights).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-variants", "repo"]
