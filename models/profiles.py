"""Profiling data: (model, engine, device, configuration) -> latency, throughput, power.

A ``ProfileRecord`` is one measured configuration; a ``ProfileTable`` is a validated
collection of them, backed by a pandas DataFrame for vectorised planning.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Iterable, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError, pydantic_error

Architecture = Literal["amd64", "arm64"]

#: Columns that identify a configuration; two records with the same key are duplicates.
KEY_FIELDS = ("model", "engine", "device", "precision", "batch_size", "threads", "power_mode")


class ProfileRecord(BaseModel):
    """One configuration of one model on one device, with its measured performance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="Model name, normalised (e.g. `resnet50`, `bert`).")
    engine: str = Field(
        min_length=1, description="Inference engine (e.g. `tensorrt`, `onnxruntime`, `tflite`, `armnn`)."
    )
    device: str = Field(
        min_length=1, description="Device/board name, normalised (e.g. `jetson-agx-orin`, `x86-xeon-8275cl`)."
    )
    architecture: Architecture = Field(description="CPU architecture as Kubernetes names it (`kubernetes.io/arch`).")
    accelerator: str = Field(
        "none", description="Accelerator used by this configuration: `none` (CPU), `gpu`, `dla`, `npu`, ..."
    )
    precision: str = Field(
        min_length=1, description="Numeric precision of weights/activations (`fp32`, `fp16`, `int8`, ...)."
    )
    batch_size: int = Field(ge=1, description="Requests processed together per inference call (count).")
    threads: Optional[int] = Field(
        None, ge=1, description="CPU threads used by the engine (count); empty when unknown."
    )
    power_mode: str = Field(
        "default",
        min_length=1,
        description="Board power mode (e.g. `maxn`, `maxq`, `15w`); `default` where none applies.",
    )
    latency_p50_ms: float = Field(
        gt=0, description="Median latency of one inference call (one batch), in milliseconds."
    )
    latency_p90_ms: float = Field(gt=0, description="90th percentile latency of one inference call, in milliseconds.")
    latency_p99_ms: float = Field(gt=0, description="99th percentile latency of one inference call, in milliseconds.")
    throughput_rps: float = Field(
        gt=0, description="Sustained throughput of one replica, in requests (samples) per second."
    )
    power_w: Optional[float] = Field(
        None, gt=0, description="Average power while serving, in watts (whole board/accelerator); empty when unknown."
    )
    memory_mb: Optional[float] = Field(
        None, gt=0, description="Peak resident memory of the engine, in MiB; empty when unknown."
    )
    cpu_cores: float = Field(gt=0, description="CPU cores one replica needs (Kubernetes cpu request), in cores.")
    memory_request_mb: float = Field(gt=0, description="Memory one replica needs (Kubernetes memory request), in MiB.")
    accelerators: int = Field(
        0, ge=0, description="Accelerator devices one replica needs (e.g. `nvidia.com/gpu`), count."
    )
    source: str = Field(
        "unknown", description="Where the numbers come from (e.g. `mlperf-v3.0:closed/NVIDIA/Orin_TRT`, `measured`)."
    )
    measured_at: Optional[datetime] = Field(
        None, description="When the measurement was taken (ISO 8601); newer wins on duplicates."
    )

    @field_validator("model", "engine", "device", "precision", "power_mode", "accelerator")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()

    @model_validator(mode="after")
    def _ordered(self) -> ProfileRecord:
        for name in (
            "latency_p50_ms",
            "latency_p90_ms",
            "latency_p99_ms",
            "throughput_rps",
            "cpu_cores",
            "memory_request_mb",
        ):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite")
        if self.latency_p99_ms > 1e6:
            raise ValueError("latency over 1000 s is implausible: latencies must be in milliseconds (ns or us given?)")
        if not (self.latency_p50_ms <= self.latency_p90_ms <= self.latency_p99_ms):
            raise ValueError("latency percentiles must be ordered p50 <= p90 <= p99")
        return self

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, f) for f in KEY_FIELDS)

    @property
    def config_id(self) -> str:
        """Stable short name of the configuration on its device."""
        t = "auto" if self.threads is None else str(self.threads)
        return f"{self.engine}/{self.precision}/b{self.batch_size}/t{t}/{self.power_mode}"


COLUMNS = list(ProfileRecord.model_fields)
REQUIRED = [n for n, f in ProfileRecord.model_fields.items() if f.is_required()]


class ProfileTable:
    """Validated profile records; ``df`` is a DataFrame with one row per record."""

    def __init__(
        self,
        records: Iterable[ProfileRecord],
        *,
        source: str = "<memory>",
        on_duplicate: Literal["error", "newest"] = "error",
    ):
        recs = list(records)
        self.source = source
        self.replaced: list[tuple[ProfileRecord, ProfileRecord]] = []
        by_key: dict[tuple, int] = {}
        kept: list[ProfileRecord] = []
        for i, r in enumerate(recs):
            j = by_key.get(r.key)
            if j is None:
                by_key[r.key] = len(kept)
                kept.append(r)
                continue
            if on_duplicate == "error":
                raise InputError(
                    f"duplicate configuration {r.model}/{r.device}/{r.config_id} (first at row {j + 2})",
                    file=source,
                    row=i + 2,
                    field="model",
                )
            old = kept[j]
            newer = _ts(r) >= _ts(old)
            if newer:
                kept[j] = r
            self.replaced.append((r, old) if newer else (old, r))
        self.records: list[ProfileRecord] = kept
        self.df = pd.DataFrame([r.model_dump() for r in kept], columns=COLUMNS)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.records})

    @property
    def devices(self) -> list[str]:
        return sorted({r.device for r in self.records})

    def for_model_device(self, model: str, device: str) -> list[ProfileRecord]:
        return [r for r in self.records if r.model == model and r.device == device]

    @classmethod
    def load(cls, path: str | Path, **kw) -> ProfileTable:
        """Load CSV or Parquet; every bad cell raises ``InputError`` naming file, row and field."""
        path = Path(path)
        name = str(path)
        if not path.exists():
            raise InputError("file not found", file=name)
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                df = pd.read_parquet(path)
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise InputError("file is empty", file=name) from None
        except Exception as e:  # parser errors from pandas/pyarrow
            raise InputError(f"cannot read: {e}", file=name) from None
        return cls.from_frame(df, source=name, **kw)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, source: str = "<frame>", **kw) -> ProfileTable:
        if len(df) == 0:
            raise InputError("no profile rows", file=source)
        cols = [str(c).strip() for c in df.columns]
        df = df.copy()
        df.columns = cols
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}", file=source, row=1, field=missing[0])
        unknown = [c for c in cols if c not in COLUMNS]
        if unknown:
            raise InputError(
                f"unknown column(s) {', '.join(unknown)}; expected {', '.join(COLUMNS)}",
                file=source,
                row=1,
                field=unknown[0],
            )
        recs = []
        for i, row in enumerate(df.to_dict(orient="records")):
            clean = {}
            for k, v in row.items():
                if v is None or v is pd.NaT:
                    continue
                if isinstance(v, float) and math.isnan(v):  # a typed (Parquet) frame's missing value
                    if k in REQUIRED:
                        raise InputError("missing value", file=source, row=i + 2, field=k)
                    continue
                if isinstance(v, str):
                    v = v.strip()
                    if v == "":
                        continue
                    if k in _NUMERIC and v.lower() in ("nan", "inf", "-inf", "infinity"):
                        raise InputError(f"not a finite number (got {v!r})", file=source, row=i + 2, field=str(k))
                if isinstance(v, float) and not math.isfinite(v):
                    raise InputError(f"not a finite number (got {v!r})", file=source, row=i + 2, field=str(k))
                clean[k] = v
            try:
                recs.append(ProfileRecord.model_validate(clean))
            except ValidationError as e:
                raise pydantic_error(e, file=source, row=i + 2) from None
        return cls(recs, source=source, **kw)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() in (".parquet", ".pq"):
            self.df.to_parquet(path, index=False)
        else:
            self.df.to_csv(path, index=False, float_format="%.6g")

    @classmethod
    def merge(cls, tables: Iterable[ProfileTable]) -> ProfileTable:
        """Union of several tables; where two describe the same configuration the newer measurement wins."""
        tables = list(tables)
        recs = [r for t in tables for r in t.records]
        return cls(recs, source="+".join(t.source for t in tables), on_duplicate="newest")


_NUMERIC = {
    n for n, f in ProfileRecord.model_fields.items() if f.annotation in (float, int, Optional[float], Optional[int])
}


def _ts(r: ProfileRecord) -> float:
    if r.measured_at is None:
        return float("-inf")
    m = r.measured_at
    return m.timestamp() if m.tzinfo else m.replace(tzinfo=None).timestamp()
