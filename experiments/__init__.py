"""Experiments: discrete-event simulator, scheduling policies (SynergAI and baselines), exact hindsight
optimum, YAML scenarios and paper-style reports (`synergai experiment`)."""

from .policies import POLICIES, Policy, RunContext, get_policy, register_policy
from .sim import Arrivals, Deployment, Replica, SimResult, simulate

__all__ = [
    "POLICIES",
    "Policy",
    "RunContext",
    "get_policy",
    "register_policy",
    "Arrivals",
    "Deployment",
    "Replica",
    "SimResult",
    "simulate",
]
