"""Inference engines behind one small interface, registered by name.

An engine loads an ONNX file for a given batch size and thread count and returns a session whose
``run(feeds)`` performs one synchronous inference call.  Threads are set through each engine's own
options (never through environment variables):

* ``onnxruntime`` (CPU execution provider; the default and always present):
  ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential execution, all graph
  optimisations.  The calling thread is one of the ``threads``.
* ``openvino`` (CPU plugin; used when the ``openvino`` package is installed): ``INFERENCE_NUM_THREADS =
  threads``, one stream, latency hint, CPU pinning on, ``INFERENCE_PRECISION_HINT = f32`` for fp32 (the
  plugin would otherwise silently run bf16 on CPUs that have it); the model is reshaped to the static batch
  before compilation.  int8 runs the same QDQ/dynamic-quantised ONNX file (OpenVINO's low-precision
  transformations turn QDQ into int8 kernels).

An engine whose package is missing is *unavailable*: listed with the reason, skipped by the profiler,
never a crash.  Add another with :func:`register`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np


class Session(ABC):
    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> None: ...

    def close(self) -> None:  # noqa: B027 -- optional hook: release engine memory
        pass


class Engine(ABC):
    #: registry name (also the record's ``engine`` column)
    name: str = ""
    #: Python module that must import for the engine to be available
    module: str = ""
    #: how a user would install it (shown when unavailable)
    install_hint: str = ""
    precisions: tuple[str, ...] = ("fp32", "int8")

    def available(self) -> tuple[bool, str]:
        """(True, version) or (False, reason)."""
        try:
            m = importlib.import_module(self.module)
        except Exception as e:  # ImportError, or a broken install raising anything else
            return (
                False,
                f"not installed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {self.install_hint}".strip(),
            )
        return True, str(getattr(m, "__version__", "unknown"))

    @abstractmethod
    def load(self, path: Path, *, threads: int, batch: int, precision: str, input_shapes: dict[str, tuple]) -> Session:
        """Compile/load ``path``; raise ``RuntimeError`` with a one-line reason if the engine cannot run it."""

    def settings(self, threads: int, precision: str) -> str:
        """Compact description of the engine options used (goes into the record's ``source``)."""
        return f"t{threads}"


# ------------------------------------------------------------------------------------------ onnxruntime
class _OrtSession(Session):
    def __init__(self, sess):
        self.sess = sess
        self.outputs = [o.name for o in sess.get_outputs()]

    def run(self, feeds):
        self.sess.run(self.outputs, feeds)

    def close(self):
        self.sess = None


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    module = "onnxruntime"
    install_hint = "pip install onnxruntime"

    def load(self, path, *, threads, batch, precision, input_shapes):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeError(f"onnxruntime cannot load the model: {str(e).splitlines()[0][:300]}") from None
        return _OrtSession(sess)

    def settings(self, threads, precision):
        return f"cpu-ep/intra{threads}/inter1/seq"


# --------------------------------------------------------------------------------------------- openvino
class _OvSession(Session):
    def __init__(self, compiled):
        self.compiled = compiled
        self.req = compiled.create_infer_request()

    def run(self, feeds):
        self.req.infer(feeds)

    def close(self):
        self.req = None
        self.compiled = None


class OpenVinoEngine(Engine):
    name = "openvino"
    module = "openvino"
    install_hint = "pip install openvino"

    def load(self, path, *, threads, batch, precision, input_shapes):
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            shapes = {}
            for inp in model.inputs:
                name = inp.get_any_name()
                if name in input_shapes:
                    shapes[name] = ov.PartialShape(list(input_shapes[name]))
            if shapes:
                model.reshape(shapes)
            cfg = {
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": True,
            }
            if precision == "fp32":
                cfg["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = core.compile_model(model, "CPU", cfg)
        except Exception as e:
            raise RuntimeError(f"openvino cannot compile the model: {str(e).strip().splitlines()[0][:300]}") from None
        return _OvSession(compiled)

    def settings(self, threads, precision):
        return f"cpu/nthreads{threads}/streams1/latency/pin" + ("/f32" if precision == "fp32" else "")


# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[[], Engine]] = {}


def register(name: str, factory: Callable[[], Engine]) -> None:
    _REGISTRY[name] = factory


def engine_names() -> list[str]:
    return list(_REGISTRY)


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (KeyError if none)."""
    return _REGISTRY[name.strip().lower()]()


def availability() -> dict[str, tuple[bool, str]]:
    return {n: get_engine(n).available() for n in _REGISTRY}


register("onnxruntime", OnnxRuntimeEngine)
register("openvino", OpenVinoEngine)

#: The engine used when none is asked for.
DEFAULT_ENGINE = "onnxruntime"
