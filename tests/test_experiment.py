"""`synergai experiment` end to end: outputs, determinism, user scenarios, one-line errors."""
from __future__ import annotations


import pandas as pd
import pytest

from synergai.experiments.runner import RESULT_COLUMNS, TIMING_COLUMNS
from synergai.cli import main

REQUIRED = ["scenario", "policy", "seed", "load", "requests", "violations", "violation_rate", "excess_ms_total",
            "excess_ms_mean", "p99_latency_ms", "energy_j", "decision_us_mean", "decision_us_p99"]

USER = """
name: my-scenario
description: a user's own scenario
cluster: {edge_nodes: 1.0, remove_pools: [cloud-x86]}
workload: {mix: {resnet50: 2, mobilenet-v2: 1}, deadlines: {slack: 8}}
arrivals: {process: onoff, n: 400, high: 2.0, mean_high_s: 0.05, mean_low_s: 0.05}
loads: [0.7]
seeds: [0]
policies: [synergai, slo-mael, least-loaded]
"""


def test_quick_end_to_end(tmp_path):
    out = tmp_path / "q"
    assert main(["experiment", "--quick", "--scenario", "poisson-mlperf", "--scenario", "optimal-small",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(df.columns)
    assert {"synergai", "slo-mael", "slo-mael-bw", "optimal"} <= set(df["policy"])
    assert (df.loc[df.policy != "optimal", "requests"] > 0).all()
    rep = (out / "report.md").read_text()
    assert "SLO-MAEL" in rep and "Gap to the hindsight optimum" in rep
    for png in ("violation_rate_vs_load.png", "excess_vs_load.png", "decision_overhead.png", "utilisation.png"):
        assert (out / png).stat().st_size > 5000
    opt = pd.read_csv(out / "optimal.csv")
    proven = opt[opt.optimal_status == "optimal"]
    assert (proven["optimal_violations"] <= proven["violations"]).all()


def test_same_seed_identical_results(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["experiment", "--quick", "--scenario", "bursty-mmpp", "--policies", "synergai,slo-mael,random",
            "--no-plots"]
    assert main(args + ["--out", str(a)]) == 0
    assert main(args + ["--out", str(b)]) == 0
    da, db = (pd.read_csv(p / "results.csv").drop(columns=TIMING_COLUMNS) for p in (a, b))
    pd.testing.assert_frame_equal(da, db)
    assert list(pd.read_csv(a / "results.csv").columns) == RESULT_COLUMNS


def test_user_scenario_file_runs(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(USER)
    out = tmp_path / "o"
    assert main(["experiment", "--scenario", str(f), "--out", str(out), "--no-plots"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["policy"]) == {"synergai", "slo-mael", "least-loaded"}
    assert (df["scenario"] == "my-scenario").all() and (df["requests"] == 400).all()


@pytest.mark.parametrize("body,needle", [
    (USER.replace("process: onoff", "process: telepathy"), "arrivals.process"),
    (USER.replace("loads: [0.7]", "loads: [0.7]\nbogus: 1"), "bogus"),
    (USER.replace("[synergai, slo-mael, least-loaded]", "[synergai, nope]"), "policies.1"),
    (USER.replace("remove_pools: [cloud-x86]", "remove_pools: [atlantis]"), "cluster.remove_pools"),
    ("name: [unclosed", "YAML syntax error"),
])
def test_bad_scenario_is_one_line_exit_2(tmp_path, capsys, body, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    assert main(["experiment", "--scenario", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err and needle in err


def test_unknown_scenario_or_policy_exit_2(tmp_path, capsys):
    assert main(["experiment", "--scenario", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert main(["experiment", "--scenario", "poisson-mlperf", "--policies", "x", "--out", str(tmp_path)]) == 2
    assert "unknown policy" in capsys.readouterr().err
