"""The embedded MLPerf-derived profiles, the importer, and the default cluster/workload."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from synergai.models.errors import InputError
from synergai.models.profiles import KEY_FIELDS, ProfileTable
from synergai.profiling_data import (
    DEFAULT_CLUSTER,
    DEFAULT_PROFILES,
    DEFAULT_WORKLOAD,
    default_cluster,
    default_profiles,
    default_workload,
)
from synergai.profiling_data.build_default import OUT_NAME, build
from synergai.profiling_data.mlperf import (
    DEFAULT_DATA_DIR,
    RESULTS_REQUIRED,
    import_mlperf,
    import_mlperf_with_report,
    normalize_engine,
    normalize_model,
    normalize_precision,
)

SHARED = DEFAULT_DATA_DIR


# ------------------------------------------------------------------------------------ committed table
def test_committed_profiles_load_cleanly():
    t = default_profiles()
    assert DEFAULT_PROFILES.exists()
    assert 100 <= len(t) <= 1000
    df = t.df
    assert (df.latency_p50_ms <= df.latency_p90_ms).all()
    assert (df.latency_p90_ms <= df.latency_p99_ms).all()
    assert (df.throughput_rps > 0).all() and (df.cpu_cores > 0).all() and (df.memory_request_mb > 0).all()
    assert not df.duplicated(list(KEY_FIELDS)).any()
    assert df.source.str.startswith("mlperf-v3.0:").all()
    # GPU replicas take one accelerator, CPU replicas none
    assert (df[df.engine == "tensorrt"].accelerators == 1).all()
    assert (df[df.accelerator == "none"].accelerators == 0).all()


def _has(t: ProfileTable, device: str, model: str, **kw) -> bool:
    df = t.df
    sel = (df.device == device) & (df.model == model)
    for k, v in kw.items():
        sel &= df[k] == v
    return bool(sel.any())


def test_coverage_devices_models_power_modes():
    t = default_profiles()
    for dev in (
        "jetson-agx-orin",
        "jetson-orin-nx",
        "jetson-xavier",
        "rpi4",
        "rk3588s",
        "amlogic-s922x",
        "amlogic-a311d2",
        "x86-xeon-8275cl",
        "graviton3",
        "nvidia-l4",
        "nvidia-a100-pcie-80gb",
        "nvidia-t4",
    ):
        assert dev in t.devices, dev
    # Jetson AGX Orin GPU at several power modes, and its CPU engines (same device, accelerator none)
    for mode in ("maxn", "maxq"):
        for model in ("resnet50", "bert", "retinanet"):
            assert _has(t, "jetson-agx-orin", model, engine="tensorrt", power_mode=mode), (model, mode)
    for eng in ("tflite", "armnn-neon"):
        assert _has(t, "jetson-agx-orin", "resnet50", engine=eng, accelerator="none")
        assert _has(t, "jetson-xavier", "mobilenet-v2", engine=eng, accelerator="none", power_mode="maxn")
    assert _has(t, "jetson-orin-nx", "resnet50", engine="tensorrt")
    # ARM boards
    for dev in ("rpi4", "rk3588s", "amlogic-s922x", "amlogic-a311d2"):
        assert _has(t, dev, "resnet50", architecture="arm64", accelerator="none")
        assert _has(t, dev, "mobilenet-v2", precision="int8")
        assert _has(t, dev, "mobilenet-v2", precision="fp32")
    assert _has(t, "rk3588s", "mobilenet-v2", engine="armnn-opencl", accelerator="gpu")
    # cloud CPU (x86 and Arm) and cloud GPU, batched Server configuration included
    assert _has(t, "x86-xeon-8275cl", "mobilenet-v2", architecture="amd64", accelerator="none")
    assert _has(t, "graviton3", "mobilenet-v2", architecture="arm64")
    for model in ("resnet50", "bert", "retinanet"):
        assert _has(t, "nvidia-l4", model, batch_size=1)
        df = t.df
        assert ((df.device == "nvidia-l4") & (df.model == model) & (df.batch_size > 1)).any(), model
    assert set(t.models) >= {
        "resnet50",
        "retinanet",
        "bert",
        "mobilenet-v1",
        "mobilenet-v2",
        "mobilenet-v3",
        "efficientnet-lite0",
    }


@pytest.mark.skipif(not (SHARED / "results.csv").exists(), reason="shared MLPerf extract absent")
def test_rebuild_reproduces_committed_csv(tmp_path):
    out = build(SHARED, tmp_path, quiet=True)
    assert out == tmp_path / OUT_NAME
    assert out.read_bytes() == DEFAULT_PROFILES.read_bytes()


@pytest.mark.skipif(not (SHARED / "results.csv").exists(), reason="shared MLPerf extract absent")
def test_import_report_counts_skips():
    t, rep = import_mlperf_with_report(SHARED / "results.csv", SHARED / "systems.csv")
    assert rep.records == len(t) and t.import_report is rep
    assert rep.rows == rep.records + sum(rep.skipped.values()) + rep.merged
    assert rep.skipped["Offline scenario (completion times, not per-request latency)"] > 0
    assert any("qaic" in r for r in rep.skipped)
    assert "skipped" in rep.summary()


# --------------------------------------------------------------------------- importer on synthetic input
_RESULTS_COLS = [
    "round",
    "division",
    "submitter",
    "system_id",
    "model",
    "scenario_dir",
    "scenario_logged",
    "result_value",
    "qps_without_loadgen_overhead",
    "completed_samples_per_s",
    "lat_mean_ns",
    "lat_p50_ns",
    "lat_p90_ns",
    "lat_p99_ns",
    "input_data_types",
    "weight_data_types",
    "power_avg_W",
]
_SYSTEM_COLS = [
    "division",
    "submitter",
    "system_id",
    "system_name",
    "host_processor_model_name",
    "host_processor_core_count",
    "accelerator_model_name",
    "accelerators_per_node",
    "framework",
    "hw_notes",
    "sw_notes",
]

# Rows copied from the v3.0 extract, with the round label and system ids changed (a fake "v3.1" round).
_RESULTS = [
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "Orin_TRT_v31",
        "resnet50",
        "SingleStream",
        "SingleStream",
        "633478",
        "1586.27",
        "",
        "628000",
        "630245",
        "633478",
        "636517",
        "int8",
        "int8",
        "",
    ],
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "Orin_TRT_MaxQ_v31",
        "bert-99",
        "singlestream",
        "SingleStream",
        "7875966",
        "159.74",
        "",
        "6200000",
        "5974490",
        "7875966",
        "8872733",
        "int32",
        "int8",
        "25.5161",
    ],
    [
        "v3.1",
        "open",
        "Krai",
        "rpi4-tflite-v2.14.0-ruy",
        "mobilenet-v2-1.0-224-quantized",
        "singlestream",
        "SingleStream",
        "30080022",
        "36.78",
        "",
        "27000000",
        "26046738",
        "30080022",
        "42238169",
        "int8",
        "int8",
        "",
    ],
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "L4x2_TRT_v31",
        "resnet50",
        "Server",
        "Server",
        "24396.96",
        "",
        "24396.8",
        "3000000",
        "3021530",
        "3200000",
        "3377286",
        "int8",
        "int8",
        "800",
    ],
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "L4x2_TRT_v31",
        "resnet50",
        "Offline",
        "Offline",
        "25000",
        "",
        "",
        "",
        "1",
        "2",
        "3",
        "int8",
        "int8",
        "",
    ],
    # odd rows: garbage latency, unknown system, unknown model -> skipped and counted, never a crash
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "Orin_TRT_v31",
        "retinanet",
        "SingleStream",
        "SingleStream",
        "x",
        "",
        "",
        "",
        "n/a",
        "",
        "",
        "int8",
        "int8",
        "",
    ],
    [
        "v3.1",
        "closed",
        "Nobody",
        "ghost",
        "resnet50",
        "SingleStream",
        "SingleStream",
        "1",
        "1",
        "",
        "1",
        "1",
        "1",
        "1",
        "int8",
        "int8",
        "",
    ],
    [
        "v3.1",
        "closed",
        "NVIDIA",
        "Orin_TRT_v31",
        "llama2-70b",
        "SingleStream",
        "SingleStream",
        "1",
        "1",
        "",
        "1",
        "1",
        "1",
        "1",
        "fp8",
        "fp8",
        "",
    ],
]
_SYSTEMS = [
    [
        "closed",
        "NVIDIA",
        "Orin_TRT_v31",
        "NVIDIA Jetson AGX Orin (TensorRT)",
        "12-core ARM Cortex-A78AE CPU",
        "12",
        "NVIDIA Jetson AGX Orin",
        "1",
        "TensorRT 9.0",
        "",
        "",
    ],
    [
        "closed",
        "NVIDIA",
        "Orin_TRT_MaxQ_v31",
        "NVIDIA Jetson AGX Orin (MaxQ, TensorRT)",
        "12-core ARM Cortex-A78AE CPU",
        "12",
        "NVIDIA Jetson AGX Orin",
        "1",
        "TensorRT 9.0",
        "",
        "",
    ],
    [
        "open",
        "Krai",
        "rpi4-tflite-v2.14.0-ruy",
        "Raspberry Pi 4 Model B Rev 1.5 (rpi4)",
        "BCM2711 Arm Cortex-A72",
        "4",
        "-",
        "0",
        "TFLite v2.14.0 (ruy)",
        "",
        "",
    ],
    [
        "closed",
        "NVIDIA",
        "L4x2_TRT_v31",
        "NVIDIA L4 (2x L4, TensorRT)",
        "AMD EPYC 7313P 16-Core Processor",
        "16",
        "NVIDIA L4",
        "2",
        "TensorRT 9.0, CUDA 12.2",
        "",
        "",
    ],
]


def _write(path: Path, cols: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    return path


def test_second_round_imports_without_code_changes(tmp_path):
    res = _write(tmp_path / "results.csv", _RESULTS_COLS, _RESULTS)
    sysf = _write(tmp_path / "systems.csv", _SYSTEM_COLS, _SYSTEMS)
    (tmp_path / "SOURCE.md").write_text("# a round\n\n| published | 2023-09-11 |\n| snapshot | 2025-01-02 |\n")
    t, rep = import_mlperf_with_report(res, sysf)
    assert len(t) == 4
    assert t.df.source.str.startswith("mlperf-v3.1:").all()
    assert (t.df.measured_at.astype(str).str[:10] == "2023-09-11").all()  # from the round's own metadata
    assert _has(t, "jetson-agx-orin", "resnet50", power_mode="maxn", engine="tensorrt", batch_size=1)
    assert _has(t, "jetson-agx-orin", "bert", power_mode="maxq", precision="int8")
    assert _has(t, "rpi4", "mobilenet-v2", engine="tflite", precision="int8", accelerator="none")
    srv = t.df[(t.df.device == "nvidia-l4") & (t.df.batch_size > 1)]
    assert len(srv) == 1
    assert srv.throughput_rps.iloc[0] == pytest.approx(24396.8 / 2)  # per accelerator
    assert srv.power_w.iloc[0] == pytest.approx(400)
    assert sum(rep.skipped.values()) == 4  # offline, bad latency, unknown system, unknown model
    # an explicit round label wins over the column
    t2 = import_mlperf(res, sysf, round_label="v9.9")
    assert t2.df.source.str.startswith("mlperf-v9.9:").all()


def test_missing_column_names_file_and_column(tmp_path):
    cols = [c for c in _RESULTS_COLS if c != "lat_p99_ns"]
    rows = [[v for c, v in zip(_RESULTS_COLS, r) if c != "lat_p99_ns"] for r in _RESULTS]
    res = _write(tmp_path / "results.csv", cols, rows)
    sysf = _write(tmp_path / "systems.csv", _SYSTEM_COLS, _SYSTEMS)
    with pytest.raises(InputError) as ei:
        import_mlperf(res, sysf)
    assert ei.value.file == str(res) and ei.value.field == "lat_p99_ns"
    assert "results.csv" in str(ei.value) and "lat_p99_ns" in str(ei.value)
    assert "lat_p99_ns" in RESULTS_REQUIRED
    # systems file missing a column, and empty files
    bad_sys = _write(tmp_path / "systems2.csv", _SYSTEM_COLS[:-4], [r[:-4] for r in _SYSTEMS])
    with pytest.raises(InputError, match="accelerators_per_node"):
        import_mlperf(_write(tmp_path / "r2.csv", _RESULTS_COLS, _RESULTS), bad_sys)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        import_mlperf(empty, sysf)
    with pytest.raises(InputError, match="not found"):
        import_mlperf(tmp_path / "nope.csv", sysf)


def test_normalisers():
    assert normalize_model("bert-99") == ("bert", None, "")
    assert normalize_model("mobilenet-v1-precision_uint8-1.0-224")[:2] == ("mobilenet-v1", "int8")
    assert normalize_model("mobilenet-v3-large_224_1.0_float")[:2] == ("mobilenet-v3", "fp32")
    assert normalize_model("efficientnet-int8-lite0")[:2] == ("efficientnet-lite0", "int8")
    assert normalize_model("mobilenet-v2-0.35-96-quantized")[0] is None
    assert normalize_engine("orin-armnn-v22.11-neon") == "armnn-neon"
    assert normalize_engine("firefly-armnn-v22.11-opencl") == "armnn-opencl"
    assert normalize_engine("DGX-A100_A100-SXM-80GBx1_TRT_Triton") == "tensorrt"
    assert (
        normalize_engine("aws_graviton_m7g.2xlarge-tflite_armnn_cpp-cpu-armnn_tflite-v22.11-using_neon") == "armnn-neon"
    )
    assert normalize_engine("nvidia_orin-reference-cpu-tvm-onnx-v1.14.0-default_config") == "tvm"
    assert normalize_precision("int8,fp16", "int32") == "int8"
    assert normalize_precision("No change.", "FP32") == "fp32"
    assert normalize_precision("", "") is None


# -------------------------------------------------------------------------------- cluster and workload
def test_default_cluster_and_workload():
    c, w, t = default_cluster(), default_workload(), default_profiles()
    assert DEFAULT_CLUSTER.exists() and DEFAULT_WORKLOAD.exists()
    tiers = {p.tier for p in c.pools}
    assert tiers == {"edge", "cloud"}
    wmodels = {d.model for d in w.models}
    assert {"resnet50", "retinanet", "bert"} <= wmodels and any(m.startswith("mobilenet") for m in wmodels)
    for p in c.pools:
        assert any(t.for_model_device(m, p.device) for m in wmodels), p.device
        assert p.labels.get("synergai.io/device") == p.device and p.labels.get("synergai.io/pool") == p.name
        recs = [r for r in t.records if r.device == p.device]
        assert {r.architecture for r in recs} == {p.architecture}, p.name
        # at least one configuration of a workload model fits on one node of the pool
        assert any(
            r.cpu_cores <= p.cpu and r.memory_request_mb <= p.memory_mb and r.accelerators <= p.accelerators
            for r in recs
            if r.model in wmodels
        ), p.name
    for m in wmodels:
        assert any(t.for_model_device(m, p.device) for p in c.pools), m
