"""Counterfactuals: each suggested change really serves more when applied."""

from __future__ import annotations

import re

import synergai.profiling_data as pdata
from synergai.models import ModelDemand, NodePool, WorkloadSpec
from synergai.planner import plan_offline
from synergai.planner.whatif import what_if


def test_node_suggestions_hold_when_applied():
    t, c, w = pdata.default_profiles(), pdata.default_cluster(), pdata.default_workload().scaled(1.3)
    plan = plan_offline(t, c, w)
    assert plan.unserved
    ws = what_if(plan, t, c, w)
    assert ws and all(x.unserved_after < x.unserved_before for x in ws)
    best = max(ws, key=lambda x: x.served_gain)
    pool = re.search(r"pool (\S+)", best.change).group(1)
    pools = [NodePool(**{**p.model_dump(), "nodes": p.nodes + (p.name == pool)}) for p in c.pools]
    again = plan_offline(t, c.model_copy(update={"pools": pools}), w)
    after = {u.model: u.rate_rps for u in again.unserved}.get(best.model, 0.0)
    assert after < best.unserved_before


def test_deadline_suggestion_makes_the_model_servable():
    t, c = pdata.default_profiles(), pdata.default_cluster()
    w = WorkloadSpec(models=[ModelDemand(model="resnet50", rate_rps=50, deadline_ms=1.0)])
    plan = plan_offline(t, c, w)
    ws = [x for x in what_if(plan, t, c, w) if "deadline" in x.change]
    assert len(ws) == 1
    new_dl = float(re.search(r"to ([0-9.]+) ms", ws[0].change).group(1)) + 0.05
    served = plan_offline(t, c, WorkloadSpec(models=[ModelDemand(model="resnet50", rate_rps=50, deadline_ms=new_dl)]))
    assert any(a.model == "resnet50" and a.routed_rate_rps > 0 for a in served.assignments)
