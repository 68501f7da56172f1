"""Embedded default inputs: profiles derived from MLPerf Inference v3.0, a default cluster and workload.

Everything here loads from files committed in this package; nothing needs ``../shared`` at import or load
time (that extract is only needed to *rebuild* the profiles: ``python -m synergai.profiling_data.build_default``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from synergai.models.cluster import ClusterSpec
from synergai.models.profiles import ProfileTable
from synergai.models.workload import WorkloadSpec

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PROFILES = PACKAGE_DIR / "default_profiles.csv"
DEFAULT_CLUSTER = PACKAGE_DIR / "default_cluster.yaml"
DEFAULT_WORKLOAD = PACKAGE_DIR / "default_workload.yaml"

__all__ = [
    "DEFAULT_PROFILES",
    "DEFAULT_CLUSTER",
    "DEFAULT_WORKLOAD",
    "default_profiles",
    "default_cluster",
    "default_workload",
]


@lru_cache(maxsize=1)
def default_profiles() -> ProfileTable:
    """The committed MLPerf-derived profile table (cached; treat as read-only)."""
    return ProfileTable.load(DEFAULT_PROFILES)


@lru_cache(maxsize=1)
def default_cluster() -> ClusterSpec:
    """The default edge-to-cloud cluster (cached; use ``model_copy`` before changing it)."""
    return ClusterSpec.load(DEFAULT_CLUSTER)


@lru_cache(maxsize=1)
def default_workload() -> WorkloadSpec:
    """The default workload (cached; use ``scaled``/``model_copy`` to derive variants)."""
    return WorkloadSpec.load(DEFAULT_WORKLOAD)
