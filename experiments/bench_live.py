"""Live request path, end to end, in one command: emulated servers + gateway(s) + open-loop load, with the
simulator's prediction beside every live row (EXPERIMENTS.md, "Live request path").

    python -m synergai.experiments.bench_live [--plan PLAN.json | --plan-rate 100 --plan-nodes 8] [--loads 0.7]
        [--rates 300,500,1000] [--duration 10] [--gateways 1|2] [--routing synergai,lor,rr] [--json out.json]

EXPERIMENTS.md's measurement: the defaults, then ``--gateways 2 --loads '' --rates 500``, on a quiet machine.

1. The plan: ``--plan`` or, by default, a small one on a single loopback pool that a 2-core machine can
   emulate (``loop``: graviton1 arm64 edge, 8 nodes x 15.5 CPU / 28 GiB, RTT 0; mobilenet-v2, mobilenet-v3
   and efficientnet-lite0 at ``--plan-rate`` req/s each, deadline 60 ms; ``plan_offline`` on the default
   profiles). At the defaults: 16 servers (6 + 6 + 4), the busiest group (efficientnet-lite0's 4) full at
   886 req/s of the even mix, so 1,000 req/s is an overload of the plan (load 1.13); ``--plan-nodes 12
   --plan-rate 150`` plans more servers.
2. One emulated ``synergai serve --plan P --server GROUP`` per planned server, on loopback (any free port),
   each waited for on ``/v2/health/ready``.
3. ``--gateways`` gateways (``synergai gateway``) on the endpoints file and a token file (routing is switched
   with the authenticated ``POST /v1/routing``). With 2 gateways, one generator (this process, one event
   loop) sends the arrivals alternately to each: ``loadtest.run_open_loop`` once per gateway, concurrently,
   then the records are merged; the prediction simulates a single scheduler seeing every arrival (the two
   live gateways each see only their own half of the outstanding requests).
4. Per load (``--loads``: the offered utilisation of the busiest server group, as ``synergai loadtest``
   prints it) and per absolute rate (``--rates``, req/s), the same Poisson arrivals (``--seed``) once per
   routing policy, each followed by the prediction of ``loadtest.predict`` on the very arrivals sent.
5. One table: rate, policy, ok/errors, live violations, predicted violations, within target (live within
   25% of the prediction or 1% of the arrivals), latency p50/p99, gateway overhead p50/p99 (response
   time minus the server's time; beside it the gateway's own reported time), the generator's send lag p99,
   the machine's CPU busy share over the run (all cores) and the 1-minute load average after the run.
6. Every process started here is stopped (SIGTERM, then SIGKILL, by PID) on exit, on an error and on Ctrl-C
   / SIGTERM.

After startup the command waits (at most ``--settle`` s) for a quiet second, then a short unrecorded
warm-up (``--warmup`` s at a fifth of the first rate) precedes the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Optional

from .loadtest import (
    Record,
    gateway_status,
    live_plan,
    model_rates,
    offered_utilisation,
    poisson_arrivals,
    predict,
    run_open_loop,
    set_routing,
    summarise,
    within_target,
)

ENTRY = [sys.executable, "-m", "synergai.executor.serving_cli"]
MODELS = ("mobilenet-v2", "mobilenet-v3", "efficientnet-lite0")
TOKEN = "bench-live-token"


def default_plan(rate_rps: float = 100.0, nodes: int = 8, deadline_ms: float = 60.0, time_limit: float = 20.0):
    """The built-in small plan: three models on one loopback pool (see the module docstring)."""
    from synergai import default_profiles, plan_offline
    from synergai.models import ClusterSpec, ModelDemand, NodePool, WorkloadSpec

    pool = NodePool(
        name="loop",
        device="graviton1",
        architecture="arm64",
        tier="edge",
        nodes=nodes,
        cpu=15.5,
        memory_mb=28672,
        rtt_ms=0.0,
    )
    wl = WorkloadSpec(
        name="live", models=[ModelDemand(model=m, rate_rps=rate_rps, deadline_ms=deadline_ms) for m in MODELS]
    )
    return plan_offline(default_profiles(), ClusterSpec(name="loop", pools=[pool]), wl, time_limit=time_limit)


def _http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return 0


class Child:
    """One ``synergai serve|gateway`` process on loopback: any free port (port file), log in ``log_dir``."""

    def __init__(self, kind: str, args: list[str], log_dir: Path, name: str):
        self.kind, self.name = kind, name
        self.port_file = log_dir / f"{name}.port"
        self.log_path = log_dir / f"{name}.log"
        self.args = [*ENTRY, kind, *args, "--host", "127.0.0.1", "--port", "0"]
        self.args += ["--port-file", str(self.port_file), "--log-level", "warning"]
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def start(self) -> None:
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            # own session: a Ctrl-C on the terminal reaches only this process, which then stops its children
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        """Non-blocking: the port is known and ``/v2/health/ready`` answers 200; raises if the process died."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
        if self.port is None:
            txt = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if not txt:
                return False
            self.port = int(txt)
        return _http_status(self.url + "/v2/health/ready") == 200

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.terminate()
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(grace_s)
        except ProcessLookupError:
            pass


class Fleet:
    """Every child process of the benchmark; :meth:`stop` ends them all (idempotent, also at exit)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []
        atexit.register(self.stop)

    def add(self, kind: str, args: list[str], name: str) -> Child:
        c = Child(kind, args, self.log_dir, name)
        self.children.append(c)
        c.start()
        return c

    def wait_ready(self, children: list[Child], timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        waiting = list(children)
        while waiting:
            waiting = [c for c in waiting if not c.ready()]
            if not waiting:
                return
            if time.monotonic() > end:
                c = waiting[0]
                raise RuntimeError(
                    f"{len(waiting)} process(es) not ready within {timeout_s:.0f} s, e.g. {c.name}: {c.tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        for c in self.children:  # SIGTERM to all first: they shut down in parallel
            if c.proc is not None and c.proc.poll() is None:
                try:
                    c.proc.terminate()
                except ProcessLookupError:
                    pass
        for c in reversed(self.children):
            c.stop()

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]


def start_servers(fleet: Fleet, plan, plan_path: Path, timeout_s: float) -> dict[str, list[str]]:
    """One emulated server per planned server of every group with assignments; group -> URLs."""
    servers: list[tuple[str, Child]] = []
    k = 0
    for g in plan.server_groups():
        if g.replicas <= 0 or not plan.assignments_of(g.name):
            continue
        for i in range(g.replicas):
            k += 1
            args = ["--plan", str(plan_path), "--server", g.name, "--seed", str(k)]
            servers.append((g.name, fleet.add("serve", args, f"serve-{g.name}-{i}")))
    fleet.wait_ready([c for _, c in servers], timeout_s)
    eps: dict[str, list[str]] = {}
    for g_name, c in servers:
        eps.setdefault(g_name, []).append(c.url)
    return eps


def start_gateways(
    fleet: Fleet, plan_path: Path, eps_path: Path, token_path: Path, n: int, servers: int, timeout_s: float
):
    gws = [
        fleet.add(
            "gateway",
            ["--plan", str(plan_path), "--endpoints", str(eps_path), "--token-file", str(token_path)],
            f"gateway-{i}",
        )
        for i in range(n)
    ]
    fleet.wait_ready(gws, timeout_s)
    end = time.monotonic() + timeout_s  # ready means some endpoint is live: wait for all of them
    for gw in gws:
        while True:
            st = gateway_status(gw.url) or {}
            live = sum(len(u) for u in (st.get("endpoints") or {}).values())
            if live >= servers:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"{gw.name} sees {live} of {servers} servers after {timeout_s:.0f} s")
            time.sleep(0.2)
    return gws


async def _generate(
    urls: list[str], arrivals: list, deadlines: dict[str, float], policy: str
) -> tuple[list[Record], dict]:
    """One open-loop generator over ``urls``: arrival i goes to gateway i mod len(urls); records in arrival order."""
    n = len(urls)
    parts = [arrivals[j::n] for j in range(n)]
    stats = [dict() for _ in range(n)]
    outs = await asyncio.gather(
        *(run_open_loop(u, part, deadlines, policy=policy, stats=st) for u, part, st in zip(urls, parts, stats))
    )
    recs: list[Record] = [None] * len(arrivals)  # type: ignore[list-item]
    for j, out in enumerate(outs):
        recs[j::n] = out
    return recs, {"connections_opened": sum(s.get("connections_opened", 0) for s in stats)}


def cpu_times() -> tuple[float, float]:
    """Machine-wide (busy, total) CPU jiffies from /proc/stat; (nan, nan) where there is none."""
    try:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan, math.nan
    idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def cpu_busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Busy share of all cores between two :func:`cpu_times` (100: every core busy)."""
    dt = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / dt if dt > 0 else math.nan


def settle(max_s: float, busy_pct: float = 30.0) -> float:
    """Wait (at most ``max_s``) for a 1 s window with the machine under ``busy_pct`` busy; the last window's %."""
    end, pct = time.monotonic() + max_s, math.nan
    while time.monotonic() < end:
        a = cpu_times()
        time.sleep(1.0)
        pct = cpu_busy_pct(a, cpu_times())
        if not pct > busy_pct:
            break
    return pct


def run_one(urls, served, arrivals, deadlines, policy, *, overload, seeds, seed, duration) -> dict:
    for u in urls:
        set_routing(u, policy, TOKEN)
    c0 = cpu_times()
    recs, gen = asyncio.run(_generate(urls, arrivals, deadlines, policy))
    s = summarise(recs, duration)
    s.update(gen)
    s["cpu_busy_pct"] = cpu_busy_pct(c0, cpu_times())  # the whole machine, arrivals and drain
    s["loadavg_1m"] = os.getloadavg()[0]
    s["error_kinds"] = dict(Counter(r.error.split(":")[0] or f"HTTP {r.status}" for r in recs if r.status != 200))
    pr = predict(served, recs, policy, overload=overload, rtt_ms=0.0, seeds=seeds, seed=seed, per_request=False)
    ok, tol = within_target(s["violations"], pr["violations"], len(recs))
    entry = {"live": s, "predicted": pr, "within_target": ok, "tolerance": tol}
    if len(urls) > 1:  # each gateway's own share (arrival i went to gateway i mod N)
        entry["per_gateway"] = [summarise(recs[j :: len(urls)], duration) for j in range(len(urls))]
    return entry


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _fmt(x: float, nd: int = 1) -> str:
    return "nan" if x != x else f"{x:.{nd}f}"


def table(result: dict):
    from rich.table import Table

    t = Table(
        title=f"live vs predicted: {result['servers']} emulated servers, {result['gateways']} gateway(s), "
        f"{result['duration_s']:g} s per run (ms; ovh: response time - server time; gw: the gateway's own time; "
        f"cpu%: the machine, all cores)"
    )
    cols = ["rate", "load", "policy", "ok", "err", "viol", "viol%", "pred viol", "pred%", "within"]
    cols += ["lat p50", "lat p99", "ovh p50", "ovh p99", "gw p99", "lag p99", "cpu%", "load1"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("policy", "within") else "right", no_wrap=True)
    for r in result["runs"]:
        s, p = r["live"], r["predicted"]
        t.add_row(
            f"{r['rate_rps']:.0f}",
            f"{r['load']:.2f}",
            r["policy"],
            str(s["ok"]),
            str(s["errors"]),
            str(s["violations"]),
            f"{s['violation_pct']:.2f}",
            f"{p['violations']:.1f}",
            f"{p['violation_pct']:.2f}",
            f"{'yes' if r['within_target'] else 'NO'} ±{r['tolerance']:.0f}",
            _fmt(s["latency_p50_ms"]),
            _fmt(s["latency_p99_ms"]),
            _fmt(s["overhead_p50_ms"], 2),
            _fmt(s["overhead_p99_ms"], 2),
            _fmt(s["gateway_p99_ms"], 2),
            _fmt(s["send_lag_p99_ms"], 2),
            _fmt(s["cpu_busy_pct"], 0),
            f"{s['loadavg_1m']:.2f}",
        )
    return t


def bench(args, log_dir: Path, fleet: Fleet, say) -> dict:
    from synergai.models import Plan

    if args.plan:
        plan_path = Path(args.plan)
        plan = Plan.load(plan_path)
    else:
        plan = default_plan(args.plan_rate, args.plan_nodes)
        plan_path = log_dir / "plan.json"
        plan.save(plan_path)
    loadavg_before = list(os.getloadavg())
    t0 = time.monotonic()
    eps = start_servers(fleet, plan, plan_path, args.ready_timeout)
    servers = sum(map(len, eps.values()))
    eps_path, token_path = log_dir / "endpoints.json", log_dir / "token"
    eps_path.write_text(json.dumps(eps))
    token_path.write_text(TOKEN + "\n")
    gws = start_gateways(fleet, plan_path, eps_path, token_path, args.gateways, servers, args.ready_timeout)
    urls = [g.url for g in gws]
    say(f"{servers} servers and {len(gws)} gateway(s) ready in {time.monotonic() - t0:.1f} s; pids {fleet.pids}")
    status = gateway_status(urls[0]) or {}
    served = live_plan(plan, status.get("endpoints"))
    overload = status.get("overload", "sacrifice")
    unit, deadlines = model_rates(plan, 1.0)
    busiest_per_rps = max(offered_utilisation(served, unit).values())
    points = [(x / busiest_per_rps, x) for x in _floats(args.loads)]
    points += [(x, x * busiest_per_rps) for x in _floats(args.rates)]
    policies = [p.strip() for p in args.routing.split(",") if p.strip()]
    result: dict = {
        "plan_id": plan.plan_id or plan.compute_id(),
        "plan": str(plan_path),
        "servers": servers,
        "groups": {g: len(u) for g, u in eps.items()},
        "gateways": len(gws),
        "generator": "one process; arrival i to gateway i mod N" if len(gws) > 1 else "one process",
        "capacity_busiest_rps": 1.0 / busiest_per_rps,
        "duration_s": args.duration,
        "seed": args.seed,
        "loadavg_before": loadavg_before,
        "settled_cpu_busy_pct": settle(args.settle) if args.settle > 0 else math.nan,
        "loadavg_start": list(os.getloadavg()),
        "pids": fleet.pids,
        "log_dir": str(log_dir),
        "runs": [],
    }
    say(
        f"busiest group at load 1.0: {1.0 / busiest_per_rps:.0f} req/s; load average {loadavg_before[0]:.2f} before "
        f"the processes, {result['loadavg_start'][0]:.2f} at the first run (machine "
        f"{result['settled_cpu_busy_pct']:.0f}% busy)"
    )
    if args.warmup > 0 and points:
        rates, _ = model_rates(plan, 0.2 * points[0][0])
        warm = poisson_arrivals(rates, args.warmup, args.seed + 1)
        asyncio.run(_generate(urls, warm, deadlines, "warmup"))
    for rate, load in points:
        rates, _ = model_rates(plan, rate)
        arrivals = poisson_arrivals(rates, args.duration, args.seed)
        for pol in policies:
            time.sleep(args.pause)
            entry = run_one(
                urls,
                served,
                arrivals,
                deadlines,
                pol,
                overload=overload,
                seeds=args.predict_seeds,
                seed=args.seed,
                duration=args.duration,
            )
            entry.update(rate_rps=rate, load=load, policy=pol, arrivals=len(arrivals))
            result["runs"].append(entry)
            s = entry["live"]
            say(
                f"{rate:.0f} req/s {pol}: {s['ok']} ok, {s['errors']} err, {s['violation_pct']:.2f}% late "
                f"(predicted {entry['predicted']['violation_pct']:.2f}%), load average {s['loadavg_1m']:.2f}"
            )
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--plan", default="", help="Plan JSON (default: the built-in small loopback plan).")
    ap.add_argument("--plan-rate", type=float, default=100.0, help="Built-in plan: req/s per model it is planned for.")
    ap.add_argument("--plan-nodes", type=int, default=8, help="Built-in plan: nodes of its pool.")
    ap.add_argument("--loads", default="0.7", help="Offered utilisation(s) of the busiest server group (comma list).")
    ap.add_argument("--rates", default="300,500,1000", help="Absolute total rates, req/s (comma list).")
    ap.add_argument("--duration", type=float, default=10.0, help="Seconds of arrivals per run.")
    ap.add_argument("--gateways", type=int, default=1, choices=(1, 2), help="Gateways (2: arrivals alternate).")
    ap.add_argument("--routing", default="synergai,lor,rr", help="Routing policies (comma list).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predict-seeds", type=int, default=3, help="Service-time draws the prediction averages.")
    ap.add_argument("--warmup", type=float, default=1.0, help="Unrecorded warm-up, s (0: none).")
    ap.add_argument("--pause", type=float, default=1.0, help="Idle seconds before each run.")
    ap.add_argument(
        "--settle", type=float, default=15.0, help="After startup, wait up to this long for a quiet machine, s."
    )
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="Seconds to wait for the processes.")
    ap.add_argument("--json", default="", help="Write the result (live and predicted per run) here.")
    ap.add_argument("--keep-logs", action="store_true", help="Keep the processes' logs (else kept only on error).")
    args = ap.parse_args(argv)
    from rich.console import Console

    console = Console(width=240)
    log_dir = Path(tempfile.mkdtemp(prefix="synergai-bench-live-"))
    fleet = Fleet(log_dir)

    def on_term(signum, frame):  # SIGTERM: the same teardown as Ctrl-C
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    outcome = "error"  # logs are kept after an error (or with --keep-logs)
    try:
        result = bench(args, log_dir, fleet, lambda m: console.print(m, highlight=False))
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        print("bench_live: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        fleet.stop()
        signal.signal(signal.SIGTERM, old)
        if outcome != "ok":
            print(f"bench_live: stopped every process it started ({len(fleet.children)})", file=sys.stderr)
        if outcome == "error" or args.keep_logs:
            print(f"bench_live: logs in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    console.print(table(result))
    if args.gateways > 1:
        console.print("note: one generator, arrivals alternating over the gateways; predicted as one scheduler")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
