"""`sluicegate models build|variants|eval`: the Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .cli_common import console, fail
from .stack.process import StackError
from .stack.stack import LocalStack, StackSettings

__all__ = ["models_app"]

_err = Console(stderr=True)

models_app = typer.Typer(
    help="Build and inspect the Triton model repository.", no_args_is_help=True
)


@models_app.command("build")
def models_build(
    dest: Annotated[
        Path | None, typer.Option(help="Repository dir (default .cache/model-repository).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="cpu, a100 or mi200 (repeatable: configs/<target>.pbtxt for each, "
            "served with `--model-config-name <target>`; the first is the default)."
        ),
    ] = None,
    variants: Annotated[
        Path, typer.Option(help="Where `models variants` wrote the fp16/int8/bf16 ONNX files.")
    ] = Path(".cache/model-variants"),
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash every artifact against the manifest.")
    ] = False,
) -> None:
    """Generate the Triton model repository (default: the cpu target the local stack runs)."""
    from sluicegate.inference.manifest import ManifestError

    from .models.build import build_repository, verify_repository

    path = dest or LocalStack(StackSettings()).repository
    try:
        path = build_repository(
            path, targets=target or ["cpu"], variants=variants, progress=console.log
        )
        if verify:
            console.log(f"manifest verified: {', '.join(verify_repository(path))}")
    except (StackError, ManifestError) as exc:
        raise fail(str(exc)) from None
    console.print(f"model repository ready: {path}")


@models_app.command("variants")
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


@models_app.command("eval")
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
