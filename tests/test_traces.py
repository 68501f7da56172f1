"""Trace scenarios by path: units and formats, tick spreading, training/replay windows, data directory,
missing and malformed files (one line, exit 2), optional traces skipped (exit 0)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from synergai.cli import main
from synergai.experiments.scenarios import build_instance, load_scenario, make_arrivals
from synergai.experiments.traces import TraceSpec, load_trace, split

T0 = datetime(2024, 3, 1, 12, 0, 0)
# seconds since T0: several share a 1 s tick (3 at 2 s, 2 at 5 s), one burst in the second half
OFFSETS_S = [0, 1, 2, 2, 2, 3, 5, 5, 6, 8, 9, 10, 10, 11, 12, 12, 12, 12, 13, 14]


def write_trace(tmp_path, unit: str, fmt: str = "csv", name: str = "t"):
    if unit == "s":
        col = [float(x) + 1000.0 for x in OFFSETS_S]  # an arbitrary epoch offset
    elif unit == "ms":
        col = [x * 1000 + 7_000_000 for x in OFFSETS_S]
    else:
        col = [(T0 + timedelta(seconds=x)).strftime("%Y-%m-%d %H:%M:%S") for x in OFFSETS_S]
    df = pd.DataFrame({"when": col, "m": ["resnet50", "bert"] * (len(col) // 2)})
    df = df.iloc[np.random.default_rng(1).permutation(len(df))]  # unsorted on purpose
    path = tmp_path / f"{name}-{unit}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        pytest.importorskip("pyarrow")
        df.to_parquet(path, index=False)
    return path


def spec(path, unit, **kw):
    tu = {"s": "s", "ms": "ms", "dt": "datetime:%Y-%m-%d %H:%M:%S"}[unit]
    return TraceSpec(path=str(path), time_column="when", time_unit=tu, **kw)


def test_units_and_formats_give_the_same_arrivals(tmp_path):
    ref = load_trace(spec(write_trace(tmp_path, "s"), "s")).times
    for unit, fmt in (("ms", "csv"), ("dt", "csv"), ("s", "jsonl"), ("ms", "parquet")):
        t = load_trace(spec(write_trace(tmp_path, unit, fmt), unit)).times
        np.testing.assert_allclose(t, ref, rtol=0, atol=1e-9)


def test_arrivals_sharing_a_tick_are_spread_evenly(tmp_path):
    tr = load_trace(spec(write_trace(tmp_path, "dt"), "dt"))
    assert tr.tick_s == 1.0
    # hand-computed: k arrivals stamped T -> T + (i + 0.5)/k; times relative to the first tick (0 s)
    assert tr.times[0] == pytest.approx(0.5)  # one arrival at 0 s
    assert list(tr.times[2:5]) == pytest.approx([2 + 1 / 6, 2 + 3 / 6, 2 + 5 / 6])  # three at 2 s
    assert list(tr.times[14:18]) == pytest.approx([12.125, 12.375, 12.625, 12.875])  # four at 12 s
    assert np.all(np.diff(tr.times) > 0)


def test_windows_split_disjointly(tmp_path):
    s = spec(write_trace(tmp_path, "s"), "s", train={"start": 0, "end": 0.5}, replay={"start": 0.5, "end": 1.0})
    tr = load_trace(s)
    train, replay = split(tr, s)
    assert train.times.max() < replay.times.min()
    assert len(train.times) + len(replay.times) == len(tr.times)
    s2 = spec(
        write_trace(tmp_path, "s"),
        "s",
        train={"start": 0, "end": 6, "unit": "s"},
        replay={"start": 6, "end": 100, "unit": "s"},
    )
    train2, replay2 = split(load_trace(s2), s2)
    assert (train2.times - tr.times[0] < 6).all() and (replay2.times - tr.times[0] >= 6).all()
    with pytest.raises(ValueError):
        spec(write_trace(tmp_path, "s"), "s", train={"start": 0, "end": 0.6}, replay={"start": 0.5, "end": 1.0})


def _long_trace(tmp_path, burst_in_replay: bool):
    """2,000 evenly spaced arrivals in [0, 1000) s; optionally a 20x burst inside the second half."""
    t = list(np.arange(0, 1000, 0.5))
    if burst_in_replay:
        t += list(700 + np.arange(0, 20, 0.025))
    p = tmp_path / f"long-{burst_in_replay}.csv"
    pd.DataFrame({"ts": t}).to_csv(p, index=False)
    return p


SCEN = """
name: tr
workload: {{mix: {{resnet50: 1}}, deadlines: mlperf}}
arrivals: {{process: trace, path: {path}, time_column: ts, time_unit: s, n: 1800, train: {{start: 0, end: 0.5}}, replay: {{start: 0.5, end: 1.0}}}}
loads: [0.5]
seeds: [0]
policies: [round-robin]
"""


def test_planning_statistics_come_from_the_training_window_only(tmp_path):
    f0, f1 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    f0.write_text(SCEN.format(path=_long_trace(tmp_path, False)))
    f1.write_text(SCEN.format(path=_long_trace(tmp_path, True)))
    i0, i1 = build_instance(load_scenario(f0), 0.5), build_instance(load_scenario(f1), 0.5)
    # the burst sits in the replayed half: what the planner is told must not change
    assert i0.load_scenarios == i1.load_scenarios == ()
    assert i0.workload == i1.workload
    # but the replay sees it: even gaps without the burst, a 20x burst with it
    g0, g1 = np.diff(make_arrivals(i0, 0).time_s), np.diff(make_arrivals(i1, 0).time_s)
    assert g0.max() / g0.min() < 1.01 and g1.max() / g1.min() > 15


def test_trace_model_column_drives_models(tmp_path):
    p = write_trace(tmp_path, "s")
    f = tmp_path / "m.yaml"
    f.write_text(f"""
name: tm
workload: {{deadlines: mlperf}}
arrivals: {{process: trace, path: {p}, time_column: when, model_column: m, n: 30,
           train: {{start: 0, end: 0.5}}, replay: {{start: 0.5, end: 1.0}}}}
loads: [0.5]
seeds: [0]
""")
    inst = build_instance(load_scenario(f), 0.5)
    assert {d.model for d in inst.workload.models} <= {"resnet50", "bert"}
    arr = make_arrivals(inst, 0)
    assert len(arr) == 30


USER = """
name: user-trace
workload: {{mix: {{resnet50: 2, mobilenet-v2: 1}}, deadlines: mlperf}}
arrivals: {{process: trace, path: {path}, time_column: {col}, time_unit: {unit}, n: 200{extra}}}
loads: [0.5]
seeds: [0]
policies: [round-robin]
"""


def _run(tmp_path, body, *extra):
    f = tmp_path / "s.yaml"
    f.write_text(body)
    return main(
        ["experiment", "--scenario", str(f), "--out", str(tmp_path / "o"), "--no-plots", "--jobs", "1", *extra]
    ), f


def test_user_trace_runs_end_to_end(tmp_path):
    p = write_trace(tmp_path, "dt")
    rc, _ = _run(tmp_path, USER.format(path=p, col="when", unit='"datetime:%Y-%m-%d %H:%M:%S"', extra=""))
    assert rc == 0
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert (df["requests"] == 200).all() and (df["rate_rps"] > 0).all()
    assert df["load"].iloc[0] == pytest.approx(0.5)
    assert df["rate_rps"].iloc[0] == pytest.approx(0.5 * df["capacity_rps"].iloc[0], rel=1e-5)


@pytest.mark.parametrize("case", ["missing-file", "missing-column", "bad-timestamp", "bad-number", "garbage"])
def test_missing_or_malformed_trace_is_one_line_exit_2(tmp_path, capsys, case):
    p = write_trace(tmp_path, "s")
    col, unit = "when", "s"
    if case == "missing-file":
        p = tmp_path / "nope.csv"
        needle = "arrivals.path"
    elif case == "missing-column":
        col, needle = "stamp", "stamp"
    elif case == "bad-timestamp":
        unit, needle = "datetime", "when"
    elif case == "bad-number":
        p.write_text(p.read_text().replace("1005.0", "soon", 1))
        needle = ":"  # row given
    else:
        p.write_bytes(b"\x00\x01\x02 not a table \xff")
        needle = str(p)
    rc, f = _run(tmp_path, USER.format(path=p, col=col, unit=unit, extra=""))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert needle in err
    assert (str(p) in err) or (str(f) in err)
    if case == "bad-number":
        assert "when" in err and "soon" in err


def test_optional_trace_absent_is_skipped_exit_0(tmp_path, capsys):
    body = USER.format(path="nowhere/trace.csv", col="when", unit="s", extra=", optional: true")
    rc, _ = _run(tmp_path, body, "--data-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert rc == 0 and "skipping scenario user-trace" in err and "Traceback" not in err


def test_relative_path_resolves_under_data_dir_and_env(tmp_path, monkeypatch, capsys):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    src = write_trace(tmp_path, "s")
    (d / "sub" / "t.csv").write_text(src.read_text())
    body = USER.format(path="sub/t.csv", col="when", unit="s", extra="")
    assert _run(tmp_path, body, "--data-dir", str(d))[0] == 0
    monkeypatch.setenv("SYNERGAI_DATA_DIR", str(d))
    assert _run(tmp_path, body)[0] == 0
    monkeypatch.setenv("SYNERGAI_DATA_DIR", str(tmp_path / "empty"))
    assert _run(tmp_path, body)[0] == 2
    assert "sub/t.csv" in capsys.readouterr().err


def test_all_quick_without_data_skips_trace_scenarios(tmp_path, monkeypatch, capsys):
    """Only the skip path: the sweep itself is stubbed so the test stays fast."""
    import synergai.experiments.runner as runner

    seen = []
    real = runner.prepare

    def fake_prepare(scenarios, **kw):
        cells = real(scenarios, **kw)
        seen.extend(c.scenario.name for c in cells)
        return [c for c in cells if c.scenario.arrivals.is_trace]  # the trace cells reach the skip check

    monkeypatch.setattr(runner, "prepare", fake_prepare)
    monkeypatch.setenv("SYNERGAI_DATA_DIR", str(tmp_path / "no-data"))
    assert main(["experiment", "--all", "--quick", "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    skips = [ln for ln in err.splitlines() if ln.startswith("skipping scenario")]
    # each trace scenario is skipped once per cluster it runs on (the default and edge-lite)
    assert sorted({s.split()[2].rstrip(":").split("@")[0] for s in skips}) == [
        "alibaba-diffusion",
        "azure-code",
        "azure-conv",
    ]
    assert "Traceback" not in err and "poisson-mlperf" in seen


def test_quick_without_scenario_runs_the_default_set(tmp_path, monkeypatch):
    import synergai.experiments.runner as runner

    got = []

    def fake_sweep(scens, **kw):
        got.extend(sc.name for sc in scens)
        return pd.DataFrame(columns=runner.RESULT_COLUMNS), pd.DataFrame(), pd.DataFrame()

    monkeypatch.setattr(runner, "run_sweep", fake_sweep)
    assert main(["experiment", "--quick", "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    from synergai.experiments.scenarios import builtin_scenarios

    want = sorted(n for n, p in builtin_scenarios().items() if load_scenario(p).headline)
    assert sorted(got) == want and "poisson-mlperf" in got


@pytest.mark.parametrize("rate,want", [("native", None), (7.5, 7.5)])
def test_fixed_rate_trace_runs_once_at_that_rate(tmp_path, rate, want):
    p = _long_trace(tmp_path, False)  # 2 arrivals/s, evenly spaced
    f = tmp_path / "r.yaml"
    f.write_text(
        SCEN.format(path=p).replace("n: 1800,", f"n: 400, rate: {rate},").replace("loads: [0.5]", "loads: [0.5, 0.9]")
    )
    rc = main(["experiment", "--scenario", str(f), "--out", str(tmp_path / "o"), "--no-plots", "--jobs", "1"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert len(df) == 1  # one run: the loads do not apply to a fixed rate
    r = want if want is not None else 2.0  # the replay window's own rate
    assert df["rate_rps"].iloc[0] == pytest.approx(r, rel=1e-3)
    assert df["load"].iloc[0] == pytest.approx(r / df["capacity_rps"].iloc[0], rel=5e-3)  # csv keeps 6 digits
    inst = build_instance(load_scenario(f), 0.5)
    gaps = np.diff(make_arrivals(inst, 0).time_s)
    assert gaps.mean() == pytest.approx(1 / r, rel=1e-3)


def test_iso_datetimes_with_fractions_and_offsets(tmp_path):
    p = tmp_path / "iso.csv"
    p.write_text("ts\n2023-11-16 18:17:03.9799600\n2023-11-16T19:17:04.5+01:00\n2023-11-16 18:17:06Z\n")
    tr = load_trace(TraceSpec(path=str(p), time_column="ts", time_unit="datetime", tick_s=1e-6))
    np.testing.assert_allclose(np.diff(tr.times), [0.52004, 1.5], atol=1e-6)
