"""`sluicegate models variants` and `sluicegate models eval` (registered on the `models` group)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["register_model_commands"]

_err = Console(stderr=True)


def register_model_commands(models_app: typer.Typer) -> None:
    models_app.command("variants")(variants)
    models_app.command("eval")(evaluate)


def variants(
    out: Annotated[Path, typer.Option(help="Where to write the variants.")] = Path(
        ".cache/model-variants"
    ),
    export_python: Annotated[
        Path, typer.Option(help="Python of the torch export venv (`make export-venv`).")
    ] = Path(".cache/export-venv/bin/python"),
) -> None:
    """Build fp32 (torch export), fp16, int8 (calibrated) and bf16 ONNX variants of each model."""
    from .models.variants.convert import VariantError, build_variants

    try:
        written = build_variants(out, export_python=export_python, progress=_err.log)
    except VariantError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    for path in written:
        typer.echo(path)


def evaluate(
    variants_dir: Annotated[
        Path, typer.Option("--variants", help="From `models variants`.")
    ] = Path(".cache/model-variants"),
    report: Annotated[Path, typer.Option(help="Markdown report to write.")] = Path(
        "models/report.md"
    ),
    texts: Annotated[int, typer.Option(help="Sentences in the embedding set.")] = 200,
    pages: Annotated[int, typer.Option(help="Rendered text lines in the OCR set.")] = 40,
    repeats: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 5,
) -> None:
    """Accuracy of every variant against fp32 and latency per batch size; writes REPORT + a PNG."""
    from .models.evaluate import EvalError, run_eval

    try:
        path = run_eval(
            variants_dir, report, texts=texts, lines=pages, repeats=repeats, progress=_err.log
        )
    except EvalError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    typer.echo(path)
