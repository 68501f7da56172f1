"""The profiling run: grid -> (sparse) selection -> measurement -> ProfileRecords + sidecar details.

Output: a profile CSV (``ProfileTable`` format, rewritten atomically after every configuration, so an
interrupted run keeps everything measured so far) and ``<out>.meta.jsonl`` with one JSON line per
measurement: the full measurement settings, latency summary, CPU time and utilisation, spread p99/p50, repeat
variation, peak memory, model file digest, engine version and device facts.

A configuration whose key (model, engine, device, precision, batch, threads, power mode) is already in the
output file is skipped unless ``force``.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional

from synergai.models.errors import InputError
from synergai.models.profiles import ProfileRecord, ProfileTable

from . import device as dev, engines as eng, measure, modelfile, zoo
from .sparse import Obs, Point, SparseSearch

PRECISIONS = ("fp32", "int8")
DEFAULT_BATCHES = (1, 2, 4, 8, 16)
QUICK_BATCHES = (1, 4)
#: memory request = peak RSS x this, rounded up to MEMORY_STEP_MB
MEMORY_HEADROOM = 1.25
MEMORY_STEP_MB = 64


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class ModelEntry:
    name: str  # record model name
    path: Path  # fp32 ONNX file
    family: str  # cnn | transformer | onnx (user file)
    specs: list  # modelfile.InputSpec
    digest: str
    int8_path: Optional[Path] = None
    int8_error: Optional[str] = None

    def file_for(self, precision: str) -> Path:
        if precision == "fp32":
            return self.path
        if self.int8_path is None and self.int8_error is None:
            root = logging.getLogger()
            level = root.level
            root.setLevel(max(level, logging.ERROR))  # onnxruntime's quantiser logs advice on the root logger
            try:
                self.int8_path = modelfile.quantized(self.path, "cnn" if self.family == "cnn" else "transformer")
            except RuntimeError as e:
                self.int8_error = str(e)
            finally:
                root.setLevel(level)
        if self.int8_path is None:
            raise RuntimeError(self.int8_error or "int8 quantisation failed")
        return self.int8_path


@dataclass(frozen=True, order=True)
class Config:
    engine: str
    model: str
    precision: str
    batch: int
    threads: int

    @property
    def group(self) -> tuple:
        return (self.engine, self.model, self.precision)

    def label(self) -> str:
        return f"{self.model} {self.engine} {self.precision} b{self.batch} t{self.threads}"


@dataclass
class Plan:
    """What a run will measure (validated inputs)."""

    engines: list[str]
    unavailable: dict[str, str]
    models: list[ModelEntry]
    precisions: list[str]
    batches: list[int]
    threads: list[int]
    settings: measure.Settings
    facts: dev.DeviceFacts
    budget: Optional[int] = None

    def grid(self) -> list[Config]:
        return [
            Config(e, m.name, p, b, t)
            for m in self.models
            for e in self.engines
            for p in self.precisions
            for t in self.threads
            for b in self.batches
        ]


def parse_list(values: Optional[Iterable[str]], what: str) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out


def parse_ints(values: Optional[Iterable[str]], flag: str) -> list[int]:
    out = []
    for v in parse_list(values, flag):
        try:
            out.append(int(v))
        except ValueError:
            raise InputError(f"not an integer (got {v!r})", field=flag) from None
    return out


def default_threads(cores: int, quick: bool) -> list[int]:
    if quick:
        return sorted({1, cores})
    ts = {cores}
    t = 1
    while t < cores:
        ts.add(t)
        t *= 2
    return sorted(ts)


def _model_name_from_path(p: Path) -> str:
    n = re.sub(r"[^a-z0-9.]+", "-", p.stem.lower()).strip("-")
    return n or "model"


def make_plan(
    *,
    engines: list[str],
    model_names: list[str],
    model_paths: list[Path],
    precisions: list[str],
    batches: list[int],
    threads: list[int],
    quick: bool,
    budget: Optional[int],
    device: Optional[str],
    min_runs: Optional[int],
    min_time: Optional[float],
    facts: Optional[dev.DeviceFacts] = None,
) -> Plan:
    """Validate every input (one-line ``InputError`` on the first bad one) and build the run plan."""
    facts = facts or dev.read_facts(device)
    cores = facts.cores_usable
    # engines
    names = [e.lower() for e in engines] or [eng.DEFAULT_ENGINE]
    if "all" in names:
        names = eng.engine_names()
    unavailable: dict[str, str] = {}
    chosen = []
    for n in names:
        if n not in eng.engine_names():
            raise InputError(
                f"unknown engine {n!r}; choose from {', '.join(eng.engine_names())} or all", field="--engine"
            )
        ok, why = eng.get_engine(n).available()
        if ok:
            if n not in chosen:
                chosen.append(n)
        else:
            unavailable[n] = why
    if not chosen:
        raise InputError(
            "no requested engine is available here: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()),
            field="--engine",
        )
    # batches / threads
    for b in batches:
        if b < 1:
            raise InputError(f"batch size must be >= 1 (got {b})", field="--batch")
    for t in threads:
        if t < 1:
            raise InputError(f"threads must be >= 1 (got {t})", field="--threads")
        if t > cores:
            raise InputError(
                f"{t} threads asked but this machine has {cores} usable core{'s' if cores != 1 else ''}",
                field="--threads",
            )
    batches = sorted(set(batches)) or list(QUICK_BATCHES if quick else DEFAULT_BATCHES)
    threads = sorted(set(threads)) or default_threads(cores, quick)
    # precisions
    precs = [p.lower() for p in precisions] or ["fp32", "int8"]
    for p in precs:
        if p not in PRECISIONS:
            hint = " (fp16 is not offered on CPU engines: see PROFILER.md)" if p in ("fp16", "bf16") else ""
            raise InputError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}{hint}", field="--precision")
    precs = list(dict.fromkeys(precs))
    # settings
    base = measure.QUICK if quick else measure.DEFAULT
    if min_runs is not None and min_runs < 1:
        raise InputError(f"must be >= 1 (got {min_runs})", field="--min-runs")
    if min_time is not None and (min_time < 0 or not math.isfinite(min_time)):
        raise InputError(f"must be >= 0 s (got {min_time})", field="--min-time")
    settings = measure.Settings(
        warmup_runs=base.warmup_runs,
        warmup_time=min(base.warmup_time, min_time if min_time is not None else base.warmup_time),
        min_runs=min_runs if min_runs is not None else base.min_runs,
        min_time=min_time if min_time is not None else base.min_time,
        repeats=min(base.repeats, min_runs) if min_runs is not None else base.repeats,
        max_time=max(base.max_time, (min_time or 0) * 2),
    )
    if budget is not None and budget < 1:
        raise InputError(f"must be >= 1 (got {budget})", field="--budget")
    # models
    entries: list[ModelEntry] = []
    wanted = [m.lower() for m in model_names]
    if not wanted and not model_paths:
        wanted = list(zoo.DEFAULT_MODELS)
    for w in wanted:
        spec = zoo.resolve(w)
        if spec is None:
            raise InputError(
                f"unknown model {w!r}; choose from {', '.join(zoo.model_names())} or give --model FILE.onnx",
                field="--model-name",
            )
        if any(e.name == spec.name for e in entries):
            continue
        path = zoo.build(spec)
        m = modelfile.check_readable(path)
        entries.append(
            ModelEntry(spec.name, path, spec.family, modelfile.input_specs(m, str(path)), zoo.file_digest(path))
        )
    for p in model_paths:
        p = Path(p)
        m = modelfile.check_readable(p)
        specs = modelfile.input_specs(m, str(p))
        for b in batches:
            modelfile.check_batch(specs, b, str(p))
        name = _model_name_from_path(p)
        if any(e.name == name for e in entries):
            raise InputError(f"two models would be recorded as {name!r}", file=str(p), field="--model")
        entries.append(ModelEntry(name, p.resolve(), "onnx", specs, zoo.file_digest(p)))
        del m
    return Plan(chosen, unavailable, entries, precs, batches, threads, settings, facts, budget)


# --------------------------------------------------------------------------------------- measurement
@dataclass
class Outcome:
    config: Config
    record: Optional[ProfileRecord] = None
    meta: dict = field(default_factory=dict)
    error: Optional[str] = None
    skipped: bool = False  # already in the output file

    @property
    def ok(self) -> bool:
        return self.record is not None and not self.skipped


def measure_config(plan: Plan, cfg: Config, *, energy: Optional[dev.Rapl] = None) -> Outcome:
    """Run one configuration; engine failures become ``Outcome.error`` (one line), never exceptions."""
    entry = next(m for m in plan.models if m.name == cfg.model)
    engine = eng.get_engine(cfg.engine)
    try:
        path = entry.file_for(cfg.precision)
    except RuntimeError as e:
        return Outcome(cfg, error=str(e))
    feeds = modelfile.make_inputs(entry.specs, cfg.batch)
    shapes = {k: v.shape for k, v in feeds.items()}
    gc.collect()
    rss0, _ = dev.rss_mb()
    peak_reset = dev.reset_peak_rss()
    t_load = time.perf_counter()
    try:
        session = engine.load(path, threads=cfg.threads, batch=cfg.batch, precision=cfg.precision, input_shapes=shapes)
    except RuntimeError as e:
        return Outcome(cfg, error=str(e))
    load_s = time.perf_counter() - t_load
    try:
        run = session.run
        res = measure.run_timed(lambda: run(feeds), cfg.batch, plan.settings, energy=energy)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        return Outcome(
            cfg,
            error=f"{cfg.engine} failed while running: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
        )
    finally:
        _, peak = dev.rss_mb()
        session.close()
        del session
        gc.collect()
    facts = plan.facts
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ok, version = engine.available()
    source = f"measured:{facts.hostname}:{cfg.engine}-{version}/{engine.settings(cfg.threads, cfg.precision)}:{plan.settings.compact()}"
    mem_req = math.ceil(peak * MEMORY_HEADROOM / MEMORY_STEP_MB) * MEMORY_STEP_MB
    try:
        rec = ProfileRecord(
            model=cfg.model,
            engine=cfg.engine,
            device=facts.device,
            architecture=facts.architecture,
            accelerator="none",
            precision=cfg.precision,
            batch_size=cfg.batch,
            threads=cfg.threads,
            power_mode=facts.power_mode,
            latency_p50_ms=res.p50,
            latency_p90_ms=res.p90,
            latency_p99_ms=res.p99,
            throughput_rps=res.throughput_rps,
            power_w=res.power_w if res.power_w and res.power_w > 0 else None,
            memory_mb=round(peak, 1),
            cpu_cores=float(cfg.threads),
            memory_request_mb=float(mem_req),
            accelerators=0,
            source=source,
            measured_at=now,
        )
    except Exception as e:  # pydantic: should not happen with real timings
        return Outcome(cfg, error=f"measurement did not validate: {str(e).splitlines()[0]}")
    meta = {
        "key": {
            "model": rec.model,
            "engine": rec.engine,
            "device": rec.device,
            "precision": rec.precision,
            "batch_size": rec.batch_size,
            "threads": rec.threads,
            "power_mode": rec.power_mode,
        },
        "measured_at": now.isoformat(),
        "settings": plan.settings.as_dict(),
        "engine_version": version,
        "engine_options": engine.settings(cfg.threads, cfg.precision),
        "model_file": str(path),
        "model_digest": zoo.file_digest(path) if cfg.precision != "fp32" else entry.digest,
        "input_shapes": {k: list(v) for k, v in shapes.items()},
        "load_s": round(load_s, 4),
        **res.summary(),
        "rss_before_mb": round(rss0, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_scope": "config" if peak_reset else "process-lifetime",
        "memory_request_mb": mem_req,
        "device_facts": facts.as_dict(),
    }
    return Outcome(cfg, record=rec, meta=meta)


# ---------------------------------------------------------------------------------------------- output
class Store:
    """The output CSV (+ sidecar), rewritten atomically after every new record."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.meta_path = self.out.with_name(self.out.name + ".meta.jsonl")
        self.records: list[ProfileRecord] = []
        if self.out.exists() and self.out.stat().st_size > 0:
            try:
                self.records = list(ProfileTable.load(self.out, on_duplicate="newest").records)
            except InputError as e:
                if e.message != "no profile rows":  # a header-only file is an empty store
                    raise
        self.keys = {r.key for r in self.records}

    def has(self, key: tuple) -> bool:
        return key in self.keys

    def get(self, key: tuple) -> Optional[ProfileRecord]:
        for r in self.records:
            if r.key == key:
                return r
        return None

    def add(self, rec: ProfileRecord, meta: dict) -> None:
        self.records = [r for r in self.records if r.key != rec.key] + [rec]
        self.keys.add(rec.key)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        ProfileTable(self.records, source=str(self.out)).save(tmp)
        os.replace(tmp, self.out)
        with open(self.meta_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(meta, sort_keys=True) + "\n")


def record_key(plan: Plan, cfg: Config) -> tuple:
    return (cfg.model, cfg.engine, plan.facts.device, cfg.precision, cfg.batch, cfg.threads, plan.facts.power_mode)


def _obs(rec: ProfileRecord) -> Obs:
    return Obs(rec.latency_p99_ms, rec.throughput_rps, rec.threads or 1)


def run(
    plan: Plan,
    store: Store,
    *,
    force: bool = False,
    on_start: Callable[[int], None] = lambda total: None,
    on_done: Callable[[Outcome], None] = lambda o: None,
    measure_fn: Callable[[Plan, Config], Outcome] | None = None,
) -> list[Outcome]:
    """Measure the plan's configurations (all, or a sparse selection under ``plan.budget``).

    ``KeyboardInterrupt`` propagates after the store holds everything measured so far; outcomes are
    collected in the returned list (also on interrupt, via the ``outcomes`` attribute of the exception).
    """
    measure_fn = measure_fn or (lambda p, c: measure_config(p, c, energy=energy))
    energy = dev.Rapl()
    grid = plan.grid()
    outcomes: list[Outcome] = []
    try:
        if plan.budget is None:
            todo = []
            for c in grid:
                if store.has(record_key(plan, c)) and not force:
                    outcomes.append(Outcome(c, record=store.get(record_key(plan, c)), skipped=True))
                else:
                    todo.append(c)
            on_start(len(todo))
            for c in todo:
                o = measure_fn(plan, c)
                if o.record is not None:
                    store.add(o.record, o.meta)
                outcomes.append(o)
                on_done(o)
        else:
            grids = {}
            for c in grid:
                bs, ts = grids.setdefault(c.group, (set(), set()))
                bs.add(c.batch)
                ts.add(c.threads)
            known = {}
            if not force:
                for c in grid:
                    r = store.get(record_key(plan, c))
                    if r is not None:
                        known[Point(c.group, c.batch, c.threads)] = _obs(r)
                        outcomes.append(Outcome(c, record=r, skipped=True))
            search = SparseSearch({g: (sorted(b), sorted(t)) for g, (b, t) in grids.items()}, plan.budget, known)
            on_start(min(plan.budget, search.remaining()))
            while True:
                p = search.next()
                if p is None:
                    break
                c = Config(p.group[0], p.group[1], p.group[2], p.batch, p.threads)
                o = measure_fn(plan, c)
                if o.record is not None:
                    store.add(o.record, o.meta)
                search.observe(p, _obs(o.record) if o.record is not None else None)
                outcomes.append(o)
                on_done(o)
    except KeyboardInterrupt as e:
        e.outcomes = outcomes  # type: ignore[attr-defined]
        raise
    return outcomes
