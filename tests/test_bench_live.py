"""``python -m synergai.experiments.bench_live``: one command from plan to live-vs-predicted table.

Real processes on loopback (the built-in plan at a low demand: one emulated server per model, one gateway):
a 2 s run at a low rate with one routing policy gives one row, no errors and a prediction on the same
arrivals; every process it started is gone when it returns, and also when it is interrupted mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

pytestmark = pytest.mark.timeout(240)

CMD = [
    sys.executable,
    "-m",
    "synergai.experiments.bench_live",
    "--plan-rate",
    "10",
    "--predict-seeds",
    "1",
    "--settle",
    "2",
]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_survivors(pids: list[int]) -> list[int]:
    """The processes still running (SIGKILLed here, so that a failing test leaves nothing behind)."""
    left = [x for x in pids if alive(x)]
    for x in left:
        os.kill(x, signal.SIGKILL)
    return left


def test_short_run_one_row_no_errors_nothing_left_running(tmp_path):
    out = tmp_path / "live.json"
    cmd = [*CMD, "--loads", "", "--rates", "30", "--duration", "2", "--routing", "rr", "--warmup", "0"]
    r = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pred viol" in r.stdout and "ovh p99" in r.stdout, r.stdout
    rows = [line for line in r.stdout.splitlines() if "rr" in [c.strip() for c in re.split(r"[│|]", line)]]
    assert len(rows) == 1, r.stdout
    doc = json.loads(out.read_text())
    assert doc["servers"] == 3 and doc["gateways"] == 1 and len(doc["pids"]) == 4
    assert [(run["policy"], run["rate_rps"]) for run in doc["runs"]] == [("rr", 30.0)]
    run = doc["runs"][0]
    live, pred = run["live"], run["predicted"]
    assert live["arrivals"] == run["arrivals"] == pred["arrivals"] > 20
    assert live["errors"] == 0 and live["ok"] == live["arrivals"] and live["error_kinds"] == {}, live
    assert 0 < live["cpu_busy_pct"] <= 100 and live["loadavg_1m"] >= 0
    assert pred["sim_policy"] == "round-robin" and pred["servers"] == 3
    assert 0 < live["latency_p50_ms"] < 60 and live["send_lag_p99_ms"] == live["send_lag_p99_ms"]
    assert run["tolerance"] == pytest.approx(max(0.25 * pred["violations"], 0.01 * live["arrivals"]))
    assert run["load"] == pytest.approx(30.0 / doc["capacity_busiest_rps"])
    time.sleep(0.2)
    assert stop_survivors(doc["pids"]) == []
    assert not Path(doc["log_dir"]).exists()  # logs removed after a clean run


def test_interrupted_mid_run_stops_every_process(tmp_path):
    out = tmp_path / "never.json"
    cmd = [*CMD, "--loads", "", "--rates", "20", "--duration", "60", "--routing", "synergai", "--json", str(out)]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    pids: list[int] = []
    survivors: list[int] = []
    try:
        lines = []
        for line in p.stdout:  # type: ignore[union-attr]
            lines.append(line)
            m = re.search(r"ready in .* pids \[([\d, ]+)\]", line)
            if m:
                pids = [int(x) for x in m.group(1).split(",")]
                break
        assert len(pids) == 4, "".join(lines)
        assert all(alive(x) for x in pids)
        time.sleep(2.0)  # the run is under way
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[0]
        time.sleep(0.2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        survivors = stop_survivors(pids)
    assert survivors == []
    assert not out.exists()
    assert p.returncode == 130, rest
    assert "interrupted" in rest and "stopped every process it started (4)" in rest, rest
