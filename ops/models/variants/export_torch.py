"""Export all-MiniLM-L6-v2 from its safetensors to an fp32 ONNX (run in the export venv).

Runs ONLY in ``.cache/export-venv`` (``make export-venv``): torch from the
package index is a CUDA build of several GB that wants numpy 2, which the
Triton Python backend in ``.venv`` cannot run with. Nothing in the package
imports this file; ``sluicegate models variants`` runs it as a subprocess.

The graph matches the int8 model the local stack ships (inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` int64 ``[batch, sequence]``; output
``last_hidden_state`` float32 ``[batch, sequence, 384]``), with dynamic batch
and sequence axes, so the pipeline's pooling stays the same for every variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel


class _Encoder(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model_dir", type=Path, help="folder with config.json + model.safetensors")
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(args.model_dir), local_files_only=True).eval()
    ids = torch.randint(1000, 2000, (2, 16), dtype=torch.int64)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    axes = {0: "batch", 1: "sequence"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            _Encoder(model),
            (ids, mask, types),
            str(args.out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "last_hidden_state": axes,
            },
            opset_version=args.opset,
            dynamo=False,  # TorchScript exporter: dynamic_axes as given, no onnxscript rewrite
        )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) with torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
