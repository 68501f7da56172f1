"""``synergai loadtest``: an open-loop load generator for the gateway (Open Inference Protocol).

Arrival times are fixed in advance (a Poisson process, or a trace CSV ``time_s, model[, deadline_ms]``)
and every request is sent at its time whatever happened to the earlier ones: the generator never waits
for responses (closed-loop generators hide queueing). Per request it records the scheduled and actual
send time, the response time, the status and the server that answered (gateway headers), and the
server's own time, so the gateway overhead is ``response time - server time``.

``--routing synergai,lor,rr`` replays the *same* arrivals once per routing policy through the same
gateway (switched with the authenticated ``POST /v1/routing``) and prints one row per policy.
"""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import typer


@dataclass
class Record:
    policy: str
    model: str
    scheduled_s: float
    sent_s: float
    response_s: float
    status: int
    deadline_ms: float
    server: str = ""
    pool: str = ""
    endpoint: str = ""
    server_ms: float = float("nan")
    gateway_ms: float = float("nan")
    error: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.response_s - self.sent_s) * 1000.0


def poisson_arrivals(rates: dict[str, float], duration_s: float, seed: int = 0) -> list[tuple[float, str]]:
    """Merged Poisson arrivals of every model over ``duration_s`` (fixed in advance)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[float, str]] = []
    for m, r in sorted(rates.items()):
        if r <= 0:
            continue
        n = rng.poisson(r * duration_s)
        out.extend((float(t), m) for t in np.sort(rng.uniform(0, duration_s, n)))
    out.sort()
    return out


def trace_arrivals(path: Path) -> list[tuple[float, str, Optional[float]]]:
    from synergai.models import Trace

    tr = Trace.load(path)
    dl = tr.deadline_ms if tr.deadline_ms is not None else [float("nan")] * len(tr)
    return [(float(t), str(m), None if d != d else float(d)) for t, m, d in zip(tr.time_s, tr.model, dl)]


def emulated_body(rows: int = 1) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [rows, 16], "datatype": "FP32", "data": [0.5] * (16 * rows)}]}
    ).encode()


async def run_open_loop(
    url: str,
    arrivals: list[tuple],
    deadlines: dict[str, float],
    *,
    policy: str = "",
    body: bytes = b"",
    timeout_s: float = 30.0,
    max_outstanding: int = 20000,
) -> list[Record]:
    """Send every arrival at its time (never waiting for responses); return one record per arrival."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    body = body or emulated_body()
    recs: list[Record] = []
    loop = asyncio.get_running_loop()
    outstanding = 0
    async with ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=30),
        timeout=ClientTimeout(total=timeout_s),
        skip_auto_headers=("User-Agent",),
    ) as s:

        async def one(t_sched: float, model: str, dl: float, t0: float) -> None:
            nonlocal outstanding
            outstanding += 1
            sent = loop.time() - t0
            rec = Record(policy, model, t_sched, sent, float("nan"), 0, dl)
            try:
                async with s.post(
                    f"{url}/v2/models/{model}/infer",
                    data=body,
                    headers={"Content-Type": "application/json", "X-Deadline-Ms": f"{dl:g}"},
                ) as r:
                    await r.read()
                    rec.status = r.status
                    h = r.headers
                    rec.server, rec.pool = h.get("X-Synergai-Server", ""), h.get("X-Synergai-Pool", "")
                    rec.endpoint = h.get("X-Synergai-Endpoint", "")
                    rec.server_ms = float(h.get("X-Synergai-Server-Ms", "nan"))
                    rec.gateway_ms = float(h.get("X-Synergai-Gateway-Ms", "nan"))
            except Exception as e:  # every failure is a record, never a crash of the generator
                rec.error = f"{type(e).__name__}: {e}"[:200]
            rec.response_s = loop.time() - t0
            recs.append(rec)
            outstanding -= 1

        tasks = []
        t0 = loop.time()
        for arr in arrivals:
            t, model = arr[0], arr[1]
            dl = (arr[2] if len(arr) > 2 and arr[2] else None) or deadlines.get(model, 1000.0)
            delay = t0 + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= max_outstanding:
                recs.append(
                    Record(
                        policy,
                        model,
                        t,
                        loop.time() - t0,
                        loop.time() - t0,
                        0,
                        dl,
                        error="generator: too many outstanding requests",
                    )
                )
                continue
            tasks.append(asyncio.create_task(one(t, model, dl, t0)))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 5)
    return recs


def summarise(recs: list[Record], duration_s: float) -> dict:
    ok = [r for r in recs if r.status == 200]
    lat = np.array([r.latency_ms for r in ok]) if ok else np.array([np.nan])
    over = (
        np.array([r.latency_ms - r.server_ms for r in ok if r.server_ms == r.server_ms]) if ok else np.array([np.nan])
    )
    gw = np.array([r.gateway_ms for r in ok if r.gateway_ms == r.gateway_ms]) if ok else np.array([np.nan])
    lag = np.array([(r.sent_s - r.scheduled_s) * 1000 for r in recs]) if recs else np.array([np.nan])
    viol = sum(1 for r in recs if r.status != 200 or r.latency_ms > r.deadline_ms)
    span = max((r.response_s for r in recs), default=duration_s)
    q = lambda a, p: float(np.nanpercentile(a, p)) if a.size and not np.all(np.isnan(a)) else float("nan")  # noqa: E731
    pools: dict[str, int] = {}
    for r in ok:
        pools[r.pool] = pools.get(r.pool, 0) + 1
    return {
        "arrivals": len(recs),
        "ok": len(ok),
        "errors": len(recs) - len(ok),
        "violations": viol,
        "violation_pct": 100.0 * viol / max(1, len(recs)),
        "throughput_rps": len(ok) / max(span, 1e-9),
        "latency_p50_ms": q(lat, 50),
        "latency_p99_ms": q(lat, 99),
        "overhead_p50_ms": q(over, 50),
        "overhead_p99_ms": q(over, 99),
        "gateway_p50_ms": q(gw, 50),
        "gateway_p99_ms": q(gw, 99),
        "send_lag_p99_ms": q(lag, 99),
        "pools": pools,
    }


def set_routing(url: str, policy: str, token: Optional[str]) -> None:
    import urllib.request

    req = urllib.request.Request(
        f"{url}/v1/routing",
        data=json.dumps({"routing": policy}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token or ''}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def model_rates(plan, total_rps: float) -> tuple[dict[str, float], dict[str, float]]:
    """The plan's demand mix scaled to ``total_rps`` and the deadlines."""
    dem = {d.model: d.rate_rps for d in plan.demands if d.rate_rps > 0}
    served = {a.model for a in plan.assignments if a.replicas > 0}
    dem = {m: r for m, r in dem.items() if m in served}
    tot = sum(dem.values()) or 1.0
    return {m: total_rps * r / tot for m, r in dem.items()}, {d.model: d.deadline_ms for d in plan.demands}


def loadtest(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="Gateway URL."),
    plan: Path = typer.Option(..., "--plan", help="Plan JSON (model mix and deadlines)."),
    rate: float = typer.Option(500.0, "--rate", help="Total arrival rate, req/s (Poisson)."),
    duration: float = typer.Option(10.0, "--duration", help="Seconds of arrivals per policy."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Replay a trace CSV instead of Poisson."),
    routing: str = typer.Option(
        "", "--routing", help="Comma-separated policies to compare (synergai,lor,rr); empty: the gateway's."
    ),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Gateway token (to switch routing)."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Per-request CSV."),
):
    """Open-loop load against the gateway; one summary row per routing policy."""
    from rich.console import Console
    from rich.table import Table

    from synergai.models import Plan

    p = Plan.load(plan)
    rates, deadlines = model_rates(p, rate)
    arrivals = trace_arrivals(trace) if trace else poisson_arrivals(rates, duration, seed)
    if trace:
        duration = max((a[0] for a in arrivals), default=0.0)
    token = token_file.read_text().strip() if token_file else None
    policies = [x.strip() for x in routing.split(",") if x.strip()] or [""]
    all_recs: list[Record] = []
    t = Table(title=f"open loop: {len(arrivals)} arrivals over {duration:g} s per policy")
    cols = (
        "policy",
        "ok",
        "errors",
        "viol %",
        "req/s",
        "lat p50",
        "lat p99",
        "overhead p50",
        "overhead p99",
        "send lag p99",
        "pools",
    )
    for c in cols:
        t.add_column(c, justify="left" if c in ("policy", "pools") else "right")
    for pol in policies:
        if pol:
            set_routing(url, pol, token)
        recs = asyncio.run(run_open_loop(url, arrivals, deadlines, policy=pol or "gateway"))
        all_recs.extend(recs)
        s = summarise(recs, duration)
        t.add_row(
            pol or "gateway",
            str(s["ok"]),
            str(s["errors"]),
            f"{s['violation_pct']:.2f}",
            f"{s['throughput_rps']:.0f}",
            f"{s['latency_p50_ms']:.2f}",
            f"{s['latency_p99_ms']:.2f}",
            f"{s['overhead_p50_ms']:.2f}",
            f"{s['overhead_p99_ms']:.2f}",
            f"{s['send_lag_p99_ms']:.2f}",
            " ".join(f"{k}:{v}" for k, v in sorted(s["pools"].items())),
        )
    Console(width=200).print(t)
    if out:
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(all_recs[0])) if all_recs else ["policy"])
            w.writeheader()
            for r in all_recs:
                w.writerow(asdict(r))
