"""Real model architectures built locally as ONNX graphs with random weights.

Nothing is downloaded: every model is generated with ``onnx.helper`` from a seeded random number
generator, so the compute graph (layer shapes, operator mix, FLOPs, parameter count) is that of the real
architecture while the weights are noise.  Latency and throughput of fp32 inference do not depend on the
weight values, so these graphs measure what the trained models would cost.  Weights use He/Xavier scaling
so activations stay in a normal floating-point range (no inf/NaN/denormal slow paths).

=================  =================  ===============================================================
``--model-name``   record ``model``   architecture
=================  =================  ===============================================================
resnet             ``resnet50``       ResNet-50 v1.5 (bottleneck [3,4,6,3], 224x224x3, 1000 classes,
                                      BatchNorm folded into the convolutions as inference exporters do)
mobilenet          ``mobilenet-v2``   MobileNet-V2 1.0 224 (inverted residuals, depthwise convs, ReLU6)
transformer        ``bert-mini``      BERT-mini encoder (4 layers, hidden 256, 4 heads, FFN 1024,
                                      sequence 128, WordPiece vocabulary 30522; no attention mask)
resnet-tiny        ``resnet-tiny``    same block structure, [1,1,1,1] blocks, widths /8, 32x32 input
mobilenet-tiny     ``mobilenet-tiny`` MobileNet-V2 0.25 width, 32x32 input, 10 classes
transformer-tiny   ``transformer-tiny`` 1 encoder layer, hidden 64, 2 heads, sequence 16
=================  =================  ===============================================================

The ``*-tiny`` models exist for tests and smoke runs (sub-millisecond inference); the record names keep
them apart from the real architectures, so they never mix with imported MLPerf data.

Every model has a dynamic batch dimension (``N``) on its single input.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Bump when a builder changes, so cached files are rebuilt.
ZOO_VERSION = "1"
OPSET = 17


@dataclass
class ModelSpec:
    name: str  # record model name
    family: str  # cnn | transformer (chooses the int8 method)
    builder: Callable[[], onnx.ModelProto]
    description: str
    aliases: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------ graph DSL
class _G:
    """Tiny graph builder: keeps nodes and initialisers, names tensors uniquely."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}_{self.n}"

    def const(self, arr: np.ndarray, p: str = "w") -> str:
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    # layers ---------------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, gain: float = 1.0) -> str:
        fan_in = cin // groups * k * k
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * gain * math.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.01).astype(np.float32)
        pad = k // 2
        return self.op(
            "Conv",
            [x, self.const(w), self.const(b, "b")],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def relu6(self, x: str) -> str:
        return self.op(
            "Clip", [x, self.const(np.array(0.0, np.float32), "lo"), self.const(np.array(6.0, np.float32), "hi")]
        )

    def linear(self, x: str, din: int, dout: int) -> str:
        w = (self.rng.standard_normal((din, dout)) * math.sqrt(1.0 / din)).astype(np.float32)
        b = (self.rng.standard_normal(dout) * 0.01).astype(np.float32)
        return self.op("Add", [self.op("MatMul", [x, self.const(w)]), self.const(b, "b")])

    def gemm_head(self, x: str, din: int, classes: int) -> str:
        w = (self.rng.standard_normal((classes, din)) * math.sqrt(1.0 / din)).astype(np.float32)
        b = np.zeros(classes, np.float32)
        return self.op("Gemm", [x, self.const(w), self.const(b, "b")], transB=1)

    def layernorm(self, x: str, h: int) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.const(np.ones(h, np.float32), "g"), self.const(np.zeros(h, np.float32), "beta")],
            axis=-1,
            epsilon=1e-12,
        )

    def model(self, inp: onnx.ValueInfoProto, out: str, out_shape: list, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, [inp], [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], self.inits
        )
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="synergai-profiler",
            producer_version=ZOO_VERSION,
        )
        m.ir_version = 8
        m.doc_string = f"{name}: random weights (synergai profiler zoo v{ZOO_VERSION})"
        return m


# ------------------------------------------------------------------------------------------- ResNet
def _resnet(
    name: str, blocks: tuple[int, ...], widths: tuple[int, ...], stem: int, size: int, classes: int, seed: int
) -> onnx.ModelProto:
    g = _G(seed)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    x = g.relu(g.conv("input", 3, stem, 7, 2))
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = stem
    for stage, (nb, w) in enumerate(zip(blocks, widths)):
        for i in range(nb):
            stride = 2 if (i == 0 and stage > 0) else 1
            cout = w * 4
            y = g.relu(g.conv(x, cin, w, 1))
            y = g.relu(g.conv(y, w, w, 3, stride))  # v1.5: stride on the 3x3 conv
            y = g.conv(y, w, cout, 1, gain=0.2)  # small last-layer gain keeps the residual sum bounded
            sc = g.conv(x, cin, cout, 1, stride) if (i == 0) else x
            x = g.relu(g.op("Add", [y, sc]))
            cin = cout
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    out = g.gemm_head(x, cin, classes)
    return g.model(inp, out, ["N", classes], name)


def resnet50() -> onnx.ModelProto:
    return _resnet("resnet50", (3, 4, 6, 3), (64, 128, 256, 512), 64, 224, 1000, seed=50)


def resnet_tiny() -> onnx.ModelProto:
    return _resnet("resnet-tiny", (1, 1, 1, 1), (8, 16, 32, 64), 8, 32, 10, seed=18)


# ---------------------------------------------------------------------------------------- MobileNet
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _div8(v: float) -> int:
    nv = max(8, int(v + 4) // 8 * 8)
    return nv + 8 if nv < 0.9 * v else nv


def _mobilenet_v2(name: str, width: float, size: int, classes: int, seed: int) -> onnx.ModelProto:
    g = _G(seed)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    cin = _div8(32 * width)
    x = g.relu6(g.conv("input", 3, cin, 3, 2))
    for t, c, n, s in _MBV2:
        cout = _div8(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            y = x
            if t != 1:
                y = g.relu6(g.conv(y, cin, hid, 1))
            y = g.relu6(g.conv(y, hid, hid, 3, stride, groups=hid))  # depthwise
            y = g.conv(y, hid, cout, 1, gain=0.5)  # linear bottleneck
            x = g.op("Add", [x, y]) if (stride == 1 and cin == cout) else y
            cin = cout
    last = _div8(1280 * max(1.0, width))
    x = g.relu6(g.conv(x, cin, last, 1))
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    out = g.gemm_head(x, last, classes)
    return g.model(inp, out, ["N", classes], name)


def mobilenet_v2() -> onnx.ModelProto:
    return _mobilenet_v2("mobilenet-v2", 1.0, 224, 1000, seed=2)


def mobilenet_tiny() -> onnx.ModelProto:
    return _mobilenet_v2("mobilenet-tiny", 0.25, 32, 10, seed=3)


# -------------------------------------------------------------------------------------- Transformer
def _encoder(
    name: str, layers: int, hidden: int, heads: int, ffn: int, seq: int, vocab: int, seed: int
) -> onnx.ModelProto:
    g = _G(seed)
    d = hidden // heads
    inp = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", seq])
    emb = (g.rng.standard_normal((vocab, hidden)) * 0.02).astype(np.float32)
    pos = (g.rng.standard_normal((1, seq, hidden)) * 0.02).astype(np.float32)
    x = g.op("Gather", [g.const(emb, "word_emb"), "input_ids"], axis=0)
    x = g.layernorm(g.op("Add", [x, g.const(pos, "pos_emb")]), hidden)
    split_shape = g.const(np.array([0, 0, heads, d], np.int64), "shape")
    merge_shape = g.const(np.array([0, 0, hidden], np.int64), "shape")
    scale = g.const(np.array(1.0 / math.sqrt(d), np.float32), "scale")
    half = g.const(np.array(0.5, np.float32), "half")
    one = g.const(np.array(1.0, np.float32), "one")
    rsqrt2 = g.const(np.array(1.0 / math.sqrt(2.0), np.float32), "rsqrt2")
    for _ in range(layers):
        heads_out = []
        for _proj in range(3):  # Q, K, V
            p = g.linear(x, hidden, hidden)
            p = g.op("Reshape", [p, split_shape])
            heads_out.append(p)
        q = g.op("Transpose", [heads_out[0]], perm=[0, 2, 1, 3])  # N, A, S, d
        k = g.op("Transpose", [heads_out[1]], perm=[0, 2, 3, 1])  # N, A, d, S
        v = g.op("Transpose", [heads_out[2]], perm=[0, 2, 1, 3])
        s = g.op("Mul", [g.op("MatMul", [q, k]), scale])
        pr = g.op("Softmax", [s], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [pr, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape])
        att = g.linear(ctx, hidden, hidden)
        x = g.layernorm(g.op("Add", [x, att]), hidden)
        h = g.linear(x, hidden, ffn)
        # exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))) -- fused into Gelu by the engines
        gelu = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [g.op("Erf", [g.op("Mul", [h, rsqrt2])]), one])])
        f = g.linear(gelu, ffn, hidden)
        x = g.layernorm(g.op("Add", [x, f]), hidden)
    return g.model(inp, x, ["N", seq, hidden], name)


def bert_mini() -> onnx.ModelProto:
    return _encoder("bert-mini", 4, 256, 4, 1024, 128, 30522, seed=4)


def transformer_tiny() -> onnx.ModelProto:
    return _encoder("transformer-tiny", 1, 64, 2, 128, 16, 1000, seed=5)


# -------------------------------------------------------------------------------------------- registry
ZOO: dict[str, ModelSpec] = {}
for _spec in (
    ModelSpec("resnet50", "cnn", resnet50, "ResNet-50 v1.5, 224x224", ("resnet",)),
    ModelSpec("mobilenet-v2", "cnn", mobilenet_v2, "MobileNet-V2 1.0, 224x224", ("mobilenet",)),
    ModelSpec(
        "bert-mini", "transformer", bert_mini, "BERT-mini encoder, 4 layers, hidden 256, seq 128", ("transformer",)
    ),
    ModelSpec("resnet-tiny", "cnn", resnet_tiny, "tiny ResNet (tests), 32x32"),
    ModelSpec("mobilenet-tiny", "cnn", mobilenet_tiny, "tiny MobileNet-V2 (tests), 32x32"),
    ModelSpec("transformer-tiny", "transformer", transformer_tiny, "tiny encoder (tests), seq 16"),
):
    ZOO[_spec.name] = _spec

#: The three real architectures profiled by default.
DEFAULT_MODELS = ("resnet50", "mobilenet-v2", "bert-mini")


def resolve(name: str) -> ModelSpec | None:
    n = name.strip().lower()
    if n in ZOO:
        return ZOO[n]
    for s in ZOO.values():
        if n in s.aliases:
            return s
    return None


def model_names() -> list[str]:
    out = []
    for s in ZOO.values():
        out.extend(s.aliases)
        out.append(s.name)
    return out


def cache_dir() -> Path:
    """Where built models are kept: ``$SYNERGAI_CACHE/models``, else ``~/.cache/synergai/models``, else a temp dir."""
    env = os.environ.get("SYNERGAI_CACHE")
    cands = [Path(env) / "models"] if env else []
    cands += [Path.home() / ".cache" / "synergai" / "models", Path(tempfile.gettempdir()) / "synergai-models"]
    for c in cands:
        try:
            c.mkdir(parents=True, exist_ok=True)
            probe = c / ".w"
            probe.write_bytes(b"")
            probe.unlink()
            return c
        except OSError:
            continue
    raise OSError("no writable cache directory for built models (set SYNERGAI_CACHE)")


def _atomic_save(model: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def build(spec: ModelSpec, directory: Path | None = None) -> Path:
    """Build (or reuse the cached) fp32 ONNX file of a zoo model; returns its path."""
    d = directory or cache_dir()
    path = d / f"{spec.name}-z{ZOO_VERSION}-fp32.onnx"
    if not path.exists():
        m = spec.builder()
        onnx.checker.check_model(m)
        _atomic_save(m, path)
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
