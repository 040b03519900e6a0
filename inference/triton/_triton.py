"""Plumbing shared by the Python-backend models: parameters, tensors, per-request errors.

Triton's contract: ``execute(requests)`` returns exactly one response per
request, in order. :func:`respond_each` keeps it: a request whose input is bad
gets an INVALID_ARG error response, a request that hits a bug an INTERNAL one,
and neither affects the other requests of the call. Error messages start with
a stable code (``invalid_image``, ``invalid_text``, ``internal``).

Without ``dynamic_batching`` in the config, Triton hands requests over one at
a time; each request carries a whole batch (the worker's budget batch), which
the pipelines pad once.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from sluicegate.inference.manifest import verify_model
from sluicegate.inference.pipelines.onnx import use_providers
from sluicegate.inference.triton.params import version_parameters

__all__ = [
    "RequestError",
    "check_numpy",
    "error_response",
    "float_tensor",
    "input_items",
    "model_parameters",
    "prepare_model",
    "respond_each",
    "string_tensor",
    "texts_from",
    "version_parameters",
]


class RequestError(ValueError):
    """One request's input is unusable; answered with INVALID_ARG, never retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def check_numpy() -> None:
    """Refuse to load under numpy 2.

    The Triton 2.51 stub built against numpy 1 answers with the right output
    shapes and zero bytes of data under numpy 2, silently; failing the model
    load turns that into a startup error that names the fix.
    """
    major = int(np.__version__.split(".", 1)[0])
    if major >= 2:
        raise RuntimeError(
            f"numpy {np.__version__} in the Triton Python backend environment; "
            "the stub needs numpy<2: `.venv/bin/pip install 'numpy<2'`"
        )


def prepare_model(args: Mapping[str, str]) -> dict[str, str]:
    """Everything a model's ``initialize`` does before building its pipeline.

    Refuses to load (raises) under numpy 2 or when an artifact differs from the
    repository manifest's sha256; selects the config's ONNX Runtime providers;
    returns the parameters with ``$version/`` resolved to the version folder.

    Triton gives every version of a model the one config.pbtxt, so a
    parameter ``v<N>.<key>`` overrides ``<key>`` for version N only (the
    repository builder writes each version's weights and precision that way).
    """
    check_numpy()
    model_dir = Path(args["model_repository"])
    verify_model(model_dir.parent, args["model_name"])
    version = str(args["model_version"])
    params = version_parameters(model_parameters(args), version)
    version_dir = f"{model_dir / version}/"
    params = {k: v.replace("$version/", version_dir) for k, v in params.items()}
    if providers := params.get("execution_providers"):
        use_providers(providers.split(","))
    return params


def model_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The config.pbtxt ``parameters`` as a plain dict of strings."""
    config = json.loads(args["model_config"])
    params = config.get("parameters", {})
    return {key: str(value["string_value"]) for key, value in params.items()}


def input_items(request: Any, name: str) -> list[bytes]:
    """The batch of a TYPE_STRING input with dims [1], one bytes object per item."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise RequestError("invalid_request", f"input {name!r} is missing")
    array = tensor.as_numpy()
    return [bytes(item) for item in array.reshape(-1)]


def texts_from(items: Sequence[bytes], *, name: str) -> list[str]:
    """UTF-8 decode every item; a bad item fails the request, naming its index."""
    texts: list[str] = []
    for index, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(
                "invalid_text", f"{name} item {index} of {len(items)} is not UTF-8: {exc}"
            ) from exc
    return texts


def string_tensor(name: str, values: Sequence[str]) -> Any:
    """A [N, 1] TYPE_STRING output tensor of UTF-8 encoded `values`."""
    array = np.array([v.encode("utf-8") for v in values], dtype=np.object_).reshape(-1, 1)
    return pb_utils.Tensor(name, array)


def float_tensor(name: str, values: npt.ArrayLike) -> Any:
    """A [N, 1] TYPE_FP32 output tensor."""
    return pb_utils.Tensor(name, np.asarray(values, dtype=np.float32).reshape(-1, 1))


def error_response(code: int, message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def respond_each(requests: Sequence[Any], handle: Callable[[Any], Any]) -> list[Any]:
    """``handle`` each request; exactly one response per request, same order.

    A :class:`RequestError` becomes that request's INVALID_ARG response; any
    other exception (a bug, an ONNX Runtime failure) its INTERNAL response,
    logged with the traceback. The other requests are unaffected.
    """
    responses: list[Any] = []
    for request in requests:
        try:
            responses.append(handle(request))
        except RequestError as exc:
            responses.append(error_response(pb_utils.TritonError.INVALID_ARG, str(exc)))
        except Exception as exc:
            pb_utils.Logger.log_error(traceback.format_exc())
            responses.append(
                error_response(
                    pb_utils.TritonError.INTERNAL, f"internal: {type(exc).__name__}: {exc}"
                )
            )
    if len(responses) != len(requests):  # the contract; cheap to state
        raise AssertionError(f"{len(responses)} responses for {len(requests)} requests")
    return responses
