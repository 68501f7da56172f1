"""Expected load: per-model arrival rate and deadline, or an arrival trace."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .cluster import load_structured
from .errors import InputError, pydantic_error


class ModelDemand(BaseModel):
    """Expected demand for one model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Model name; must exist in the profiles.")
    rate_rps: float = Field(ge=0, description="Expected arrival rate, in requests per second.")
    deadline_ms: float = Field(gt=0, description="Latency deadline (SLO) per request, end to end, in milliseconds.")
    priority: float = Field(
        1.0, gt=0, description="Weight of a violating request of this model relative to others (unitless)."
    )

    @field_validator("model")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()

    @model_validator(mode="after")
    def _finite(self) -> ModelDemand:
        if not (math.isfinite(self.rate_rps) and math.isfinite(self.deadline_ms)):
            raise ValueError("rate_rps and deadline_ms must be finite")
        return self


class WorkloadSpec(BaseModel):
    """Per-model expected load."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("workload", description="Workload name, for reports.")
    models: list[ModelDemand] = Field(min_length=1, description="Demand per model.")

    @model_validator(mode="after")
    def _unique(self) -> WorkloadSpec:
        seen = set()
        for i, d in enumerate(self.models):
            if d.model in seen:
                raise ValueError(f"duplicate model {d.model!r} (models.{i}.model)")
            seen.add(d.model)
        return self

    def demand(self, model: str) -> ModelDemand:
        for d in self.models:
            if d.model == model:
                return d
        raise KeyError(model)

    def scaled(self, factor: float) -> WorkloadSpec:
        return self.model_copy(
            update={"models": [d.model_copy(update={"rate_rps": d.rate_rps * factor}) for d in self.models]}
        )

    @classmethod
    def from_trace(cls, trace: Trace, defaults: Optional[WorkloadSpec] = None, name: str = "trace") -> WorkloadSpec:
        """Expected load from an arrival trace: rate = arrivals / trace span; deadline = the trace's
        tightest deadline for the model, else the default workload's; priority from the defaults."""
        if len(trace) == 0:
            raise InputError("trace has no arrivals")
        span = float(trace.time_s[-1] - trace.time_s[0]) if len(trace) > 1 else 1.0
        span = span if span > 0 else 1.0
        out = []
        for m in sorted(set(trace.model.tolist())):
            sel = trace.model == m
            dls = trace.deadline_ms[sel]
            dls = dls[~np.isnan(dls)]
            d0 = None
            if defaults is not None:
                try:
                    d0 = defaults.demand(m)
                except KeyError:
                    d0 = None
            if len(dls):
                dl = float(dls.min())
            elif d0 is not None:
                dl = d0.deadline_ms
            else:
                raise InputError(f"model {m!r} has no deadline in the trace or the workload", field="deadline_ms")
            out.append(
                ModelDemand(
                    model=m, rate_rps=float(sel.sum()) / span, deadline_ms=dl, priority=d0.priority if d0 else 1.0
                )
            )
        return cls(name=name, models=out)

    @classmethod
    def load(cls, path: str | Path) -> WorkloadSpec:
        data = load_structured(path)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e, file=str(path)) from None


class Trace:
    """Arrivals sorted by time: ``time_s`` (float64), ``model`` (str), ``deadline_ms`` (float64, NaN = workload default)."""

    def __init__(self, time_s, model, deadline_ms=None, origin=None):
        self.time_s = np.asarray(time_s, dtype=np.float64)
        self.model = np.asarray(model, dtype=object)
        n = len(self.time_s)
        self.deadline_ms = np.full(n, np.nan) if deadline_ms is None else np.asarray(deadline_ms, dtype=np.float64)
        self.origin = np.asarray(origin if origin is not None else ["any"] * n, dtype=object)
        order = np.argsort(self.time_s, kind="stable")
        if not np.all(order == np.arange(n)):
            self.time_s, self.model = self.time_s[order], self.model[order]
            self.deadline_ms, self.origin = self.deadline_ms[order], self.origin[order]

    def __len__(self) -> int:
        return len(self.time_s)

    def with_deadlines(self, workload: WorkloadSpec) -> Trace:
        """Fill missing deadlines from the workload's per-model deadline."""
        dl = self.deadline_ms.copy()
        missing = np.isnan(dl)
        if missing.any():
            lookup = {d.model: d.deadline_ms for d in workload.models}
            for i in np.nonzero(missing)[0]:
                m = self.model[i]
                if m not in lookup:
                    raise InputError(
                        f"model {m!r} has no deadline in the trace or the workload", row=int(i) + 2, field="deadline_ms"
                    )
                dl[i] = lookup[m]
        return Trace(self.time_s, self.model, dl, self.origin)

    @classmethod
    def load(cls, path: str | Path, known_models: Optional[set[str]] = None) -> Trace:
        """CSV with columns ``time_s, model`` and optional ``deadline_ms``, ``origin``."""
        path = Path(path)
        name = str(path)
        if not path.exists():
            raise InputError("file not found", file=name)
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise InputError("file is empty", file=name) from None
        except Exception as e:
            raise InputError(f"cannot read: {e}", file=name) from None
        df.columns = [str(c).strip() for c in df.columns]
        for col in ("time_s", "model"):
            if col not in df.columns:
                raise InputError(f"missing column {col!r}", file=name, row=1, field=col)
        if len(df) == 0:
            raise InputError("no arrivals", file=name)
        t = _num_col(df["time_s"], name, "time_s", allow_empty=False)
        if (t < 0).any():
            i = int(np.argmax(t < 0))
            raise InputError(f"negative time (got {t[i]})", file=name, row=i + 2, field="time_s")
        models = df["model"].str.strip().str.lower().to_numpy(dtype=object)
        for i, m in enumerate(models):
            if not m:
                raise InputError("empty model", file=name, row=i + 2, field="model")
            if known_models is not None and m not in known_models:
                raise InputError(f"unknown model {m!r}", file=name, row=i + 2, field="model")
        dl = None
        if "deadline_ms" in df.columns:
            dl = _num_col(df["deadline_ms"], name, "deadline_ms", allow_empty=True)
            bad = ~np.isnan(dl) & (dl <= 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"deadline must be > 0 (got {dl[i]})", file=name, row=i + 2, field="deadline_ms")
        origin = df["origin"].str.strip().str.lower().to_numpy(dtype=object) if "origin" in df.columns else None
        return cls(t, models, dl, origin)

    def save(self, path: str | Path) -> None:
        pd.DataFrame(
            {"time_s": self.time_s, "model": self.model, "deadline_ms": self.deadline_ms, "origin": self.origin}
        ).to_csv(path, index=False)


def _num_col(s: pd.Series, file: str, field: str, allow_empty: bool) -> np.ndarray:
    out = np.empty(len(s))
    for i, v in enumerate(s.tolist()):
        v = v.strip()
        if v == "":
            if not allow_empty:
                raise InputError("empty value", file=file, row=i + 2, field=field)
            out[i] = np.nan
            continue
        try:
            x = float(v)
        except ValueError:
            raise InputError(f"not a number (got {v!r})", file=file, row=i + 2, field=field) from None
        if not math.isfinite(x):
            raise InputError(f"not a finite number (got {v!r})", file=file, row=i + 2, field=field)
        out[i] = x
    return out
