"""Recorded arrival traces by path: CSV, JSON lines or Parquet, any timestamp unit, optional model and
service-time columns, and disjoint training / replay windows.

A scenario declares a trace as::

    arrivals:
      process: trace
      path: azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv   # relative: data dir, then scenario dir
      format: csv                 # csv | jsonl | parquet (default: from the file name)
      time_column: TIMESTAMP
      time_unit: datetime         # s | ms | us | ns | datetime | datetime:%Y-%m-%d %H:%M:%S
      model_column: model         # optional: per-request model names (else drawn from the mix)
      service_column: exec_s      # optional: per-request service-time multipliers (value / training median)
      filter: {status: SUCCEED}   # optional: keep rows whose column equals the value (string compare)
      rate: scale                 # scale (default: time-scaled to the run's rate) | native | <req/s>
      train: {start: 0.0, end: 0.5}    # fractions of the trace's span (unit: fraction) or seconds (unit: s)
      replay: {start: 0.5, end: 1.0}

**Coarse timestamps.** The tick of a trace is the largest of 1 us, 1 ms, 10 ms, 100 ms, 1 s, 1 min that
divides every timestamp (``tick_s`` overrides it). Arrivals that share a tick are spread *evenly* within it:
the i-th of k arrivals stamped T gets ``T + (i + 0.5) / k x tick``. So the same trace in seconds,
milliseconds or datetimes gives the same arrivals, and a 1-second log does not become bursts of
simultaneous requests.

**Windows.** Times are seconds since the trace's first (kept) row. Planning statistics (burst scenarios,
model mix, service-time median) come from the *training* window only; runs replay the *replay* window,
which must start at or after the training window's end (no peeking). A run that needs more arrivals than
the replay window holds repeats it end to end (gap between copies: its mean gap).

**Data directory.** A relative ``path`` is looked up under the data directory first (``--data-dir``, else
``$SYNERGAI_DATA_DIR``, else ``../shared/data`` next to the repository when it exists), then next to the
scenario file. A trace marked ``optional: true`` (the bundled Azure and Alibaba scenarios) that is absent
makes its scenario be skipped with one line; otherwise an absent or malformed trace is an ``InputError``
(one line naming the file and field; exit 2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synergai.models import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Default data directory: ``../shared/data`` next to the repository (used only when it exists).
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DATA_DIR_ENV = "SYNERGAI_DATA_DIR"

_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_TICKS_NS = (60_000_000_000, 1_000_000_000, 100_000_000, 10_000_000, 1_000_000, 1_000)


class SkipScenario(Exception):
    """A scenario that cannot run here (e.g. its optional trace is absent); the message says why."""


def data_dir(explicit: Optional[str | Path] = None) -> Optional[Path]:
    """The data directory: ``explicit``, else ``$SYNERGAI_DATA_DIR``, else ``../shared/data`` if it exists."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float = Field(0.0, ge=0, description="Window start (fraction of the span, or seconds from the first row).")
    end: float = Field(1.0, gt=0, description="Window end (exclusive; same unit).")
    unit: Literal["fraction", "s"] = Field("fraction", description="`fraction` of the trace's span or `s` seconds.")

    @model_validator(mode="after")
    def _order(self) -> Window:
        if not self.end > self.start:
            raise ValueError("end must be > start")
        if self.unit == "fraction" and self.end > 1.0:
            raise ValueError("fraction windows must lie in [0, 1]")
        return self

    def bounds(self, span: float) -> tuple[float, float]:
        if self.unit == "s":
            return self.start, self.end
        return self.start * span, self.end * span


class TraceSpec(BaseModel):
    """Where and how to read a recorded trace (the ``process: trace`` fields of ``arrivals``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, description="Trace file; relative: under the data directory, then the scenario's folder."
    )
    format: Optional[Literal["csv", "jsonl", "parquet"]] = Field(None, description="Default: from the file suffix.")
    time_column: str = Field(min_length=1, description="Column with the arrival timestamps.")
    time_unit: str = Field("s", description="s | ms | us | ns | datetime | datetime:FORMAT (strftime).")
    model_column: Optional[str] = Field(None, description="Per-request model names (default: drawn from the mix).")
    service_column: Optional[str] = Field(
        None, description="Per-request execution time; service multiplier = value / training-window median."
    )
    filter: dict[str, str] = Field(default_factory=dict, description="Keep only rows whose column equals the value.")
    tick_s: Optional[float] = Field(None, gt=0, description="Timestamp resolution, s (default: detected).")
    rate: Union[Literal["scale", "native"], float] = Field(
        "scale",
        description="`scale`: time-scaled so the mean rate is the run's load x capacity; `native`: recorded "
        "timing (one run at the replay window's own rate); a number: that rate in req/s.",
    )
    train: Window = Field(default_factory=lambda: Window(start=0.0, end=0.5), description="Planning statistics window.")
    replay: Window = Field(
        default_factory=lambda: Window(start=0.5, end=1.0), description="Replayed window (later, disjoint)."
    )
    optional: bool = Field(
        False, description="Skip the scenario (one line) instead of failing when the file is absent."
    )

    @field_validator("time_unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        if v in _UNIT_NS or v == "datetime" or v.startswith("datetime:"):
            return v
        raise ValueError("time_unit must be s, ms, us, ns, datetime or datetime:FORMAT")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v):
        if isinstance(v, float) and not v > 0:
            raise ValueError("rate must be > 0 req/s, `scale` or `native`")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> TraceSpec:
        if self.train.unit == self.replay.unit and self.replay.start < self.train.end:
            raise ValueError("replay window must start at or after the training window's end (no peeking)")
        return self


@dataclass(frozen=True)
class Trace:
    """A loaded trace: sorted arrival times (s from the first row), per-row model names and service values."""

    file: str
    times: np.ndarray
    models: Optional[np.ndarray]
    service: Optional[np.ndarray]
    tick_s: float

    @property
    def span(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) else 0.0

    def window(self, w: Window, *, field: str) -> Trace:
        lo, hi = w.bounds(self.span)
        rel = self.times - self.times[0]
        sel = (rel >= lo) & ((rel < hi) if hi < self.span else True)
        if int(np.sum(sel)) < 2:
            raise InputError(
                f"window [{lo:g} s, {hi:g} s) holds {int(np.sum(sel))} arrivals (need >= 2)",
                file=self.file,
                field=field,
            )
        return Trace(
            self.file,
            self.times[sel],
            None if self.models is None else self.models[sel],
            None if self.service is None else self.service[sel],
            self.tick_s,
        )

    def rate(self) -> float:
        """Mean arrival rate (req/s) over the trace's span."""
        return (len(self.times) - 1) / max(self.span, 1e-12)


def resolve_path(spec: TraceSpec, scenario_file: str = "", data: Optional[str | Path] = None) -> Path:
    """The trace file, or ``SkipScenario`` (optional) / ``InputError`` when absent."""
    p = Path(os.path.expanduser(spec.path))
    tried = []
    if p.is_absolute():
        tried.append(p)
    else:
        d = data_dir(data)
        if d is not None:
            tried.append(d / p)
        if scenario_file:
            tried.append(Path(scenario_file).parent / p)
        if d is None and not scenario_file:
            tried.append(p)
    for t in tried:
        if t.is_file():
            return t
    where = tried[0] if tried else p
    if spec.optional:
        hint = "" if data_dir(data) is not None else f" (no data directory: pass --data-dir or set ${DATA_DIR_ENV})"
        raise SkipScenario(f"{where} is absent{hint}")
    raise InputError(
        f"trace file not found (looked in {', '.join(str(t) for t in tried) or spec.path})",
        file=scenario_file or None,
        field="arrivals.path",
    )


def _read(path: Path, spec: TraceSpec) -> tuple[pd.DataFrame, int]:
    """The table and the file line of its first data row (csv: 2, after the header; jsonl/parquet: 1)."""
    fmt = spec.format or {
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "jsonl",
        ".parquet": "parquet",
        ".pq": "parquet",
    }.get(path.suffix.lower(), "csv")
    cols = [spec.time_column] + [c for c in (spec.model_column, spec.service_column) if c] + list(spec.filter)
    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_parquet(path)
    except Exception as e:  # any parser error is a malformed file: one line
        raise InputError(
            f"cannot read as {fmt}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=str(path)
        ) from None
    for c in cols:
        if c not in df.columns:
            raise InputError(
                f"missing column {c!r} (columns: {', '.join(map(str, df.columns[:12]))})", file=str(path), field=c
            )
    if df.empty:
        raise InputError("no data rows", file=str(path))
    return df, (2 if fmt == "csv" else 1)


def _times_ns(col: pd.Series, rows: np.ndarray, unit: str, path: Path, name: str, first: int) -> np.ndarray:
    """Timestamps of ``rows`` as int64 nanoseconds; a bad value raises naming its file row (``first`` = row 0's line)."""
    sub = col.iloc[rows]
    if unit.startswith("datetime"):
        fmt = unit.split(":", 1)[1] if ":" in unit else "ISO8601"
        # utc=True: offsets (+01:00, Z) are honoured, naive stamps are taken as UTC
        t = pd.to_datetime(sub.astype(str).str.strip(), format=fmt, errors="coerce", utc=True)
        bad = t.isna().to_numpy()
        what = "a datetime" + ("" if fmt == "ISO8601" else f" in format {fmt!r}")
        vals = None if bad.any() else t.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    else:
        x = pd.to_numeric(sub, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(x)
        what = f"a number of {unit}"
        vals = None if bad.any() else np.round(x * _UNIT_NS[unit]).astype(np.int64)
    if vals is None:
        i = int(np.argmax(bad))
        raise InputError(f"not {what}: {sub.iloc[i]!r}", file=str(path), row=int(rows[i]) + first, field=name)
    return vals


def detect_tick_ns(t_ns: np.ndarray) -> int:
    """Largest of 1 min, 1 s, 100 ms, 10 ms, 1 ms, 1 us dividing every timestamp (1 ns otherwise)."""
    for tick in _TICKS_NS:
        if not np.any(t_ns % tick):
            return tick
    return 1


def spread_within_ticks(t_ns: np.ndarray, tick_ns: int) -> np.ndarray:
    """Seconds; the k arrivals stamped with one tick T become T + (i + 0.5) / k x tick, i = 0..k-1 (sorted input)."""
    base = t_ns - (t_ns % tick_ns)
    _, start, counts = np.unique(base, return_index=True, return_counts=True)
    k = np.repeat(counts, counts)
    i = np.arange(len(t_ns)) - np.repeat(start, counts)
    return (base - base[0]) / 1e9 + (i + 0.5) / k * (tick_ns / 1e9)


def load_trace(spec: TraceSpec, scenario_file: str = "", data: Optional[str | Path] = None) -> Trace:
    """The whole trace (after filters), times spread within their ticks."""
    path = resolve_path(spec, scenario_file, data)
    return _load(str(path), spec.model_dump_json(include=_READ_FIELDS))


def split(trace: Trace, spec: TraceSpec, scenario_file: str = "") -> tuple[Trace, Trace]:
    """(training window, replay window); the replay window must not start before the training window ends."""
    tlo, thi = spec.train.bounds(trace.span)
    rlo, _ = spec.replay.bounds(trace.span)
    if rlo < min(thi, trace.span) - 1e-9:
        raise InputError(
            f"replay window starts at {rlo:g} s, before the training window ends ({thi:g} s)",
            file=scenario_file or None,
            field="arrivals.replay",
        )
    return trace.window(spec.train, field="arrivals.train"), trace.window(spec.replay, field="arrivals.replay")


_READ_FIELDS = {"format", "time_column", "time_unit", "model_column", "service_column", "filter", "tick_s"}


@lru_cache(maxsize=8)
def _load(path_s: str, spec_json: str) -> Trace:
    path = Path(path_s)
    spec = TraceSpec.model_validate({**json.loads(spec_json), "path": path_s})
    df, first = _read(path, spec)
    keep = np.ones(len(df), dtype=bool)
    for c, v in spec.filter.items():
        keep &= df[c].astype(str).str.strip().to_numpy() == str(v)
    svc = None
    if spec.service_column:
        s = pd.to_numeric(df[spec.service_column], errors="coerce").to_numpy(dtype=float)
        keep &= np.isfinite(s) & (s > 0)  # failed / unmeasured requests carry no service time
        svc = s
    rows = np.flatnonzero(keep)
    if len(rows) < 2:
        raise InputError(
            f"{len(rows)} rows left after filter/service checks (need >= 2)",
            file=path_s,
            field=spec.service_column or (next(iter(spec.filter), None)) or spec.time_column,
        )
    t_ns = _times_ns(df[spec.time_column], rows, spec.time_unit, path, spec.time_column, first)
    order = np.argsort(t_ns, kind="stable")
    t_ns, rows = t_ns[order], rows[order]
    tick = int(round(spec.tick_s * 1e9)) if spec.tick_s else detect_tick_ns(t_ns)
    times = spread_within_ticks(t_ns, tick)
    models = None
    if spec.model_column:
        models = df[spec.model_column].iloc[rows].astype(str).str.strip().str.lower().to_numpy()
        empty = models == ""
        if empty.any():
            raise InputError(
                "empty model name", file=path_s, row=int(rows[np.argmax(empty)]) + first, field=spec.model_column
            )
    return Trace(path_s, times, models, None if svc is None else svc[rows], tick / 1e9)


def window_stats(train: Trace) -> tuple:
    """Burst load scenarios from the training window: ``((1.0, 0.8), (f, 0.2))`` where f is the mean rate of the
    busiest 20 % of 20-arrival windows over the mean, or ``()`` when f <= 1.05 or the window is short."""
    base = train.times
    if len(base) < 200:
        return ()
    rate = train.rate()
    w = 20.0 / rate
    counts = np.bincount(((base - base[0]) // w).astype(np.int64))
    r = np.sort(counts / w / rate)
    f = float(r[int(0.8 * len(r)) :].mean())
    return ((1.0, 0.8), (round(f, 4), 0.2)) if f > 1.05 else ()


def tile(base: np.ndarray, n: int) -> np.ndarray:
    """Repeat times end to end until there are n (gap between copies: the mean gap); starts at 0."""
    base = base - base[0]
    if len(base) >= n:
        return base[:n]
    span = base[-1] + base[-1] / max(1, len(base) - 1)
    reps = -(-n // len(base))
    return np.concatenate([base + k * span for k in range(reps)])[:n]
