"""The local profiler (`synergai profile`): models, measurement protocol, records, resume, errors, sparse search.

Every assertion is about structure (counts, units, ordering, consistency), never absolute timings.
Models are the `*-tiny` zoo variants and timings are short, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from synergai.cli import main
from synergai.models import ClusterSpec, ProfileRecord, ProfileTable, WorkloadSpec
from synergai.profiling_data.profiler import device as dev, engines as eng, measure, modelfile, runner, zoo
from synergai.profiling_data.profiler.sparse import Obs, Point, SparseSearch, front_recovery, hypervolume, pareto

CORES = dev.usable_cores()
TINY = ["--min-runs", "3", "--min-time", "0.02"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one model cache for the whole session (built models are reused between tests)
    monkeypatch.setenv("SYNERGAI_CACHE", str(tmp_path_factory.getbasetemp() / "synergai-cache"))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# -------------------------------------------------------------------------------------------- model zoo
@pytest.mark.parametrize("name", ["resnet-tiny", "mobilenet-tiny", "transformer-tiny"])
def test_tiny_models_are_valid_onnx_with_dynamic_batch(name, tmp_path):
    spec = zoo.ZOO[name]
    path = zoo.build(spec, tmp_path)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    specs = modelfile.input_specs(m)
    assert len(specs) == 1 and specs[0].shape[0] is None and specs[0].batch_fixed is None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        out = sess.run(None, modelfile.make_inputs(specs, b))[0]
        assert out.shape[0] == b
        assert np.isfinite(out).all()


def _params(m: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def test_real_architectures_have_their_parameter_counts():
    # reference counts without BatchNorm (folded into conv biases): ResNet-50 25.50 M, MobileNet-V2 3.49 M,
    # BERT-mini 11.2 M (4 layers, hidden 256, 30522-word embedding)
    assert _params(zoo.resnet50()) == pytest.approx(25.50e6, rel=0.01)
    assert _params(zoo.mobilenet_v2()) == pytest.approx(3.49e6, rel=0.02)
    assert _params(zoo.bert_mini()) == pytest.approx(11.2e6, rel=0.02)
    assert zoo.resolve("resnet").name == "resnet50"
    assert zoo.resolve("mobilenet").name == "mobilenet-v2"
    assert zoo.resolve("transformer").name == "bert-mini"


def test_int8_quantisation_of_cnn_and_transformer(tmp_path):
    for name, family, op in (
        ("resnet-tiny", "cnn", "QuantizeLinear"),
        ("transformer-tiny", "transformer", "MatMulInteger"),
    ):
        p = zoo.build(zoo.ZOO[name], tmp_path)
        q = modelfile.quantized(p, family)
        assert q.exists() and q != p
        ops = {n.op_type for n in onnx.load(str(q)).graph.node}
        assert op in ops, (name, ops)
        assert modelfile.quantized(p, family) == q  # cached


# ------------------------------------------------------------------------------------------ measurement
def test_run_timed_protocol_and_statistics():
    calls = []

    def call():
        calls.append(1)
        x = 0
        for i in range(2000):
            x += i

    s = measure.Settings(warmup_runs=3, warmup_time=0.0, min_runs=12, min_time=0.03, repeats=3, max_time=5)
    r = measure.run_timed(call, 4, s)
    assert r.warmup_calls >= 3
    assert r.calls >= 12 and r.calls == len(r.latencies_ms) == len(calls) - r.warmup_calls
    assert r.wall_s >= 0.03
    assert len(r.block_throughput) == 3
    assert r.p50 <= r.p90 <= r.p99
    lat = r.latencies_ms
    # throughput is batch x calls / wall and consistent with per-call latency
    assert 4 * 1000 / lat.max() <= r.throughput_rps <= 4 * 1000 / lat.min()
    assert r.spread >= 1.0 and r.repeat_cv >= 0.0 and r.cpu_s >= 0.0


def test_run_timed_caps_a_slow_configuration():
    import time

    s = measure.Settings(warmup_runs=1, warmup_time=0.0, min_runs=1000, min_time=10.0, repeats=2, max_time=0.05)
    t0 = time.perf_counter()
    r = measure.run_timed(lambda: time.sleep(0.01), 1, s)
    assert time.perf_counter() - t0 < 5
    assert 2 <= r.calls < 1000


# ------------------------------------------------------------------------------------------ device facts
@pytest.mark.parametrize(
    "cpu,board,arch,expect",
    [
        ("Intel(R) Xeon(R) Platinum 8275CL CPU @ 3.00GHz", "", "amd64", "x86-xeon-8275cl"),
        ("AMD EPYC", "", "amd64", "x86-amd-epyc"),
        ("AMD EPYC 7R13 Processor", "", "amd64", "x86-epyc-7r13"),
        ("cortex-a72", "Raspberry Pi 4 Model B Rev 1.4", "arm64", "rpi4"),
        ("cortex-a78ae", "NVIDIA Jetson AGX Orin Developer Kit", "arm64", "jetson-agx-orin"),
        ("neoverse-v1", "m7g.2xlarge", "arm64", "graviton3"),
        ("neoverse-n2", "", "arm64", "arm64-neoverse-n2"),
    ],
)
def test_device_names_follow_the_default_data(cpu, board, arch, expect):
    assert dev.normalize_device(cpu, board, arch) == expect


@pytest.mark.parametrize(
    "printed,expect",
    [
        ("NV Power Mode: MAXN", "maxn"),
        ("NV Power Mode: MAXN_SUPER", "maxn"),
        ("NV Power Mode: 15W", "15w"),
        ("NV Power Mode: MODE_30W_ALL", "mode-30w-all"),
        ("nothing useful", "default"),
    ],
)
def test_power_mode_read_from_nvpmodel(tmp_path, monkeypatch, printed, expect):
    """A real `nvpmodel -q` stand-in on PATH (a script printing what Jetson's tool prints)."""
    exe = tmp_path / "nvpmodel"
    exe.write_text(f"#!/bin/sh\necho '{printed}'\necho 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ.get('PATH', '')}")
    assert dev.power_mode() == expect


def test_facts_read_from_this_machine():
    f = dev.read_facts()
    assert f.architecture in ("amd64", "arm64")
    assert f.architecture == dev.k8s_arch(f.machine)
    assert 1 <= f.cores_usable <= f.cores_online
    assert f.device and f.device == f.device.lower()
    if not __import__("shutil").which("nvpmodel"):
        assert f.power_mode == "default"
    assert dev.read_facts("My-Pool-Device").device == "my-pool-device"
    cur, peak = dev.rss_mb()
    assert 0 < cur <= peak


# ------------------------------------------------------------------------------------------- the command
def _grid_args(out: Path, *extra) -> list:
    return [
        "profile",
        "--model-name",
        "resnet-tiny",
        "--batch",
        "1,2",
        "--threads",
        "1",
        "--precision",
        "fp32,int8",
        *TINY,
        "--device",
        "test-node",
        "--out",
        out,
        *extra,
    ]


def test_profile_writes_records_and_sidecar(tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, so, se = run_cli(capsys, *_grid_args(out))
    assert code == 0, se
    t = ProfileTable.load(out)
    assert len(t) == 4  # 1 model x 1 engine x 2 precisions x 2 batches x 1 thread
    meta = [json.loads(x) for x in (tmp_path / "p.csv.meta.jsonl").read_text().splitlines()]
    assert len(meta) == 4
    by_key = {
        tuple(m["key"][k] for k in ("model", "engine", "device", "precision", "batch_size", "threads", "power_mode")): m
        for m in meta
    }
    for r in t.records:
        assert (r.model, r.engine, r.device, r.accelerator) == ("resnet-tiny", "onnxruntime", "test-node", "none")
        assert r.architecture == dev.read_facts().architecture
        assert r.precision in ("fp32", "int8") and r.batch_size in (1, 2) and r.threads == 1
        assert r.latency_p50_ms <= r.latency_p90_ms <= r.latency_p99_ms
        assert r.cpu_cores == r.threads
        assert r.memory_mb and r.memory_request_mb >= r.memory_mb and r.memory_request_mb % 64 == 0
        assert r.accelerators == 0 and r.power_mode == "default"
        assert r.source.startswith("measured:") and "intra1" in r.source and "n3/0.02s" in r.source
        assert r.measured_at is not None and r.measured_at.tzinfo is not None
        assert abs((datetime.now(timezone.utc) - r.measured_at).total_seconds()) < 600
        m = by_key[r.key]
        lat = m["latency_ms"]
        # units: latency of one call (a batch) in ms; throughput in samples/s, consistent with it
        assert r.batch_size * 1000 / lat["max"] <= r.throughput_rps * 1.000001
        assert r.throughput_rps <= r.batch_size * 1000 / lat["min"] * 1.000001
        assert m["calls"] >= 3 and m["wall_s"] >= 0.02 and m["settings"]["min_runs"] == 3
        assert m["spread_p99_p50"] == pytest.approx(r.latency_p99_ms / r.latency_p50_ms, rel=1e-3)
        assert m["repeat_cv"] >= 0 and m["cpu_time_s"] >= 0 and m["device_facts"]["device"] == "test-node"
    flat = " ".join(so.split())
    assert "p99/p50" in flat and "repeat CV" in flat and "spread p99/p50 median" in flat


def test_profile_resumes_and_force_remeasures(tmp_path, capsys):
    out = tmp_path / "p.csv"
    args = [
        "profile",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1",
        "--threads",
        "1",
        "--precision",
        "fp32",
        *TINY,
        "--out",
        out,
    ]
    assert run_cli(capsys, *args)[0] == 0
    first = ProfileTable.load(out).records[0]
    code, so, _ = run_cli(capsys, *args, "--batch", "2")
    assert code == 0 and "1 measured, 1 already in" in " ".join(so.split())
    assert len(ProfileTable.load(out)) == 2
    code, so, _ = run_cli(capsys, *args, "--force")
    assert code == 0 and "1 measured, 0 already" in " ".join(so.split())
    t = ProfileTable.load(out)
    assert len(t) == 2
    again = next(r for r in t.records if r.key == first.key)
    assert again.measured_at >= first.measured_at
    assert len((tmp_path / "p.csv.meta.jsonl").read_text().splitlines()) == 3


def test_ctrl_c_keeps_what_was_measured(tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.csv"
    real = runner.measure_config
    n = {"calls": 0}

    def flaky(plan, cfg, **kw):
        n["calls"] += 1
        if n["calls"] == 2:
            raise KeyboardInterrupt
        return real(plan, cfg, **kw)

    monkeypatch.setattr(runner, "measure_config", flaky)
    code, so, _ = run_cli(capsys, *_grid_args(out))
    assert code == 130
    assert "interrupted" in so
    assert len(ProfileTable.load(out)) == 1
    monkeypatch.setattr(runner, "measure_config", real)
    code, so, _ = run_cli(capsys, *_grid_args(out))  # resumes: measures the other three
    assert code == 0 and "3 measured, 1 already" in " ".join(so.split())
    assert len(ProfileTable.load(out)) == 4


def _garbage_onnx(tmp_path: Path) -> Path:
    p = tmp_path / "broken.onnx"
    p.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    return p


@pytest.mark.parametrize(
    "case", ["batch0", "threads", "engine", "onnx", "missing", "model", "precision", "budget", "notint"]
)
def test_bad_configuration_is_one_line_exit_2(case, tmp_path, capsys):
    extra = {
        "batch0": ["--batch", "0"],
        "threads": ["--threads", str(CORES + 1)],
        "engine": ["--engine", "tensorflow-lite-9000"],
        "onnx": ["--model", _garbage_onnx(tmp_path)],
        "missing": ["--model", tmp_path / "nope.onnx"],
        "model": ["--model-name", "vgg19"],
        "precision": ["--precision", "fp16"],
        "budget": ["--budget", "0"],
        "notint": ["--threads", "two"],
    }[case]
    code, so, se = run_cli(capsys, "profile", "--model-name", "resnet-tiny", "--out", tmp_path / "x.csv", *extra)
    assert code == 2
    lines = [x for x in se.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("synergai: error:"), se
    assert not (tmp_path / "x.csv").exists()
    word = {
        "batch0": "--batch",
        "threads": "usable core",
        "engine": "unknown engine",
        "onnx": "cannot read ONNX",
        "missing": "not found",
        "model": "unknown model",
        "precision": "fp16",
        "budget": "--budget",
        "notint": "not an integer",
    }[case]
    assert word in lines[0]


class _Missing(eng.Engine):
    name = "missing-engine"
    module = "synergai_no_such_module_for_tests"
    install_hint = "pip install nothing"

    def load(self, path, **kw):  # pragma: no cover - never available
        raise AssertionError


@pytest.fixture
def missing_engine():
    eng.register("missing-engine", _Missing)
    yield "missing-engine"
    eng._REGISTRY.pop("missing-engine", None)


def test_uninstalled_engine_is_reported_not_a_crash(tmp_path, capsys, missing_engine):
    ok, why = eng.get_engine(missing_engine).available()
    assert not ok and "not installed" in why
    code, so, _ = run_cli(capsys, "profile", "--list-engines")
    assert code == 0 and "missing-engine" in so and "unavailable" in so
    out = tmp_path / "p.csv"
    code, so, se = run_cli(
        capsys,
        "profile",
        "--engine",
        f"{missing_engine},onnxruntime",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1",
        "--threads",
        "1",
        "--precision",
        "fp32",
        *TINY,
        "--out",
        out,
    )
    assert code == 0, se
    assert "missing-engine: unavailable" in so
    assert {r.engine for r in ProfileTable.load(out).records} == {"onnxruntime"}
    code, _, se = run_cli(capsys, "profile", "--engine", missing_engine, "--out", tmp_path / "q.csv")
    assert code == 2 and len(se.strip().splitlines()) == 1 and "no requested engine is available" in se


def test_users_own_onnx_file(tmp_path, capsys):
    src = zoo.build(zoo.ZOO["mobilenet-tiny"], tmp_path)
    mine = tmp_path / "My_Model.onnx"
    mine.write_bytes(src.read_bytes())
    out = tmp_path / "p.csv"
    code, _, se = run_cli(
        capsys,
        "profile",
        "--model",
        mine,
        "--batch",
        "1,3",
        "--threads",
        "1",
        "--precision",
        "fp32",
        *TINY,
        "--out",
        out,
    )
    assert code == 0, se
    t = ProfileTable.load(out)
    assert {r.model for r in t.records} == {"my-model"} and {r.batch_size for r in t.records} == {1, 3}


def test_fixed_batch_onnx_file_rejects_other_batches(tmp_path, capsys):
    m = zoo.resnet_tiny()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    p = tmp_path / "fixed.onnx"
    onnx.save(m, str(p))
    code, _, se = run_cli(capsys, "profile", "--model", p, "--batch", "4", "--out", tmp_path / "x.csv")
    assert code == 2 and "fixed batch dimension 1" in se


def test_failed_configuration_is_reported_and_others_continue(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("int8 quantisation failed: test")

    monkeypatch.setattr(modelfile, "quantized", boom)
    out = tmp_path / "p.csv"
    code, so, _ = run_cli(
        capsys,
        "profile",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1",
        "--threads",
        "1",
        "--precision",
        "fp32,int8",
        *TINY,
        "--out",
        out,
    )
    assert code == 0
    assert "not measured" in so and "quantisation failed" in so
    assert [r.precision for r in ProfileTable.load(out).records] == ["fp32"]


@pytest.mark.skipif(not eng.get_engine("openvino").available()[0], reason="openvino is not installed here")
def test_openvino_engine_when_installed(tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, _, se = run_cli(
        capsys,
        "profile",
        "--engine",
        "openvino",
        "--model-name",
        "resnet-tiny",
        "--batch",
        "2",
        "--threads",
        "1",
        "--precision",
        "fp32,int8",
        *TINY,
        "--out",
        out,
    )
    assert code == 0, se
    t = ProfileTable.load(out)
    assert len(t) == 2 and {r.engine for r in t.records} == {"openvino"}
    assert all("nthreads1" in r.source for r in t.records)


# ------------------------------------------------------------------------------------------ sparse search
def _surface(groups: dict, seed: int = 0) -> dict[Point, Obs]:
    """Synthetic latency surface: sub-linear thread scaling, a batch sweet spot, one dominated engine."""
    rng = np.random.default_rng(seed)
    full = {}
    for g, (bs, ts) in groups.items():
        e, m, p = g
        base = (1.0 if e == "a" else 1.6) * (0.55 if p == "int8" else 1.0) * (2.0 if m == "big" else 1.0)
        for b in bs:
            for t in ts:
                eff = 1.0 + 0.15 * math.log2(b) - 0.012 * (math.log2(b) ** 2)  # batching helps, then saturates
                lat = base * (1.5 + b / eff) / (t**0.75) * (1 + 0.02 * rng.random())
                full[Point(g, b, t)] = Obs(lat * 1.3, b * 1000 / lat, t)
    return full


def _search(groups, full, budget, known=None):
    s = SparseSearch(groups, budget, known)
    seen = []
    while (p := s.next()) is not None:
        assert p not in seen and p not in (known or {})
        seen.append(p)
        s.observe(p, full[p])
    return seen


def test_sparse_search_finds_the_front_with_half_the_grid():
    bs, ts = [1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8]
    groups = {(e, m, p): (bs, ts) for e in ("a", "b") for m in ("small", "big") for p in ("fp32", "int8")}
    full = _surface(groups)
    n = len(full)
    half = _search(groups, full, n // 2)
    assert len(half) == n // 2
    r = front_recovery(full, half)
    assert r["hv"] >= 0.95 and r["within"] >= 0.6
    # never worse with more budget, exact with the whole grid
    r2 = front_recovery(full, _search(groups, full, 3 * n // 4))
    assert r2["hv"] >= r["hv"] - 1e-9
    assert front_recovery(full, _search(groups, full, n))["exact"] == 1.0
    # budget goes to the engine that is on the front: the dominated one ("b") gets little beyond its anchors
    share_a = sum(1 for p in half if p.group[0] == "a") / len(half)
    assert share_a > 0.6


def test_sparse_search_is_deterministic_and_uses_known_points():
    groups = {("a", "m", "fp32"): ([1, 2, 4, 8], [1, 2])}
    full = _surface(groups)
    a = _search(groups, full, 5)
    assert a == _search(groups, full, 5)
    known = {p: full[p] for p in a[:3]}
    b = _search(groups, full, 2, known)
    assert len(b) == 2 and not set(b) & set(known)


def test_pareto_and_hypervolume_basics():
    pts = {"a": Obs(1, 10, 1), "b": Obs(2, 20, 1), "c": Obs(2, 5, 1), "d": Obs(0.5, 1, 2)}
    assert pareto(pts) == {"a", "b", "d"}
    hv = hypervolume(list(pts.values()), ref_latency=3, ref_threads=3)
    assert hv > hypervolume([pts["a"]], 3, 3) > 0


def test_budget_limits_measurements(tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, so, se = run_cli(
        capsys,
        "profile",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1,2,4,8",
        "--threads",
        "1",
        "--precision",
        "fp32",
        *TINY,
        "--budget",
        "3",
        "--out",
        out,
    )
    assert code == 0, se
    t = ProfileTable.load(out)
    assert len(t) == 3
    assert {1, 8} <= {r.batch_size for r in t.records}  # the anchors come first


# ------------------------------------------------------------------------------------- merge + planning
def _imported_like(rec: ProfileRecord) -> ProfileRecord:
    return rec.model_copy(
        update={
            "source": "mlperf-v3.0:closed/Someone/box/SingleStream",
            "measured_at": datetime(2023, 4, 5),
            "latency_p50_ms": rec.latency_p50_ms * 3,
            "latency_p90_ms": rec.latency_p90_ms * 3,
            "latency_p99_ms": rec.latency_p99_ms * 3,
            "throughput_rps": rec.throughput_rps / 3,
        }
    )


def _cluster(device: str) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": "here",
            "pools": [
                {
                    "name": "local",
                    "device": device,
                    "architecture": dev.read_facts().architecture,
                    "tier": "edge",
                    "nodes": 1,
                    "cpu": float(CORES),
                    "memory_mb": 8192,
                    "rtt_ms": 1.0,
                }
            ],
        }
    )


def test_measured_profile_replaces_imported_one_and_the_plan_says_so(tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert (
        run_cli(
            capsys,
            "profile",
            "--model-name",
            "resnet-tiny",
            "--batch",
            "1",
            "--threads",
            "1",
            "--precision",
            "fp32",
            *TINY,
            "--device",
            "test-node",
            "--out",
            out,
        )[0]
        == 0
    )
    measured = ProfileTable.load(out)
    imported = ProfileTable([_imported_like(r) for r in measured.records], source="imported.csv")
    merged = ProfileTable.merge([imported, measured])
    assert len(merged) == 1 and merged.records[0].source.startswith("measured:")
    assert len(merged.replaced) == 1
    # also when the measured table comes first: newer wins, not order
    merged2 = ProfileTable.merge([measured, imported])
    assert merged2.records[0].source.startswith("measured:")
    from synergai.planner import plan_offline

    wl = WorkloadSpec.model_validate({"models": [{"model": "resnet-tiny", "rate_rps": 5, "deadline_ms": 2000}]})
    plan = plan_offline(merged, _cluster("test-node"), wl, time_limit=10)
    assert any("newer measurement" in n and "measured:" in n and "mlperf-v3.0" in n for n in plan.notes)
    assert plan.assignments and plan.assignments[0].config.source.startswith("measured:")
    # and through the CLI: --profiles twice merges, the plan file carries the note
    imp = tmp_path / "imported.csv"
    imported.save(imp)
    cl = tmp_path / "cluster.json"
    cl.write_text(_cluster("test-node").model_dump_json())
    w = tmp_path / "wl.json"
    w.write_text(wl.model_dump_json())
    code, so, se = run_cli(capsys, "plan", "-p", imp, "-p", out, "-c", cl, "-w", w, "--out", tmp_path / "plan.json")
    assert code == 0, se
    assert "newer measurement" in so


def test_end_to_end_profile_plan_simulate(tmp_path, capsys):
    """Profile this machine (tiny grid, seconds), plan with the records, replay a short trace."""
    out = tmp_path / "here.csv"
    threads = "1,2" if CORES >= 2 else "1"
    code, _, se = run_cli(
        capsys,
        "profile",
        "--model-name",
        "resnet-tiny,transformer-tiny",
        "--batch",
        "1,2",
        "--threads",
        threads,
        "--precision",
        "fp32",
        *TINY,
        "--device",
        "this-node",
        "--out",
        out,
    )
    assert code == 0, se
    table = ProfileTable.load(out)
    assert len(table) == 2 * 2 * len(threads.split(","))
    cluster = _cluster("this-node")
    wl = WorkloadSpec.model_validate(
        {
            "models": [
                {"model": "resnet-tiny", "rate_rps": 20, "deadline_ms": 1000},
                {"model": "transformer-tiny", "rate_rps": 20, "deadline_ms": 1000},
            ]
        }
    )
    from synergai.planner import plan_offline

    plan = plan_offline(table, cluster, wl, time_limit=10)
    assert not plan.unserved
    assert {a.model for a in plan.assignments} == {"resnet-tiny", "transformer-tiny"}
    for a in plan.assignments:
        assert a.config.source.startswith("measured:") and a.pool == "local"

    from synergai.experiments import Arrivals, get_policy, simulate
    from synergai.experiments.policies import RunContext

    rng = np.random.default_rng(7)
    n = 400
    times = np.cumsum(rng.exponential(1 / 40.0, size=n))
    model = rng.integers(0, 2, size=n)
    arr = Arrivals(times, model, ["resnet-tiny", "transformer-tiny"], np.full(n, 1.0), rng.standard_normal(n))
    ctx = RunContext(profiles=table, cluster=cluster, workload=wl, seed=7, arrivals=arr)
    policy = get_policy("synergai")(ctx)
    dep = policy.deploy()
    res = simulate(arr, dep, policy)
    m = res.metrics
    assert m["requests"] == n and m["unplaced"] == 0
    assert m["violation_rate"] <= 0.01  # 1 s deadlines vs sub-millisecond inference
    assert np.all(res.finish[res.replica >= 0] >= res.start[res.replica >= 0])


def test_output_file_header_only_or_foreign(tmp_path, capsys):
    from synergai.models.profiles import COLUMNS

    out = tmp_path / "p.csv"
    out.write_text(",".join(COLUMNS) + "\n")  # an empty table: fine, appended to
    args = [
        "profile",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1",
        "--threads",
        "1",
        "--precision",
        "fp32",
        *TINY,
    ]
    code, _, se = run_cli(capsys, *args, "--out", out)
    assert code == 0, se
    assert len(ProfileTable.load(out)) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("model,engine\nx,y\n")  # not a profile table: refused, untouched
    code, _, se = run_cli(capsys, *args, "--out", bad)
    assert code == 2 and len(se.strip().splitlines()) == 1 and "missing column" in se
    assert bad.read_text() == "model,engine\nx,y\n"
