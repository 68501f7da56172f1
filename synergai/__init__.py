"""synergai: architecture-aware planning of ML inference across edge-to-cloud Kubernetes clusters.

Library entry points (the CLI is a thin layer over these)::

    from synergai import plan_offline, OnlineScheduler, default_profiles, default_cluster, default_workload

The repository's top-level folders install as sub-packages of this namespace:
``synergai.models``, ``synergai.planner``, ``synergai.executor``, ``synergai.experiments``,
``synergai.profiling_data``. Names below are imported lazily, so ``import synergai`` (and
``synergai --version``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

try:
    __version__ = _version("synergai")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "ClusterSpec": "synergai.models",
    "InputError": "synergai.models",
    "Plan": "synergai.models",
    "ProfileTable": "synergai.models",
    "Trace": "synergai.models",
    "WorkloadSpec": "synergai.models",
    "OnlineScheduler": "synergai.planner",
    "PlanOptions": "synergai.planner",
    "plan_offline": "synergai.planner",
    "default_cluster": "synergai.profiling_data",
    "default_profiles": "synergai.profiling_data",
    "default_workload": "synergai.profiling_data",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from synergai.models import (
        ClusterSpec as ClusterSpec,
        InputError as InputError,
        Plan as Plan,
        ProfileTable as ProfileTable,
        Trace as Trace,
        WorkloadSpec as WorkloadSpec,
    )
    from synergai.planner import (
        OnlineScheduler as OnlineScheduler,
        PlanOptions as PlanOptions,
        plan_offline as plan_offline,
    )
    from synergai.profiling_data import (
        default_cluster as default_cluster,
        default_profiles as default_profiles,
        default_workload as default_workload,
    )


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'synergai' has no attribute {name!r}")
    value = getattr(import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
