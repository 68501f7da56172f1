"""``synergai loadtest`` prints the simulator's prediction beside the live result (issue 11).

Real processes on loopback: a small plan (two models on one slow edge pool, one emulated ``synergai serve``
per planned server), the gateway, and the load generator's CLI. The prediction must be computed on the
very arrivals that were sent (same count, same models, the send times) with the simulator's policy for each
gateway routing, and it must agree with the live run where the answer is not in doubt: nothing late at a
low load, most requests late when a deliberately too-small plan is offered three times its capacity.
Plus two checks without processes: the simulator serves with the emulated servers' own service model, and
the prediction replays send times, not the schedule.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter

import pytest

from tests.serving_procs import Procs

pytest.importorskip("aiohttp")

pytestmark = pytest.mark.timeout(300)

DEADLINE_MS = 150.0


def small_plan():
    """Two models, one server each, on a Raspberry Pi 4 pool (~26 ms calls: ~36 req/s per server)."""
    from synergai import default_profiles, plan_offline
    from synergai.models import ClusterSpec, ModelDemand, NodePool, WorkloadSpec

    pool = NodePool(
        name="pi", device="rpi4", architecture="arm64", tier="edge", nodes=2, cpu=3.8, memory_mb=3584, rtt_ms=0.0
    )
    wl = WorkloadSpec(
        name="two",
        models=[
            ModelDemand(model="mobilenet-v2", rate_rps=8.0, deadline_ms=DEADLINE_MS),
            ModelDemand(model="mobilenet-v3", rate_rps=8.0, deadline_ms=DEADLINE_MS),
        ],
    )
    plan = plan_offline(default_profiles(), ClusterSpec(name="pi", pools=[pool]), wl, time_limit=20)
    assert not plan.unserved, plan.unserved
    return plan


def capacity(plan) -> float:
    from synergai.planner.service import ServiceModel

    return sum(a.replicas * ServiceModel.of(a.config).capacity for a in plan.assignments if a.replicas > 0)


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("plan") / "plan.json"
    small_plan().save(p)
    return p


@pytest.fixture(scope="module")
def live(plan_path, tmp_path_factory):
    from synergai.models import Plan

    plan = Plan.load(plan_path)
    d = tmp_path_factory.mktemp("live")
    with Procs() as ps:
        eps, k = {}, 2
        for g in plan.server_groups():
            if g.replicas <= 0 or not plan.assignments_of(g.name):
                continue
            for _ in range(g.replicas):
                srv = ps.serve(["--plan", str(plan_path), "--server", g.name, "--seed", str(k)], host=f"127.0.0.{k}")
                eps.setdefault(g.name, []).append(srv.url)
                k += 1
        (d / "endpoints.json").write_text(json.dumps(eps))
        (d / "token").write_text("loadtest-token\n")
        gw = ps.gateway(
            ["--plan", str(plan_path), "--endpoints", str(d / "endpoints.json"), "--token-file", str(d / "token")]
        )
        yield {"gw": gw, "plan": plan, "plan_path": plan_path, "dir": d, "servers": sum(map(len, eps.values()))}


def loadtest(live, name: str, rate: float, duration: float, routing: str):
    d = live["dir"]
    js, out = d / f"{name}.json", d / f"{name}.csv"
    cmd = [
        sys.executable,
        "-m",
        "synergai.executor.serving_cli",
        "loadtest",
        "--url",
        live["gw"].url,
        "--plan",
        str(live["plan_path"]),
        "--rate",
        f"{rate:.3f}",
        "--duration",
        str(duration),
        "--routing",
        routing,
        "--token-file",
        str(d / "token"),
        "--predict-seeds",
        "2",
        "--calibrate-service-ms",
        "1",
        "--json",
        str(js),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pred viol" in r.stdout and "cal within" in r.stdout, r.stdout  # beside the live columns
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    return json.loads(js.read_text()), rows, r.stdout


def check_same_arrivals(summary, rows, policy):
    """The prediction ran on exactly the requests that were sent: count, models, one prediction each."""
    entry = summary["policies"][policy]
    mine = [r for r in rows if r["policy"] == policy]
    assert entry["live"]["arrivals"] == len(mine) == summary["arrivals"] > 0
    assert entry["predicted"]["arrivals"] == len(mine)
    assert entry["predicted"]["arrivals_by_model"] == dict(Counter(r["model"] for r in mine))
    pred = [float(r["predicted_ms"]) for r in mine]
    assert all(not math.isnan(x) for x in pred)
    # the per-request predictions add up to the predicted violations of that draw (within the draws' range)
    late = sum(1 for r, x in zip(mine, pred) if x > float(r["deadline_ms"]) + 1e-9)
    lo, hi = entry["predicted"]["violations_range"]
    assert lo <= late <= hi
    # the target flag is what the issue defines
    live_v, pred_v, n = entry["live"]["violations"], entry["predicted"]["violations"], len(mine)
    tol = max(0.25 * pred_v, 0.01 * n)
    assert entry["within_target"] == (abs(live_v - pred_v) <= tol)


def test_low_load_prediction_beside_live_for_each_routing(live):
    rate = 0.2 * capacity(live["plan"])
    summary, rows, out = loadtest(live, "low", rate, 3.0, "synergai,lor,rr")
    assert summary["gateway"]["plan_id"] == summary["plan_id"]  # the plan the gateway serves
    want = {"synergai": "synergai", "lor": "least-loaded", "rr": "round-robin"}
    for policy, sim in want.items():
        entry = summary["policies"][policy]
        assert entry["predicted"]["sim_policy"] == sim
        assert entry["predicted"]["servers"] == live["servers"]
        check_same_arrivals(summary, rows, policy)
        # a fifth of the capacity, deadlines ~6x a call: the simulator sees nothing late, nor does the live run
        assert entry["predicted"]["violation_pct"] <= 1.0, entry
        assert entry["live"]["errors"] == 0, entry
        assert entry["live"]["violation_pct"] <= 5.0, (entry, out)
        assert entry["predicted"]["latency_p50_ms"] < DEADLINE_MS / 3
        cal = entry["calibrated"]  # the same arrivals, round trip = the measured request-path overhead
        assert cal["arrivals"] == entry["predicted"]["arrivals"] and cal["service_extra_ms"] == 1.0
        assert cal["rtt_ms"] == pytest.approx(entry["live"]["overhead_p50_ms"])


def test_overload_of_a_too_small_plan_is_late_live_and_predicted(live):
    rate = 3.0 * capacity(live["plan"])
    summary, rows, out = loadtest(live, "over", rate, 2.0, "synergai")
    check_same_arrivals(summary, rows, "synergai")
    entry = summary["policies"]["synergai"]
    assert entry["predicted"]["violation_pct"] >= 50.0, entry
    assert entry["live"]["violation_pct"] >= 50.0, (entry, out)
    assert summary["offered_utilisation"] and max(summary["offered_utilisation"].values()) > 2.0


def test_simulator_serves_with_the_emulated_servers_service_model(plan_path):
    """Every simulated server draws from the same ServiceModel as the `synergai serve` process that
    emulates its group (batch, slots, batch wait and the clipped log-normal)."""
    from synergai.executor.serve import emulated_from_plan
    from synergai.experiments.loadtest import plan_profiles
    from synergai.experiments.policies import deployment_from_plan
    from synergai.experiments.sim import service_params
    from synergai.models import Plan

    plan = Plan.load(plan_path)
    dep = deployment_from_plan(plan, plan_profiles(plan))
    sp = service_params(dep)
    assert len(dep) == sum(g.replicas for g in plan.server_groups() if plan.assignments_of(g.name))
    for r, rep in enumerate(dep.replicas):
        emulated = {rt.name: rt for rt in emulated_from_plan(plan, rep.name)}
        assert set(emulated) == set(rep.records)
        for model, rt in emulated.items():
            assert sp.sm(r, model) == rt.service
            assert (rt.batch_size, rt.slots) == (sp.sm(r, model).batch, sp.sm(r, model).slots)


def test_prediction_replays_send_times_not_the_schedule():
    """Ten requests scheduled at once but sent 1 s apart: predicted as ten idle-server calls (no queue);
    replayed at their schedule they would queue behind one another on the single server."""
    from synergai.experiments.loadtest import Record, predict
    from synergai.planner.service import ServiceModel

    plan = small_plan()
    a = next(a for a in plan.assignments if a.model == "mobilenet-v2" and a.replicas > 0)
    sm = ServiceModel.of(a.config)
    recs = [Record("rr", "mobilenet-v2", 0.0, float(i), math.nan, 200, 1000.0) for i in range(10)]
    pr = predict(plan, recs, "rr", seeds=1)
    assert pr["arrivals"] == 10 and pr["violations"] == 0
    assert all(sm.lo - 1e-9 <= r.predicted_ms / 1e3 <= sm.hi + 1e-9 for r in recs)
    queued = [Record("rr", "mobilenet-v2", 0.0, 0.0, math.nan, 200, 1000.0) for _ in range(10)]
    predict(plan, queued, "rr", seeds=1)
    assert max(r.predicted_ms for r in queued) / 1e3 > 5 * sm.lo  # >= 5 calls in a row on one server
    # calibrated: every call 20 ms longer (the simulator's truth table), the idle-server responses follow
    cal = predict(plan, recs, "rr", seeds=1, service_extra_ms=20.0, per_request=False)
    assert cal["latency_p50_ms"] - pr["latency_p50_ms"] == pytest.approx(20.0, abs=3.0)


def test_generator_records_every_failure_and_keeps_time():
    """The raw keep-alive client: a refused connection and a server that never answers end as error
    records (never a crash, never a lost arrival), and answers are timed from the send."""
    import asyncio

    from synergai.experiments.loadtest import run_open_loop

    arr = [(0.02 * i, "m") for i in range(4)]

    async def go():
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        try:
            hung = await run_open_loop(f"http://127.0.0.1:{port}", arr, {"m": 50}, timeout_s=0.5, warm_connections=2)
        finally:
            silent.close()
        refused = await run_open_loop(f"http://127.0.0.1:{port}", arr, {"m": 50}, timeout_s=0.5, warm_connections=2)
        return hung, refused

    hung, refused = asyncio.run(go())
    for recs, why in ((hung, "timeout"), (refused, "connect")):
        assert len(recs) == len(arr)
        assert [r.model for r in recs] == ["m"] * 4
        assert all(r.status == 0 and r.error.startswith(why) for r in recs), [r.error for r in recs]
        assert all(r.sent_s >= r.scheduled_s - 1e-3 for r in recs)
    assert all(0.5 <= r.latency_ms / 1e3 < 2.0 for r in hung)
