"""The sweep on a user's own profile table, cluster and workload (CLI flags and scenario keys), and
``--jobs 2`` giving the same results as ``--jobs 1``."""

from __future__ import annotations

import pandas as pd
import pytest

from synergai.cli import main
from synergai.experiments.runner import TIMING_COLUMNS

PROFILES = """model,engine,device,architecture,accelerator,precision,batch_size,threads,power_mode,latency_p50_ms,latency_p90_ms,latency_p99_ms,throughput_rps,power_w,memory_mb,cpu_cores,memory_request_mb,accelerators,source,measured_at
tiny-net,onnxruntime,my-box,amd64,none,fp32,1,,default,4,5,6,50,20,,2,512,0,mine,2024-01-01
tiny-net,onnxruntime,my-box,amd64,none,int8,1,,default,30,35,40,400,20,,1,512,0,mine,2024-01-01
other-net,onnxruntime,my-box,amd64,none,fp32,1,,default,8,9,10,20,20,,2,512,0,mine,2024-01-01
"""
CLUSTER = """name: my-cluster
pools:
  - {name: boxes, device: my-box, architecture: amd64, tier: edge, nodes: 2, cpu: 4, memory_mb: 8192, rtt_ms: 1}
"""
WORKLOAD = """name: my-workload
models:
  - {model: tiny-net, rate_rps: 3, deadline_ms: 20}
  - {model: other-net, rate_rps: 1, deadline_ms: 20}
"""


@pytest.fixture
def user_files(tmp_path):
    p, c, w = tmp_path / "p.csv", tmp_path / "c.yaml", tmp_path / "w.yaml"
    p.write_text(PROFILES)
    c.write_text(CLUSTER)
    w.write_text(WORKLOAD)
    return p, c, w


# Hand-computed neutral capacity: the int8 config misses the 20 ms deadline (40 + 1 > 20); 8 cores;
# tiny-net 2 cores per 50 req/s, other-net 2 cores per 20 req/s; mix 3:1 ->
# t (0.75 x 2/50 + 0.25 x 2/20) = 8 -> t = 8 / 0.055
CAPACITY = 8 / 0.055


def test_cli_flags_run_a_builtin_scenario_on_user_data(tmp_path, user_files):
    p, c, w = user_files
    out = tmp_path / "o"
    assert (
        main(
            [
                "experiment",
                "--scenario",
                "poisson-mlperf",
                "--quick",
                "--policies",
                "synergai,round-robin",
                "--profiles",
                str(p),
                "--cluster",
                str(c),
                "--workload",
                str(w),
                "--out",
                str(out),
                "--no-plots",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    df = pd.read_csv(out / "results.csv")
    assert set(df["policy"]) == {"synergai", "round-robin"} and (df["status"] == "ok").all()
    assert df["capacity_rps"].iloc[0] == pytest.approx(CAPACITY, rel=1e-5)
    assert list(df["rate_rps"]) == pytest.approx(list(df["load"] * CAPACITY), rel=1e-5)
    assert "--cluster" in (out / "report.md").read_text()


def test_scenario_keys_name_user_files(tmp_path, user_files):
    p, c, w = user_files
    f = tmp_path / "mine.yaml"
    f.write_text(f"""
name: mine
profiles: {{files: [{p.name}]}}
cluster: {{base: {c.name}}}
workload: {{base: {w.name}, deadlines: workload}}
arrivals: {{process: poisson, n: 300}}
loads: [0.4]
seeds: [0]
policies: [synergai, least-loaded]
""")
    out = tmp_path / "o"
    assert main(["experiment", "--scenario", str(f), "--out", str(out), "--no-plots", "--jobs", "1"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert (df["requests"] == 300).all() and (df["status"] == "ok").all()
    assert df["capacity_rps"].iloc[0] == pytest.approx(CAPACITY, rel=1e-5)


def test_variant_that_does_not_fit_the_user_cluster_is_skipped(tmp_path, user_files, capsys):
    p, c, w = user_files
    assert (
        main(
            [
                "experiment",
                "--scenario",
                "failure-orin-nx",
                "--quick",
                "--profiles",
                str(p),
                "--cluster",
                str(c),
                "--workload",
                str(w),
                "--out",
                str(tmp_path / "o"),
                "--no-plots",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "skipping scenario failure-orin-nx" in err and "edge-orin-nx" in err


@pytest.mark.parametrize("flag", ["--profiles", "--cluster", "--workload"])
def test_missing_or_bad_user_file_is_one_line_exit_2(tmp_path, user_files, capsys, flag):
    p, c, w = user_files
    paths = {"--profiles": p, "--cluster": c, "--workload": w}
    bad = tmp_path / "missing.yaml"
    args = ["experiment", "--scenario", "poisson-mlperf", "--quick", "--out", str(tmp_path / "o"), "--no-plots"]
    for k, v in paths.items():
        args += [k, str(bad if k == flag else v)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    paths[flag].write_text("model,engine\nx,y\n" if flag == "--profiles" else "name: [unclosed")
    args = [a if a != str(bad) else str(paths[flag]) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(paths[flag]) in err and "Traceback" not in err


def test_jobs_2_gives_the_same_results_as_jobs_1(tmp_path):
    args = [
        "experiment",
        "--quick",
        "--scenario",
        "bursty-mmpp",
        "--scenario",
        "poisson-slack",
        "--policies",
        "synergai,slo-mael,random",
        "--no-plots",
        "--seeds",
        "1",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(args + ["--jobs", "1", "--out", str(a)]) == 0
    assert main(args + ["--jobs", "2", "--out", str(b)]) == 0
    da, db = (pd.read_csv(p / "results.csv").drop(columns=TIMING_COLUMNS) for p in (a, b))
    assert len(da) == 30  # 2 scenarios x 3 policies x loads, each also on the edge-lite cluster (headline scenarios)
    pd.testing.assert_frame_equal(da, db)
    ua, ub = (pd.read_csv(p / "utilisation.csv") for p in (a, b))
    pd.testing.assert_frame_equal(ua, ub)


def test_ray_missing_is_a_one_line_hint(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert (
        main(["experiment", "--scenario", "poisson-mlperf", "--quick", "--ray", "auto", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'ray[default]'" in err


def test_unprofiled_pool_with_skip_unprofiled(tmp_path, user_files):
    p, c, w = user_files
    c.write_text(
        CLUSTER + "  - {name: ghosts, device: ghost-box, architecture: amd64, tier: cloud, nodes: 3, cpu: 8, "
        "memory_mb: 8192, rtt_ms: 20}\n"
    )
    args = [
        "experiment",
        "--scenario",
        "poisson-mlperf",
        "--quick",
        "--policies",
        "synergai",
        "--profiles",
        str(p),
        "--cluster",
        str(c),
        "--workload",
        str(w),
        "--no-plots",
        "--jobs",
        "1",
        "--seeds",
        "1",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    a = pd.read_csv(tmp_path / "a" / "results.csv")
    assert (a["status"] == "error").all() and a["note"].str.contains("ghost-box").all()
    assert main(args + ["--skip-unprofiled", "--out", str(tmp_path / "b")]) == 0
    b = pd.read_csv(tmp_path / "b" / "results.csv")
    assert (b["status"] == "ok").all()
    assert b["capacity_rps"].iloc[0] == pytest.approx(CAPACITY, rel=1e-5)  # the unprofiled pool adds nothing


def test_ray_path_with_a_stand_in_ray(tmp_path, monkeypatch):
    """The --ray code path (init, remote, wait, get) against a synchronous stand-in for the ray module."""
    import sys
    import types

    calls = {}
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False

    def init(address=None, **kw):
        calls["address"] = address

    class Ref:
        def __init__(self, v):
            self.v = v

    def remote(fn):
        return types.SimpleNamespace(remote=lambda *a: Ref(fn(*a)))

    def wait(refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    fake.init, fake.remote, fake.wait, fake.get = init, remote, wait, (lambda r: r.v)
    monkeypatch.setitem(sys.modules, "ray", fake)
    args = [
        "experiment",
        "--quick",
        "--scenario",
        "bursty-mmpp",
        "--policies",
        "synergai,random",
        "--no-plots",
        "--seeds",
        "1",
    ]
    assert main(args + ["--jobs", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--ray", "ray://head:10001", "--out", str(tmp_path / "b")]) == 0
    assert calls["address"] == "ray://head:10001"
    da, db = (pd.read_csv(tmp_path / p / "results.csv").drop(columns=TIMING_COLUMNS) for p in ("a", "b"))
    pd.testing.assert_frame_equal(da, db)
