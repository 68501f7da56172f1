"""`synergai experiment` end to end: outputs, determinism, user scenarios, one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest

from synergai.cli import main
from synergai.experiments.runner import RESULT_COLUMNS, TIMING_COLUMNS

REQUIRED = [
    "scenario",
    "policy",
    "seed",
    "load",
    "requests",
    "violations",
    "violation_rate",
    "excess_ms_total",
    "excess_ms_mean",
    "p99_latency_ms",
    "energy_j",
    "decision_us_mean",
    "decision_us_p99",
]

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
    assert (
        main(
            ["experiment", "--quick", "--scenario", "poisson-mlperf", "--scenario", "optimal-small", "--out", str(out)]
        )
        == 0
    )
    df = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(df.columns)
    assert {"synergai", "slo-mael", "slo-mael-bw", "optimal"} <= set(df["policy"])
    assert (df.loc[df.policy != "optimal", "requests"] > 0).all()
    rep = (out / "report.md").read_text()
    assert "strongest baseline" in rep and "Gap to the hindsight optimum" in rep
    assert {"poisson-mlperf", "poisson-mlperf@edge-lite"} <= set(df["scenario"])
    assert {"late_p50_dl", "late_p99_dl", "late_max_dl", "unplaced", "shed", "energy_j", "cluster"} <= set(df.columns)
    for png in ("violation_rate_vs_load.png", "excess_vs_load.png", "decision_overhead.png", "utilisation.png"):
        assert (out / png).stat().st_size > 5000
    opt = pd.read_csv(out / "optimal.csv")
    proven = opt[opt.optimal_status == "optimal"]
    assert (proven["optimal_violations"] <= proven["violations"]).all()


def test_same_seed_identical_results(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = [
        "experiment",
        "--quick",
        "--scenario",
        "bursty-mmpp",
        "--policies",
        "synergai,slo-mael,random",
        "--no-plots",
    ]
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


@pytest.mark.parametrize(
    "body,needle",
    [
        (USER.replace("process: onoff", "process: telepathy"), "arrivals.process"),
        (USER.replace("loads: [0.7]", "loads: [0.7]\nbogus: 1"), "bogus"),
        (USER.replace("[synergai, slo-mael, least-loaded]", "[synergai, nope]"), "policies.1"),
        (USER.replace("remove_pools: [cloud-x86]", "remove_pools: [atlantis]"), "cluster.remove_pools"),
        ("name: [unclosed", "YAML syntax error"),
    ],
)
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


def _rows(spec):
    """results rows from {scenario: {policy: {load: violations}}} (one seed, headline, default cluster)."""
    rows = []
    for sc, pols in spec.items():
        cl = sc.split("@")[1] if "@" in sc else "default"
        for pol, per_load in pols.items():
            for load, v in per_load.items():
                rows.append(
                    {
                        "scenario": sc,
                        "cluster": cl,
                        "policy": pol,
                        "seed": 0,
                        "load": load,
                        "requests": 100,
                        "violations": v,
                        "excess_ms_total": float(v),
                        "energy_j": 1.0,
                        "decision_us_mean": 1.0,
                        "decision_us_p99": 1.0,
                        "p99_latency_ms": 1.0,
                        "unplaced": 0,
                        "shed": 0,
                        "late_p50_dl": 0.0,
                        "late_p99_dl": 0.0,
                        "late_max_dl": 0.0,
                        "headline": True,
                        "status": "ok",
                        "capacity_rps": 100.0,
                        "rate_rps": 100.0 * load,
                        "violation_rate": v / 100,
                        "excess_ms_mean": v / 100,
                    }
                )
    return pd.DataFrame(rows)


def test_headline_against_strongest_baseline_lists_every_loss(tmp_path):
    from synergai.experiments.report import summarise, write_report

    res = _rows(
        {
            # s1: strongest = b2 (6); factor (6+1)/(2+1)
            "s1": {
                "synergai": {0.5: 0, 0.9: 2},
                "b1": {0.5: 4, 0.9: 6},
                "b2": {0.5: 1, 0.9: 5},
                "slo-mael+plan": {0.5: 3, 0.9: 9},
            },
            # s2: strongest = b1 (4) beats synergai (5): a loss, summed and at load 0.9
            "s2": {
                "synergai": {0.5: 1, 0.9: 4},
                "b1": {0.5: 2, 0.9: 2},
                "b2": {0.5: 3, 0.9: 6},
                "slo-mael+plan": {0.5: 1, 0.9: 3},
            },
            "s1@edge-lite": {"synergai": {0.5: 1}, "b1": {0.5: 3}},
        }
    )
    s = summarise(res)
    h = s["headline"]["default"]
    assert h["baseline_violations"] == 6 + 4 and h["synergai_violations"] == 2 + 5
    assert h["pooled"] == pytest.approx(10 / 7)
    assert h["geomean"] == pytest.approx(((7 / 3) * (5 / 6)) ** 0.5)
    assert h["plan_rule_ok"] is False  # s2: synergai 5 > slo-mael+plan 4
    assert s["headline"]["edge-lite"]["pooled"] == pytest.approx(3.0)
    sc = s["scenarios"].set_index("scenario")
    assert sc.loc["s1", "strongest"] == "b2" and sc.loc["s2", "strongest"] == "b1"
    assert sc.loc["s2", "lost to (summed)"] == "b1 (4), slo-mael+plan (4)"
    assert "b1 @ 0.9 (2 vs 4)" in sc.loc["s2", "lost at loads"]
    assert "b2 @ 0.5 (1 vs 0)" not in sc.loc["s1", "lost at loads"]
    losses = s["losses"]
    assert set(zip(losses["scenario"], losses["load"], losses["baseline"])) == {
        ("s2", 0.9, "b1"),
        ("s2", 0.9, "slo-mael+plan"),
    }
    rep = write_report(tmp_path, res).read_text()
    assert "strongest baseline" in rep and "MISSED" in rep and "b1 @ 0.9 (2 vs 4)" in rep


def test_headline_scenarios_also_run_on_edge_lite():
    from synergai.experiments.scenarios import DataOptions, build_instance, resolve

    sc = resolve("poisson-mlperf")
    both = sc.on_clusters()
    assert [x.name for x in both] == ["poisson-mlperf", "poisson-mlperf@edge-lite"]
    inst = build_instance(both[1].reduced(True), 0.5)
    assert inst.cluster.name.startswith("edge-lite") and inst.capacity_rps > 0
    assert {p.name for p in inst.cluster.pools} == {"edge-agx-orin", "edge-rpi4", "edge-rk3588s", "cloud-gpu-l4"}
    # a user's --cluster replaces both
    assert len(sc.on_clusters(DataOptions(cluster="mine.yaml"))) == 1


def test_arrivals_option_sets_the_run_length_of_every_cell():
    from synergai.experiments.runner import prepare
    from synergai.experiments.scenarios import builtin_scenarios, load_scenario

    sc = load_scenario(builtin_scenarios()["mix-nlp"])
    full = prepare([sc])
    cells = prepare([sc], arrivals=321)
    assert len(cells) == len(full) and {c.load for c in cells} == {c.load for c in full}  # full load grid
    assert {c.scenario.arrivals.n for c in cells} == {321} != {c.scenario.arrivals.n for c in full}
    quick = prepare([sc], quick=True, arrivals=321)
    assert {c.scenario.arrivals.n for c in quick} == {321} and len(quick) < len(full)
