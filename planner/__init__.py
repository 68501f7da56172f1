"""Offline MILP planner, online heuristic and solver back-ends. Never imports the kubernetes client."""

from .candidates import PlanOptions
from .offline import plan_offline
from .online import Decision, OnlineScheduler
from .packing import pack_ffd
from .solvers import available_solvers, get_solver, solver_names

__all__ = [
    "PlanOptions",
    "plan_offline",
    "pack_ffd",
    "OnlineScheduler",
    "Decision",
    "available_solvers",
    "get_solver",
    "solver_names",
]
