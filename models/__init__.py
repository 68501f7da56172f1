"""Typed data models (pydantic v2): profiles, cluster, workload, plan."""

from .cluster import ClusterSpec, NodePool
from .errors import InputError
from .plan import SCHEMA_VERSION, Assignment, Candidate, ConfigChoice, Plan, Server, SolverReport, Unserved
from .profiles import ProfileRecord, ProfileTable
from .workload import ModelDemand, Trace, WorkloadSpec

__all__ = [
    "ClusterSpec",
    "NodePool",
    "InputError",
    "SCHEMA_VERSION",
    "Assignment",
    "Candidate",
    "ConfigChoice",
    "Server",
    "Plan",
    "SolverReport",
    "Unserved",
    "ProfileRecord",
    "ProfileTable",
    "ModelDemand",
    "Trace",
    "WorkloadSpec",
    "json_schemas",
]


def json_schemas() -> dict[str, dict]:
    """JSON Schema of every input/output document, by file stem."""
    from pydantic import TypeAdapter

    return {
        "profile_record": ProfileRecord.model_json_schema(),
        "cluster": ClusterSpec.model_json_schema(),
        "workload": WorkloadSpec.model_json_schema(),
        "plan": Plan.model_json_schema(),
        "trace_row": TypeAdapter(dict).json_schema()
        | {
            "title": "TraceRow",
            "description": "CSV columns: time_s (s), model, deadline_ms (optional, ms), origin (optional: edge|cloud|any)",
        },
    }
