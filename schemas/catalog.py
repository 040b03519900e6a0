"""The models sluicegate serves and what each request to them must carry.

A model declares its inputs and how tokens and pixels combine into the one
cost the batcher budgets: `cost = pixels + tokens * pixels_per_token` for a
pixel-priced model, `tokens` for a token-priced one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import InvalidInputError, UnknownModelError
from .models import InferenceRequest

CostUnit = Literal["tokens", "pixels"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    description: str
    texts: int  # texts a request must carry
    images: int  # images a request must carry
    cost_unit: CostUnit
    # For pixel-priced models with text too: what one token weighs in pixels.
    pixels_per_token: int = 0
    version: str = "1"

    def cost(self, *, tokens: int, pixels: int) -> int:
        if self.cost_unit == "tokens":
            return tokens
        return pixels + tokens * self.pixels_per_token

    def check_inputs(self, request: InferenceRequest) -> None:
        """Raise `InvalidInputError` naming what `request` lacks for this model."""
        if len(request.texts) != self.texts or len(request.images) != self.images:
            raise InvalidInputError(
                f"model {self.name!r} takes {self.texts} text(s) and {self.images} image(s); "
                f"the request has {len(request.texts)} and {len(request.images)}"
            )
        for i, text in enumerate(request.texts):
            if not text.strip():
                raise InvalidInputError(f"texts[{i}] is empty; send some text")


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="text-embed",
            description="all-MiniLM-L6-v2 sentence embedding (384-d, L2-normalised)",
            texts=1,
            images=0,
            cost_unit="tokens",
        ),
        ModelSpec(
            name="ocr",
            description="PP-OCRv4 text detection + recognition",
            texts=0,
            images=1,
            cost_unit="pixels",
        ),
        ModelSpec(
            name="doc-match",
            description="OCR an image, embed the OCR text and a query text, cosine similarity",
            texts=1,
            images=1,
            cost_unit="pixels",
            # The image dominates; a 256-token query weighs like a 256x256 crop.
            pixels_per_token=256,
        ),
    )
}


def lookup(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(CATALOG))}"
        ) from None
