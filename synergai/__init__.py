"""synergai: architecture-aware planning of ML inference across edge-to-cloud Kubernetes clusters.

Library entry points (the CLI is a thin layer over these)::

    from synergai import plan_offline, OnlineScheduler
    from profiling_data import default_profiles, default_cluster, default_workload
"""
from models import ClusterSpec, Plan, ProfileTable, Trace, WorkloadSpec
from planner import OnlineScheduler, PlanOptions, plan_offline

__version__ = "0.1.0"
__all__ = ["ClusterSpec", "Plan", "ProfileTable", "Trace", "WorkloadSpec", "OnlineScheduler", "PlanOptions",
           "plan_offline", "__version__"]
