"""``synergai serve``: the reference V2 (Open Inference Protocol) model server for CPU engines.

One process serves one or several models (a *shared* server time-shares its cores between them:
one pool of execution slots for every model). Per model a dynamic batcher forms batches of up to
``batch_size`` rows: once an execution slot is free it takes what is queued, waiting at most
``batch_wait_ms`` (from the first request's arrival) for more (Triton's ``max_queue_delay``).

Runtimes:

* **emulated** (``--emulate DEVICE/CONFIG``, or ``--plan P --server GROUP``): a real V2 server whose
  inference sleeps for a service time drawn from the profile of that configuration (log-normal
  fitted to p50/p99), with its batch size, batch wait and concurrency slots, so one machine can
  stand in for a heterogeneous cluster of dozens of servers. Signature: ``INPUT0`` FP32 ``[-1, 16]``
  -> ``OUTPUT0`` FP32 ``[-1, 1]`` (the row sums: a checkable answer).
* **onnx** (``--onnx NAME[=PATH|zoo:ZOO_NAME]``): ONNX Runtime on the CPU, with the model's real
  signature (the profiler's locally built models from ``profiling_data/profiler/zoo.py``, or any
  ONNX file with a dynamic batch dimension).
* **server.json** (``--plan-config PATH``, default ``$SYNERGAI_SERVER_CONFIG``; what
  ``executor.manifests`` mounts into every ``synergai serve`` pod): every model of the server group,
  as ONNX Runtime from ``$SYNERGAI_MODEL_STORE/<file>`` with the group's batch size, batch wait,
  slots and threads, or, with ``--emulate-config`` (default ``$SYNERGAI_SERVE_EMULATE``), emulated from
  each model's full configuration; shared when the group is (see :func:`runtimes_from_server_config`).

Readiness (``/v2/health/ready``, ``/readyz``) only once every model is loaded and warmed up.
Every response carries ``X-Synergai-Server-Ms`` (arrival to answer), ``X-Synergai-Compute-Ms``
(the batch's execution), ``X-Synergai-Batch`` (rows in it) and ``X-Synergai-Queue-Depth``
(requests in this server not yet answered), which the gateway uses for feedback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from aiohttp import web

from . import v2
from .httpkit import (
    HttpLimits,
    LabelChildren,
    add_v2_routes,
    json_error,
    json_response,
    make_app,
    prometheus,
    read_body,
    run_main,
)

log = logging.getLogger("synergai.serve")

EMU_FEATURES = 16


# ------------------------------------------------------------------------------------------ service model


def service_model(cfg: Any):
    """The service model of one configuration (a :class:`models.ConfigChoice`): the planner's own
    (``planner.service.ServiceModel``: clipped log-normal fitted to the profile's p50/p90/p99, slots,
    batch wait), so the emulator, the simulator and the planner agree."""
    from synergai.planner.service import ServiceModel

    return ServiceModel.of(cfg)


# ------------------------------------------------------------------------------------------ runtimes


@dataclass
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 = any

    def doc(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Runtime:
    """One loaded model: signature, batching parameters, execution."""

    platform = "synergai"

    def __init__(self, name: str, *, batch_size: int = 1, batch_wait_ms: float = 0.0, slots: int = 1):
        self.name = name
        self.version = "1"
        self.batch_size = max(1, int(batch_size))
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.slots = max(1, int(slots))
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.ready = False
        self.info: dict = {}

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.doc() for t in self.inputs],
            "outputs": [t.doc() for t in self.outputs],
            "parameters": {
                "max_batch_size": self.batch_size,
                "max_queue_delay_ms": round(self.batch_wait_s * 1000, 3),
                "slots": self.slots,
                **self.info,
            },
        }

    def validate(self, req: v2.InferRequest) -> int:
        """Rows in the request (its batch dimension); 400 on a signature mismatch."""
        by_name = {t.name: t for t in req.inputs}
        want = {s.name for s in self.inputs}
        if set(by_name) != want:
            raise v2.V2Error(400, f"model {self.name} takes inputs {sorted(want)}, got {sorted(by_name)}")
        rows = None
        for s in self.inputs:
            t = by_name[s.name]
            if t.datatype != s.datatype:
                raise v2.V2Error(400, f"input {s.name}: datatype {t.datatype}, model expects {s.datatype}")
            if len(t.shape) != len(s.shape) or any(w not in (-1, g) for w, g in zip(s.shape, t.shape)):
                raise v2.V2Error(400, f"input {s.name}: shape {t.shape}, model expects {s.shape}")
            if not t.shape or t.shape[0] < 1:
                raise v2.V2Error(400, f"input {s.name}: empty batch")
            if rows is not None and t.shape[0] != rows:
                raise v2.V2Error(400, "inputs disagree on the batch dimension")
            rows = t.shape[0]
        if rows > self.batch_size and self.batch_size > 1:
            raise v2.V2Error(400, f"batch of {rows} rows exceeds the model's max_batch_size {self.batch_size}")
        return int(rows or 1)

    async def load(self) -> None:
        self.ready = True

    async def execute(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Outputs for a (concatenated) batch and the execution time, s."""
        raise NotImplementedError


class EmulatedRuntime(Runtime):
    platform = "synergai_emulated"

    def __init__(self, name: str, cfg: Any, *, seed: int = 0, label: str = ""):
        sm = service_model(cfg)
        super().__init__(name, batch_size=cfg.batch_size, batch_wait_ms=sm.batch_wait * 1000.0, slots=sm.slots)
        self.service = sm
        self.rng = np.random.default_rng(seed)
        self._late = 0.0  # mean timer lateness, s (see execute)
        self.inputs = [TensorSpec("INPUT0", "FP32", [-1, EMU_FEATURES])]
        self.outputs = [TensorSpec("OUTPUT0", "FP32", [-1, 1])]
        self.info = {
            "emulates": label or getattr(cfg, "config_id", ""),
            "latency_p50_ms": cfg.latency_p50_ms,
            "latency_p99_ms": cfg.latency_p99_ms,
        }

    async def execute(self, inputs):
        # A timer wakes the loop late (by 0.1-3 ms on a busy machine), which would hold the slot longer than
        # the drawn service time and make every emulated device slower than its model: ask for the drawn
        # time minus the mean lateness seen so far (EWMA), and report the time the call really took.
        t = self.service.sample(self.rng)
        t0 = time.monotonic()
        ask = t - self._late if t > self._late else 0.0
        await asyncio.sleep(ask)
        took = time.monotonic() - t0
        self._late += 0.05 * ((took - ask) - self._late)
        x = inputs["INPUT0"]
        return {"OUTPUT0": x.sum(axis=1, keepdims=True, dtype=np.float32)}, took


_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    platform = "onnxruntime_onnx"

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        batch_size: int = 1,
        batch_wait_ms: float = 0.0,
        slots: int = 1,
        threads: int = 1,
    ):
        super().__init__(name, batch_size=batch_size, batch_wait_ms=batch_wait_ms, slots=slots)
        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.session = None
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=f"ort-{name}")
        self.info = {"file": self.path.name, "threads": self.threads}

    def _load_sync(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        for i in self.session.get_inputs():
            dims = [d if isinstance(d, int) else -1 for d in i.shape]
            self.inputs.append(TensorSpec(i.name, _ORT_TYPES.get(i.type, "FP32"), dims))
        for o in self.session.get_outputs():
            dims = [d if isinstance(d, int) else -1 for d in o.shape]
            self.outputs.append(TensorSpec(o.name, _ORT_TYPES.get(o.type, "FP32"), dims))
        # warm-up: one full batch of zeros (or ones for token ids)
        feed = {}
        for s in self.inputs:
            shape = [self.batch_size if k == 0 else (d if d > 0 else 1) for k, d in enumerate(s.shape)]
            dt = v2.DTYPES[s.datatype]
            feed[s.name] = np.ones(shape, dtype=dt) if np.dtype(dt).kind in "iu" else np.zeros(shape, dtype=dt)
        self.session.run(None, feed)

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._load_sync)
        self.ready = True

    def _run(self, inputs):
        t0 = time.perf_counter()
        outs = self.session.run(None, inputs)
        return {s.name: o for s, o in zip(self.outputs, outs)}, time.perf_counter() - t0

    async def execute(self, inputs):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, inputs)


# ------------------------------------------------------------------------------------------ batching


@dataclass
class _Item:
    req: v2.InferRequest
    rows: int
    arrived: float
    fut: asyncio.Future


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Batcher:
    """Dynamic batching of one model over a pool of execution slots (shared by a shared server's models).

    The queue is a deque with one wake-up future (no ``asyncio.Queue`` getters, no ``wait_for`` task per
    batch-formation wait); times are ``time.monotonic`` (uvloop's ``loop.time()`` has 1 ms resolution)."""

    def __init__(self, rt: Runtime, slots: asyncio.Semaphore):
        self.rt = rt
        self.slots = slots
        self.queue: deque[_Item] = deque()
        self.task: Optional[asyncio.Task] = None
        self.pending = 0
        self._waiter: Optional[asyncio.Future] = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"batcher-{self.rt.name}")

    async def submit(self, req: v2.InferRequest, rows: int) -> tuple[dict[str, np.ndarray], float, int]:
        item = _Item(req, rows, time.monotonic(), asyncio.get_running_loop().create_future())
        self.pending += 1
        try:
            self.queue.append(item)
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
            return await item.fut
        finally:
            self.pending -= 1

    async def _wait(self, timeout: Optional[float] = None) -> None:
        """Until an item is queued (or ``timeout`` s pass)."""
        loop = asyncio.get_running_loop()
        w = self._waiter = loop.create_future()
        h = loop.call_later(timeout, _wake, w) if timeout is not None else None
        try:
            await w
        finally:
            self._waiter = None
            if h is not None:
                h.cancel()

    async def _loop(self) -> None:
        rt = self.rt
        q = self.queue
        while True:
            while not q:
                await self._wait()
            first = q.popleft()
            await self.slots.acquire()
            batch, rows = [first], first.rows
            while rows < rt.batch_size:
                if not q:
                    wait = first.arrived + rt.batch_wait_s - time.monotonic()
                    if wait <= 0:
                        break
                    await self._wait(wait)
                    continue
                if rows + q[0].rows > rt.batch_size:
                    break  # the next batch starts with it
                nxt = q.popleft()
                batch.append(nxt)
                rows += nxt.rows
            asyncio.create_task(self._execute(batch, rows))

    async def _execute(self, batch: list[_Item], rows: int) -> None:
        try:
            live = [b for b in batch if not b.fut.done()]
            if not live:
                return
            names = [s.name for s in self.rt.inputs]
            if len(live) == 1:
                feed = {t.name: t.array for t in live[0].req.inputs}
            else:
                feed = {
                    n: np.concatenate([next(t.array for t in b.req.inputs if t.name == n) for b in live]) for n in names
                }
            outs, dt = await self.rt.execute(feed)
            off = 0
            for b in live:
                part = {k: v[off : off + b.rows] for k, v in outs.items()}
                off += b.rows
                if not b.fut.done():
                    b.fut.set_result((part, dt, rows))
        except Exception as e:  # the model failed: every request of the batch gets the error
            log.exception("model %s failed on a batch", self.rt.name)
            for b in batch:
                if not b.fut.done():
                    b.fut.set_exception(v2.V2Error(500, f"model {self.rt.name} failed: {type(e).__name__}: {e}"))
        finally:
            self.slots.release()


# ------------------------------------------------------------------------------------------ server


class ModelServer:
    def __init__(
        self,
        runtimes: list[Runtime],
        *,
        shared: Optional[bool] = None,
        name: str = "synergai-serve",
        limits: Optional[HttpLimits] = None,
    ):
        if not runtimes:
            raise ValueError("a server needs at least one model")
        names = [r.name for r in runtimes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names: {names}")
        self.models = {r.name: r for r in runtimes}
        self.shared = len(runtimes) > 1 if shared is None else shared
        self.name = name
        self.limits = limits or HttpLimits()
        self.batchers: dict[str, Batcher] = {}
        self.is_ready = False
        self.inflight = 0
        self.served = 0
        self.load_error = ""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        r = self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "synergai_serve_requests_total", "Inference requests, by model and code.", ["model", "code"], registry=r
        )
        self.m_batch = Histogram(
            "synergai_serve_batch_rows",
            "Rows per executed batch.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.m_latency = Histogram(
            "synergai_serve_latency_seconds",
            "Arrival to answer, by model.",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self._child = LabelChildren()  # the hot path's label children, bound once

    async def load(self) -> None:
        try:
            if self.shared:
                sem = asyncio.Semaphore(max(r.slots for r in self.models.values()))
                for r in self.models.values():
                    self.batchers[r.name] = Batcher(r, sem)
            else:
                for r in self.models.values():
                    self.batchers[r.name] = Batcher(r, asyncio.Semaphore(r.slots))
            for r in self.models.values():
                await r.load()
            for b in self.batchers.values():
                b.start()
            self.is_ready = True
            log.info(
                "ready (%s): %s",
                "shared" if self.shared else "dedicated",
                ", ".join(
                    f"{r.name} ({r.platform}, b{r.batch_size}, wait {r.batch_wait_s * 1000:.2f} ms, {r.slots} slot(s))"
                    for r in self.models.values()
                ),
            )
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("loading the models failed")

    # ---------------------------------------------------------------- HTTP
    def app(self) -> web.Application:
        app = make_app(self.limits)
        add_v2_routes(app, self)
        return app

    async def live(self, request):
        return web.Response(text="ok\n")

    async def ready(self, request):
        if self.is_ready:
            return web.Response(text="ok\n")
        return json_error(503, self.load_error or "models loading")

    async def metrics(self, request):
        return await prometheus(self.registry)

    async def server_meta(self, request):
        return json_response({"name": self.name, "version": _version(), "extensions": ["binary_tensor_data"]})

    def _model(self, request) -> Runtime:
        name = request.match_info["model"]
        rt = self.models.get(name)
        if rt is None:
            raise v2.V2Error(404, f"unknown model {name[:100]!r} (this server has: {', '.join(self.models)})")
        ver = request.match_info.get("version")
        if ver is not None and ver != rt.version:
            raise v2.V2Error(404, f"model {name} has no version {ver[:20]!r} (versions: {rt.version})")
        return rt

    async def model_meta(self, request):
        try:
            doc = self._model(request).metadata()
            doc["parameters"]["shared"] = self.shared  # one pool of execution slots for every model
            return json_response(doc)
        except v2.V2Error as e:
            return json_error(e.status, e.message)

    async def model_ready(self, request):
        try:
            rt = self._model(request)
        except v2.V2Error as e:
            return json_error(e.status, e.message)
        return json_response(
            {"name": rt.name, "ready": rt.ready and self.is_ready}, status=200 if rt.ready and self.is_ready else 503
        )

    async def infer(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        name = request.match_info["model"]
        label = name if name in self.models else "unknown"
        self.inflight += 1
        try:
            rt = self._model(request)
            if not self.is_ready:
                raise v2.V2Error(503, "models loading")
            body = await read_body(request, self.limits)
            js, tail = v2.split_binary(body, request.headers.get(v2.HEADER_LENGTH))
            obj = v2.loads(js)
            if not isinstance(obj, dict):
                raise v2.V2Error(400, "an inference request must be a JSON object")
            req = v2.parse_infer_request(obj, tail)
            rows = rt.validate(req)
            outs, compute_s, batch_rows = await self.batchers[rt.name].submit(req, rows)
            payload, headers = v2.encode_response(rt.name, rt.version, req.id, outs, req)
            server_ms = (time.perf_counter() - t0) * 1000.0
            headers.update(
                {
                    "X-Synergai-Server-Ms": f"{server_ms:.3f}",
                    "X-Synergai-Compute-Ms": f"{compute_s * 1000:.3f}",
                    "X-Synergai-Batch": str(batch_rows),
                    "X-Synergai-Queue-Depth": str(self.inflight - 1),
                }
            )
            ctype = headers.pop("Content-Type")
            self._child(self.m_requests, label, "200").inc()
            self._child(self.m_batch, label).observe(batch_rows)
            self._child(self.m_latency, label).observe(server_ms / 1000.0)
            self.served += 1
            return web.Response(body=payload, headers=headers, content_type=ctype)
        except v2.V2Error as e:
            self._child(self.m_requests, label, str(e.status)).inc()
            return json_error(e.status, e.message)
        except web.HTTPException as e:
            self._child(self.m_requests, label, str(e.status)).inc()
            raise
        finally:
            self.inflight -= 1


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("synergai")
    except Exception:  # pragma: no cover
        return "dev"


# ------------------------------------------------------------------------------------------ building models


def emulated_from_profile(model: str, spec: str, profiles=None, seed: int = 0) -> EmulatedRuntime:
    """``spec`` = ``DEVICE/CONFIG_ID`` (e.g. ``jetson-agx-orin/tensorrt/int8/b1/tauto/maxn``)."""
    from synergai.models import InputError

    device, _, config_id = spec.strip().partition("/")
    if not device or not config_id:
        raise InputError(
            f"--emulate {spec!r}: expected DEVICE/CONFIG_ID, e.g. x86-xeon-8275cl/onnxruntime/fp32/b1/tauto/default",
            field="--emulate",
        )
    if profiles is None:
        from synergai import profiling_data

        profiles = profiling_data.default_profiles()
    recs = [r for r in profiles.for_model_device(model.strip().lower(), device.strip().lower())]
    for r in recs:
        if r.config_id == config_id.strip().lower():
            from synergai.planner.decode import config_choice

            return EmulatedRuntime(model, config_choice(r), seed=seed, label=f"{device}/{config_id}")
    have = ", ".join(sorted(r.config_id for r in recs)[:8]) or "none"
    raise InputError(
        f"no profile for model {model!r} on device {device!r} with configuration {config_id!r} "
        f"(configurations there: {have})",
        field="--emulate",
    )


def group_assignments(plan) -> dict[str, list]:
    """Server group name -> the assignments it hosts (``plan.server_groups()``: a plan without
    ``servers`` has one dedicated group per assignment)."""
    return {srv.name: plan.assignments_of(srv.name) for srv in plan.server_groups()}


def emulated_from_plan(plan, group: str, seed: int = 0) -> list[EmulatedRuntime]:
    from synergai.models import InputError

    groups = group_assignments(plan)
    if group not in groups:
        raise InputError(f"plan has no server group {group!r} (groups: {', '.join(sorted(groups))})", field="--server")
    return [
        EmulatedRuntime(a.model, a.config, seed=seed + k, label=f"{a.pool}/{a.config.config_id}")
        for k, a in enumerate(groups[group])
    ]


SERVER_CONFIG_ENV = "SYNERGAI_SERVER_CONFIG"  # default of --plan-config (set in every synergai serve pod)
EMULATE_ENV = "SYNERGAI_SERVE_EMULATE"  # 1/true/yes: --emulate-config by default
MODEL_STORE_ENV = "SYNERGAI_MODEL_STORE"  # the store the files of server.json are relative to


def load_server_config(path) -> dict:
    """Read and check a ``server.json`` (:func:`executor.manifests.server_config`); InputError on a bad one."""
    import json

    from synergai.models import InputError

    from .manifests import SERVER_CONFIG_SCHEMA

    where = {"file": str(path), "field": "--plan-config"}
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError("file not found", **where) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"not a readable JSON server configuration: {e}", **where) from None
    if not isinstance(doc, dict) or doc.get("schema_version") != SERVER_CONFIG_SCHEMA:
        got = doc.get("schema_version") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(
            f"expected a server configuration with schema_version {SERVER_CONFIG_SCHEMA!r} (got {got!r})", **where
        )
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise InputError("`models` must be a non-empty list", **where)
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("model"), str) or not m["model"]:
            raise InputError(f"models[{i}]: an object with a `model` name is required", **where)
        for key in ("file", "config"):
            if key not in m:
                raise InputError(f"models[{i}] ({m['model']}): `{key}` is missing", **where)
    return doc


def runtimes_from_server_config(
    path, *, emulate: bool = False, model_store=None, seed: int = 0
) -> tuple[list[Runtime], bool]:
    """The runtimes of a ``server.json`` (what ``executor.manifests.build`` mounts into every
    ``synergai serve`` pod at ``/etc/synergai/server.json``) and whether the server is shared.

    Each model is served under its ``runtime_name`` (the model name for ``synergai serve`` groups):

    * real (default): ONNX Runtime on the CPU from ``<model store>/<file>`` with the configuration's
      ``batch_size``, ``batch_wait_ms``, ``slots`` and ``threads`` (unknown threads: 1). The store is
      ``model_store``, else ``$SYNERGAI_MODEL_STORE``, else the document's ``model_store`` (``/models``).
      Only ``synergai-serve`` groups: a Triton group's ``server.json`` is refused.
    * ``emulate``: :class:`EmulatedRuntime` of the full ``config`` (its profile's service times, batch
      size, batch wait and slots); any group, Triton ones included (no model file is read)."""
    import os

    from synergai.models import ConfigChoice, InputError

    from .manifests import RUNTIME_SERVE

    doc = load_server_config(path)
    shared = bool(doc.get("shared", len(doc["models"]) > 1))
    where = {"file": str(path), "field": "--plan-config"}
    out: list[Runtime] = []
    if emulate:
        for k, m in enumerate(doc["models"]):
            try:
                cfg = ConfigChoice.model_validate(m["config"])
            except Exception as e:
                raise InputError(
                    f"models[{k}] ({m['model']}): bad `config`: {' '.join(str(e).split())}", **where
                ) from None
            out.append(
                EmulatedRuntime(
                    m.get("runtime_name") or m["model"],
                    cfg,
                    seed=seed + k,
                    label=f"{doc.get('pool', '')}/{cfg.config_id}",
                )
            )
        return out, shared
    if doc.get("runtime", RUNTIME_SERVE) != RUNTIME_SERVE:
        raise InputError(
            f"server group {doc.get('server')!r} runs on {doc.get('runtime')!r}, not synergai serve "
            "(emulate it with --emulate-config)",
            **where,
        )
    store = Path(model_store or os.environ.get(MODEL_STORE_ENV) or doc.get("model_store") or "/models")
    for k, m in enumerate(doc["models"]):
        f = store / m["file"]
        if not f.is_file():
            raise InputError(f"model {m['model']!r}: no model file {f} in the model store", **where)
        try:
            out.append(
                OnnxRuntime(
                    m.get("runtime_name") or m["model"],
                    f,
                    batch_size=int(m.get("batch_size") or 1),
                    batch_wait_ms=float(m.get("batch_wait_ms") or 0.0),
                    slots=int(m.get("slots") or 1),
                    threads=int(m.get("threads") or 1),
                )
            )
        except (TypeError, ValueError) as e:
            raise InputError(
                f"model {m['model']!r}: bad batch_size/batch_wait_ms/slots/threads: {e}", **where
            ) from None
    return out, shared


def onnx_runtime(
    spec: str, *, batch_size: int = 1, batch_wait_ms: float = 0.0, slots: int = 1, threads: int = 1
) -> OnnxRuntime:
    """``NAME`` (a zoo model), ``NAME=zoo:ZOO_NAME`` or ``NAME=/path/model.onnx``."""
    from synergai.models import InputError

    name, _, src = spec.partition("=")
    name = name.strip()
    src = src.strip() or f"zoo:{name}"
    if src.startswith("zoo:"):
        from synergai.profiling_data.profiler import zoo

        z = zoo.resolve(src[4:])
        if z is None:
            raise InputError(
                f"--onnx {spec!r}: no zoo model {src[4:]!r} (zoo: {', '.join(zoo.model_names())})", field="--onnx"
            )
        path = zoo.build(z)
    else:
        path = Path(src)
        if not path.is_file():
            raise InputError(f"--onnx {spec!r}: file not found", field="--onnx")
    return OnnxRuntime(name, path, batch_size=batch_size, batch_wait_ms=batch_wait_ms, slots=slots, threads=threads)


# ------------------------------------------------------------------------------------------ entry point


def run_server(
    runtimes: list[Runtime],
    host: str,
    port: int,
    *,
    shared: Optional[bool] = None,
    limits: Optional[HttpLimits] = None,
    port_file: Optional[str] = None,
) -> int:
    server = ModelServer(runtimes, shared=shared, limits=limits)
    return run_main(
        server.app, host, port, server.limits, label="synergai serve", port_file=port_file, after_listen=server.load
    )
