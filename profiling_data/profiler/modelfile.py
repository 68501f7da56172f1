"""ONNX model files: what to feed them, and their int8 variant.

* :func:`input_specs` reads the graph inputs (name, element type, shape); the first dimension is the batch
  dimension and must be symbolic (or already equal to the requested batch). Other symbolic dimensions
  (e.g. a sequence length) are set to 1 -- state them in the file for realistic measurements.
* :func:`make_inputs` fills them with seeded random data: floats ~ N(0, 1), integers in [0, 2)
  (valid token ids / indices for any vocabulary), booleans False.
* :func:`quantized` returns an int8 copy, cached next to the fp32 file:
  CNNs -> onnxruntime static quantisation (QDQ format, uint8 activations / int8 per-channel weights,
  MinMax calibration on 4 random inputs: the *values* of the scales do not change the work done, only the
  accuracy, which is not measured here); transformers and user files -> dynamic quantisation
  (int8 weights of MatMul/Gemm, activations quantised per call: the usual method for encoders on CPU).
  fp16 is not offered for CPU engines: onnxruntime's CPU provider lacks fp16 kernels for most operators
  (it inserts casts and runs slower than fp32), so an fp16 record would not describe a real deployment.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from synergai.models.errors import InputError

_NP = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: type
    shape: tuple  # ints, with None for the batch dimension
    batch_fixed: int | None  # the file's own batch size when the first dimension is a number


def check_readable(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file; any problem is a one-line ``InputError``."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", file=str(p), field="--model")
    if p.is_dir():
        raise InputError("is a directory, not an ONNX file", file=str(p), field="--model")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise InputError(
            f"cannot read ONNX model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'bad protobuf'}",
            file=str(p),
            field="--model",
        ) from None
    if not m.graph.node:
        raise InputError("cannot read ONNX model: graph has no nodes", file=str(p), field="--model")
    try:
        onnx.checker.check_model(m)
    except Exception as e:
        raise InputError(f"invalid ONNX model: {str(e).splitlines()[0]}", file=str(p), field="--model") from None
    return m


def input_specs(m: onnx.ModelProto, source: str = "<model>") -> list[InputSpec]:
    inits = {i.name for i in m.graph.initializer}
    out = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dt = _NP.get(tt.elem_type)
        if dt is None:
            raise InputError(
                f"input {vi.name!r} has unsupported element type {onnx.TensorProto.DataType.Name(tt.elem_type)}",
                file=source,
                field="--model",
            )
        dims = list(tt.shape.dim)
        shape: list = []
        fixed = None
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                if i == 0:
                    fixed = d.dim_value
                    shape.append(None)
                else:
                    shape.append(d.dim_value)
            else:
                shape.append(None if i == 0 else 1)
        out.append(InputSpec(vi.name, dt, tuple(shape), fixed))
    if not out:
        raise InputError("model has no inputs", file=source, field="--model")
    return out


def check_batch(specs: list[InputSpec], batch: int, source: str) -> None:
    for s in specs:
        if not s.shape:
            if batch != 1:
                raise InputError(
                    f"input {s.name!r} is a scalar: only --batch 1 is possible", file=source, field="--batch"
                )
        elif s.batch_fixed is not None and s.batch_fixed != batch:
            raise InputError(
                f"input {s.name!r} has a fixed batch dimension {s.batch_fixed}; use --batch {s.batch_fixed}",
                file=source,
                field="--batch",
            )


def make_inputs(specs: list[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = tuple(batch if d is None else d for d in s.shape)
        if np.issubdtype(s.dtype, np.floating):
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype is np.bool_:
            feeds[s.name] = np.zeros(shape, dtype=np.bool_)
        else:
            feeds[s.name] = rng.integers(0, 2, size=shape).astype(s.dtype)
    return feeds


class _RandomReader:
    def __init__(self, specs: list[InputSpec], n: int = 4):
        self._it = iter([make_inputs(specs, 1, seed=i + 100) for i in range(n)])

    def get_next(self):
        return next(self._it, None)


def quantized(fp32_path: Path, family: str, out_dir: Path | None = None) -> Path:
    """int8 copy of an ONNX file (cached by content digest); raises RuntimeError when quantisation fails."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32_path = Path(fp32_path)
    h = hashlib.sha256(fp32_path.read_bytes()).hexdigest()[:10]
    d = out_dir or fp32_path.parent
    stem = fp32_path.stem.removesuffix("-fp32")
    out = d / f"{stem}-{h}-int8-{'static' if family == 'cnn' else 'dynamic'}.onnx"
    if out.exists():
        return out
    tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")
    try:
        if family == "cnn":
            m = onnx.load(str(fp32_path))
            specs = input_specs(m, str(fp32_path))
            quantize_static(
                str(fp32_path),
                str(tmp),
                _RandomReader(specs),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
        else:
            quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    except Exception as e:
        for p in (tmp, Path(str(tmp) + ".data")):
            if p.exists():
                p.unlink()
        raise RuntimeError(
            f"int8 quantisation failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return out
