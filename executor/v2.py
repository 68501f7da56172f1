"""Open Inference Protocol (KServe V2) over HTTP/REST: parsing, validation and encoding.

JSON tensors (``{"name", "shape", "datatype", "data"}``) and Triton's binary tensor extension
(``Inference-Header-Content-Length``: a JSON header followed by raw tensor bytes; what
``tritonclient.http`` sends by default) are both understood, so any V2 client works unchanged.

Everything a client can send is bounded: nesting depth, number of inputs, tensor rank, element
count, numbers (400-digit integers and ``1e400`` are rejected, not overflowed) and the deadline.
Violations raise :class:`V2Error` with a 4xx status and a one-line message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

HEADER_LENGTH = "Inference-Header-Content-Length"
DEADLINE_HEADER = "X-Deadline-Ms"
MAX_DEPTH = 16
MAX_INPUTS = 64
MAX_RANK = 8
MAX_ELEMENTS = 16 * 1024 * 1024
MAX_DEADLINE_MS = 86_400_000.0  # a day

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NP_TO_V2 = {np.dtype(v).name: k for k, v in DTYPES.items() if k != "BYTES"}


class V2Error(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())[:500]


# ------------------------------------------------------------------------------------------ JSON


def _depth_ok(obj: Any, limit: int) -> bool:
    """Iterative depth check; lists are probed through their first element only (tensor data is
    homogeneous; a ragged or deeper tail fails the numpy conversion with a 400 anyway)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            for v in o.values():
                if isinstance(v, (dict, list)):
                    stack.append((v, d + 1))
        elif isinstance(o, list) and o:
            first = o[0]
            if isinstance(first, (dict, list)):
                stack.append((first, d + 1))
            last = o[-1]
            if last is not first and isinstance(last, (dict, list)):
                stack.append((last, d + 1))
    return True


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from a client: 400 on malformed text, deep nesting, NaN/Infinity or absurd numbers."""
    try:
        if _orjson is not None:
            obj = _orjson.loads(raw)
        else:  # pragma: no cover
            obj = json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int)
    except RecursionError:
        raise V2Error(400, "JSON nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:
        msg = str(e).split(":")[0] if _orjson is not None else str(e)
        raise V2Error(400, f"malformed JSON: {msg}") from None
    try:
        ok = _depth_ok(obj, max_depth)
    except RecursionError:  # pragma: no cover
        ok = False
    if not ok:
        raise V2Error(400, f"JSON nested deeper than {max_depth} levels")
    return obj


def _reject_constant(s: str):  # pragma: no cover - stdlib fallback
    raise ValueError(f"{s} is not a JSON number")


def _bounded_int(s: str) -> int:  # pragma: no cover - stdlib fallback
    if len(s) > 20:
        raise ValueError("integer too large")
    return int(s)


def finite_number(v: Any, what: str, lo: float = 0.0, hi: float = MAX_DEADLINE_MS) -> float:
    """A float in (lo, hi]; 400 otherwise (bools, strings, huge integers, inf, nan)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, str):
            s = v.strip()
            if not s or len(s) > 32:
                raise V2Error(400, f"{what} must be a number")
            try:
                v = float(s)
            except ValueError:
                raise V2Error(400, f"{what} must be a number") from None
        else:
            raise V2Error(400, f"{what} must be a number")
    try:
        f = float(v)
    except (OverflowError, ValueError):
        raise V2Error(400, f"{what} is out of range") from None
    if not math.isfinite(f) or not (lo < f <= hi):
        raise V2Error(400, f"{what} must be a number in ({lo:g}, {hi:g}]")
    return f


# ------------------------------------------------------------------------------------------ request


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray
    parameters: dict = field(default_factory=dict)


@dataclass
class InferRequest:
    id: Optional[str]
    inputs: list[Tensor]
    outputs: list[dict]  # requested outputs (name, parameters), may be empty (= all)
    parameters: dict
    binary_output: bool = False  # request-level binary_data_output


def split_binary(body: bytes, header_length: Optional[str]) -> tuple[bytes, bytes]:
    """(JSON part, binary tail) of a request body."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise V2Error(400, f"{HEADER_LENGTH} must be an integer") from None
    if n < 0 or n > len(body):
        raise V2Error(400, f"{HEADER_LENGTH} {n} exceeds the body length {len(body)}")
    return body[:n], body[n:]


def header_object(body: bytes, header_length: Optional[str]) -> dict:
    js, _ = split_binary(body, header_length)
    obj = loads(js)
    if not isinstance(obj, dict):
        raise V2Error(400, "an inference request must be a JSON object")
    return obj


def deadline_from(headers: Any, obj: Optional[dict]) -> Optional[float]:
    """Deadline in ms from the ``X-Deadline-Ms`` header, else ``parameters.deadline_ms``, else None."""
    h = headers.get(DEADLINE_HEADER) if headers is not None else None
    if h is not None:
        return finite_number(h, DEADLINE_HEADER)
    if obj is not None:
        p = obj.get("parameters")
        if isinstance(p, dict) and "deadline_ms" in p:
            return finite_number(p["deadline_ms"], "parameters.deadline_ms")
    return None


def _shape(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or len(v) > MAX_RANK:
        raise V2Error(400, f"{where}.shape must be a list of at most {MAX_RANK} integers")
    out = []
    for d in v:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0 or d > MAX_ELEMENTS:
            raise V2Error(400, f"{where}.shape must hold integers in [0, {MAX_ELEMENTS}]")
        out.append(d)
    if math.prod(out) > MAX_ELEMENTS:
        raise V2Error(400, f"{where}: more than {MAX_ELEMENTS} elements")
    return out


def _bytes_tensor_from_raw(raw: bytes, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=np.object_)
    off = 0
    for i in range(count):
        if off + 4 > len(raw):
            raise V2Error(400, f"{where}: truncated BYTES tensor")
        n = int.from_bytes(raw[off : off + 4], "little")
        off += 4
        if off + n > len(raw):
            raise V2Error(400, f"{where}: truncated BYTES tensor")
        out[i] = raw[off : off + n]
        off += n
    if off != len(raw):
        raise V2Error(400, f"{where}: BYTES tensor has {len(raw) - off} trailing bytes")
    return out


_FLOAT_MAX = {2: float(np.finfo(np.float16).max), 4: float(np.finfo(np.float32).max)}


def _abs_max(data: list, arr: np.ndarray) -> float:
    """max |x| of a float tensor's JSON data (NaN or inf when it holds one): in Python for a short flat
    list (numpy's reductions cost more than the loop there), else with numpy."""
    if arr.ndim == 1 and arr.size <= 256:
        total = sum(data)  # NaN or inf in, NaN or inf out (or a finite overflow: numpy decides)
        if math.isfinite(total):
            return float(max(map(abs, data)))
    return float(np.abs(arr.astype(np.float64, copy=False)).max())


def parse_infer_request(obj: dict, binary: bytes = b"") -> InferRequest:
    """Validate a V2 inference request (already parsed header object + binary tail)."""
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise V2Error(400, "id must be a string")
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise V2Error(400, "parameters must be an object")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error(400, "inputs must be a non-empty list of tensors")
    if len(inputs) > MAX_INPUTS:
        raise V2Error(400, f"at most {MAX_INPUTS} inputs")
    tensors = []
    off = 0
    for k, t in enumerate(inputs):
        where = f"inputs[{k}]"
        if not isinstance(t, dict):
            raise V2Error(400, f"{where} must be an object")
        name = t.get("name")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise V2Error(400, f"{where}.name must be a non-empty string")
        dt = t.get("datatype")
        if dt not in DTYPES:
            raise V2Error(400, f"{where}.datatype {str(dt)[:20]!r} is not a V2 datatype ({', '.join(DTYPES)})")
        shape = _shape(t.get("shape"), where)
        count = math.prod(shape)
        tp = t.get("parameters") or {}
        if not isinstance(tp, dict):
            raise V2Error(400, f"{where}.parameters must be an object")
        size = tp.get("binary_data_size")
        try:
            if size is not None:
                if isinstance(size, bool) or not isinstance(size, int) or size < 0 or off + size > len(binary):
                    raise V2Error(400, f"{where}.parameters.binary_data_size does not match the body")
                raw = binary[off : off + size]
                off += size
                if dt == "BYTES":
                    arr = _bytes_tensor_from_raw(raw, count, where)
                else:
                    item = np.dtype(DTYPES[dt]).itemsize
                    if len(raw) != count * item:
                        raise V2Error(
                            400, f"{where}: {len(raw)} bytes of {dt} data for shape {shape} (expected {count * item})"
                        )
                    arr = np.frombuffer(raw, dtype=DTYPES[dt])
            else:
                data = t.get("data")
                if not isinstance(data, list):
                    raise V2Error(400, f"{where}.data must be a list (or use the binary extension)")
                if dt == "BYTES":
                    flat = np.asarray(data, dtype=np.object_).ravel()
                    if any(not isinstance(x, str) for x in flat):
                        raise V2Error(400, f"{where}: BYTES data must be strings")
                    arr = np.array([x.encode() for x in flat], dtype=np.object_)
                else:
                    arr = np.asarray(data)
                    if arr.dtype == np.object_ or arr.dtype.kind not in "biuf":
                        raise V2Error(400, f"{where}.data must be numbers of one nesting depth")
                    if dt != "BOOL" and arr.dtype.kind == "b":
                        raise V2Error(400, f"{where}.data holds booleans for datatype {dt}")
                    target = np.dtype(DTYPES[dt])
                    if arr.dtype.kind == "f":
                        if target.kind in "iu":
                            raise V2Error(400, f"{where}.data holds fractions for integer datatype {dt}")
                        if arr.size:  # one reduction for both checks: NaN and inf propagate into the max
                            top = _abs_max(data, arr)
                            if not math.isfinite(top):
                                raise V2Error(400, f"{where}.data holds non-finite numbers")
                            if target.itemsize < 8 and top > _FLOAT_MAX[target.itemsize]:
                                raise V2Error(400, f"{where}.data out of range for {dt}")
                    elif target.kind in "iu" and arr.size:
                        info = np.iinfo(target)
                        if arr.min() < info.min or arr.max() > info.max:
                            raise V2Error(400, f"{where}.data out of range for {dt}")
                    arr = arr.astype(target, copy=False).ravel()
                if arr.size != count:
                    raise V2Error(400, f"{where}: {arr.size} elements for shape {shape} (expected {count})")
        except V2Error:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise V2Error(400, f"{where}.data: {type(e).__name__}: {e}") from None
        tensors.append(Tensor(name, dt, shape, arr.reshape(shape), tp))
    if off != len(binary):
        raise V2Error(400, f"{len(binary) - off} bytes of binary data not claimed by any input")
    outs = obj.get("outputs") or []
    if (
        not isinstance(outs, list)
        or len(outs) > MAX_INPUTS
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs)
    ):
        raise V2Error(400, "outputs must be a list of objects with a name")
    bo = params.get("binary_data_output", False)
    return InferRequest(rid, tensors, outs, params, bool(bo) if isinstance(bo, bool) else False)


# ------------------------------------------------------------------------------------------ response


def v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype == np.object_:
        return "BYTES"
    try:
        return NP_TO_V2[arr.dtype.name]
    except KeyError:
        raise V2Error(500, f"cannot encode numpy dtype {arr.dtype}") from None


def encode_response(
    model: str,
    version: Optional[str],
    rid: Optional[str],
    outputs: dict[str, np.ndarray],
    req: InferRequest,
    parameters: Optional[dict] = None,
) -> tuple[bytes, dict]:
    """Body and headers of a V2 response; binary outputs when the request asked for them."""
    wanted = {o["name"]: o for o in req.outputs}
    names = list(wanted) if wanted else list(outputs)
    meta_outputs = []
    tail = []
    for n in names:
        if n not in outputs:
            raise V2Error(400, f"unknown output {n!r} (model has {', '.join(outputs)})")
        arr = np.asarray(outputs[n])
        o = {"name": n, "shape": list(arr.shape), "datatype": v2_datatype(arr)}
        op = (wanted.get(n) or {}).get("parameters") or {}
        binary = op.get("binary_data", req.binary_output) if isinstance(op, dict) else req.binary_output
        if binary is True:
            if arr.dtype == np.object_:
                raw = b"".join(
                    len(b).to_bytes(4, "little") + b
                    for b in (x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel())
                )
            else:
                raw = np.ascontiguousarray(arr).tobytes()
            o["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            if arr.dtype == np.object_:
                o["data"] = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.ravel()]
            else:
                o["data"] = arr.ravel().tolist()
        meta_outputs.append(o)
    doc: dict[str, Any] = {"model_name": model, "outputs": meta_outputs}
    if version:
        doc["model_version"] = version
    if rid is not None:
        doc["id"] = rid
    if parameters:
        doc["parameters"] = parameters
    js = _orjson.dumps(doc) if _orjson is not None else json.dumps(doc).encode()
    if tail:
        return js + b"".join(tail), {HEADER_LENGTH: str(len(js)), "Content-Type": "application/octet-stream"}
    return js, {"Content-Type": "application/json"}
