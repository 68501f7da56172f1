"""import-mlperf on other rounds without code changes: date from the round's metadata, Server batch from the
run's settings (else flagged), representative run, device aliases (bundled and user), skip summary."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest

from synergai.cli import main
from synergai.models.errors import InputError
from synergai.profiling_data.mlperf import (
    import_mlperf_with_report,
    load_aliases,
    normalize_board,
    normalize_gpu,
    round_date_from_metadata,
)

RCOLS = [
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
    "server_batch_size",
]
SCOLS = [
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


def ss(sub, sid, p99_ms, qps, model="resnet50"):
    p99 = int(p99_ms * 1e6)
    return [
        "v9.0",
        "closed",
        sub,
        sid,
        model,
        "SingleStream",
        "SingleStream",
        str(p99),
        str(qps),
        "",
        str(p99 - 1000),
        str(p99 - 2000),
        str(p99 - 1000),
        str(p99),
        "int8",
        "int8",
        "",
        "",
    ]


def server(sub, sid, p99_ms, total, batch=""):
    p99 = int(p99_ms * 1e6)
    return [
        "v9.0",
        "closed",
        sub,
        sid,
        "resnet50",
        "Server",
        "Server",
        str(total),
        "",
        str(total),
        str(p99 // 2),
        str(p99 // 2),
        str(p99 - 1000),
        str(p99),
        "int8",
        "int8",
        "",
        batch,
    ]


def system(sub, sid, name, host, acc, accs="1", fw="TensorRT 10", sw=""):
    return ["closed", sub, sid, name, host, "8", acc, accs, fw, "", sw]


def write(tmp_path: Path, results, systems, source_md: str | None = None):
    d = tmp_path / "round"
    d.mkdir(exist_ok=True)
    for name, cols, rows in (("results.csv", RCOLS, results), ("systems.csv", SCOLS, systems)):
        with (d / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
    if source_md is not None:
        (d / "SOURCE.md").write_text(source_md)
    return d / "results.csv", d / "systems.csv"


SYSTEMS = [
    system("A", "gpu1", "box", "AMD EPYC 9654", "NVIDIA L4"),
    system("B", "gpu2", "box", "AMD EPYC 9654", "NVIDIA L4"),
    system("C", "gpu3", "box", "AMD EPYC 9654", "NVIDIA L4"),
    system("A", "srv1", "box", "AMD EPYC 9654", "NVIDIA L4", accs="2"),
    system("A", "srv2", "box", "AMD EPYC 9654", "NVIDIA L4", accs="2", sw="Server batch size: 24"),
    system("A", "srv3", "box", "AMD EPYC 9654", "NVIDIA L4", accs="2"),
]


def test_round_date_from_metadata(tmp_path):
    assert round_date_from_metadata(tmp_path) == (None, "")
    (tmp_path / "README.md").write_text("Snapshot 2025-07-01. Results of the March 2024 publication.\n")
    assert round_date_from_metadata(tmp_path)[0] == datetime(2024, 3, 1)
    (tmp_path / "round.yaml").write_text("round: v4.0\npublished: 2024-03-27\n")
    assert round_date_from_metadata(tmp_path)[0] == datetime(2024, 3, 27)


def test_date_missing_is_flagged_and_given_date_wins(tmp_path):
    r, s = write(tmp_path, [ss("A", "gpu1", 1.0, 900)], SYSTEMS)
    t, rep = import_mlperf_with_report(r, s)
    assert t.df.measured_at.isna().all()
    assert any("no round date" in k for k in rep.flagged) and "--published" in rep.summary()
    t2, _ = import_mlperf_with_report(r, s, published=datetime(2030, 1, 2))
    assert str(t2.df.measured_at.iloc[0])[:10] == "2030-01-02"


def test_server_batch_from_the_runs_settings_else_flagged(tmp_path):
    r, s = write(
        tmp_path,
        [server("A", "srv1", 10, 2000, batch="48"), server("A", "srv2", 10, 2000), server("A", "srv3", 10, 2000)],
        SYSTEMS,
        "published: 2031-01-01\n",
    )
    t, rep = import_mlperf_with_report(r, s, pick="lowest-p99")
    # batch 48 from the results column, 24 from the system's notes, the third assumed (and flagged)
    batches = sorted(x.batch_size for x in t.records)
    assert len(t) == 3 and 48 in batches and 24 in batches
    assert rep.flagged["Server batch size assumed (not in the run's own settings; source ends #batch-assumed)"] == 1
    assumed = [x for x in t.records if x.source.endswith("#batch-assumed")]
    assert len(assumed) == 1 and "srv3" in assumed[0].source


def test_representative_run_not_the_fastest(tmp_path):
    rows = [ss("A", "gpu1", 1.0, 900), ss("B", "gpu2", 3.0, 800), ss("C", "gpu3", 2.0, 850)]
    r, s = write(tmp_path, rows, SYSTEMS, "published: 2031-01-01\n")
    t, rep = import_mlperf_with_report(r, s)
    assert len(t) == 1 and t.records[0].latency_p99_ms == pytest.approx(2.0)  # the median of 1, 2, 3
    assert rep.merged == 2
    t2, _ = import_mlperf_with_report(r, s, pick="lowest-p99")
    assert t2.records[0].latency_p99_ms == pytest.approx(1.0)
    r, s = write(tmp_path, rows[:2], SYSTEMS)
    t3, _ = import_mlperf_with_report(r, s)
    assert t3.records[0].latency_p99_ms == pytest.approx(3.0)  # of two, the slower (upper median)


@pytest.mark.parametrize(
    "acc,host,want",
    [
        ("NVIDIA Jetson AGX Orin 64GB Developer Kit", "12-core Arm Cortex-A78AE", "jetson-agx-orin"),
        ("NVIDIA Jetson Orin Nano 8GB", "6-core Arm Cortex-A78AE", "jetson-orin-nano"),
        ("NVIDIA Jetson Xavier NX", "6-core Carmel", "jetson-xavier-nx"),
        ("NVIDIA A100-SXM4-80GB", "AMD EPYC 7763", "nvidia-a100-sxm-80gb"),
        ("NVIDIA A100-SXM-80GB", "AMD EPYC 7763", "nvidia-a100-sxm-80gb"),
        ("NVIDIA H100 80GB HBM3", "Intel(R) Xeon(R) Platinum 8480C", "nvidia-h100-sxm-80gb"),
    ],
)
def test_gpu_aliases(acc, host, want):
    assert normalize_gpu(acc, host).name == want


@pytest.mark.parametrize("acc", ["NVIDIA A100-SXM4-40GB MIG 3g.20gb", "NVIDIA A100-40C", "GRID A100X-20C"])
def test_virtual_gpu_slices_are_skipped(acc):
    with pytest.raises(Exception) as ei:
        normalize_gpu(acc, "AMD EPYC 7763")
    assert "slice" in str(ei.value)


@pytest.mark.parametrize(
    "sid,name,host,want,arch",
    [
        ("vm", "c6i.4xlarge", "Intel Xeon Processor (Icelake)", "x86-xeon-icelake", "amd64"),
        ("vm", "n2-standard-8", "Intel Xeon Processor (Cascadelake)", "x86-xeon-cascadelake", "amd64"),
        ("vm", "c3-standard-8", "Intel(R) Xeon(R) CPU @ 2.00GHz (Sapphire Rapids)", "x86-xeon-sapphirerapids", "amd64"),
        ("vm", "m7g.2xlarge", "AWS Graviton3", "graviton3", "arm64"),
        ("vm", "c8g", "Neoverse-V2", "graviton4", "arm64"),
        ("vm", "t2d", "AMD EPYC Processor", "x86-epyc", "amd64"),
        (
            "box",
            "server",
            "Intel(R) Xeon(R) Platinum 8480+ (Sapphire Rapids)",
            "x86-xeon-8480plus",
            "amd64",
        ),  # model wins
    ],
)
def test_cpu_aliases(sid, name, host, want, arch):
    d = normalize_board(sid, name, host, "8")
    assert (d.name, d.architecture) == (want, arch)


def test_user_alias_file_extends_and_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        "accelerators:\n  - {match: 'acme npu', device: acme-npu}\n"
        "hosts:\n  - {match: 'acme edge box', device: acme-box, vcpus: 6, architecture: arm64}\n"
        "merge:\n  nvidia-l4: my-l4\n"
    )
    al = load_aliases([f])
    assert normalize_gpu("ACME NPU v2", "x", al).name == "acme-npu"
    d = normalize_board("s", "ACME Edge Box", "some cpu", "", al)
    assert (d.name, d.vcpus, d.architecture) == ("acme-box", 6, "arm64")
    assert normalize_gpu("NVIDIA L4", "AMD EPYC 9654", al).name == "my-l4"
    assert normalize_gpu("NVIDIA Jetson AGX Orin", "arm", al).name == "jetson-agx-orin"  # bundled still there


@pytest.mark.parametrize(
    "body,field",
    [
        ("accelerators:\n  - {match: '(', device: x}\n", "accelerators.0.match"),
        ("hosts:\n  - {match: 'a', device: X Y}\n", "hosts.0.device"),
        ("hosts:\n  - {match: 'a'}\n", "hosts.0"),
        ("bogus: []\n", "bogus"),
    ],
)
def test_bad_alias_file_names_file_and_field(tmp_path, body, field):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(InputError) as ei:
        load_aliases([f])
    assert ei.value.file == str(f) and ei.value.field == field


def test_cli_aliases_published_and_summary(tmp_path, capsys):
    rows = [ss("A", "gpu1", 1.0, 900), ss("B", "gpu2", 3.0, 800), ss("Z", "z", 1.0, 9)]
    systems = SYSTEMS + [system("Z", "z", "z", "z", "Quantum Coprocessor")]
    r, s = write(tmp_path, rows, systems)
    f = tmp_path / "al.yaml"
    f.write_text("merge:\n  nvidia-l4: nvidia-l4-renamed\n")
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "import-mlperf",
                "--results",
                str(r),
                "--systems",
                str(s),
                "--aliases",
                str(f),
                "--published",
                "2031-05-06",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr()
    blob = text.out + text.err
    assert "unknown accelerator: Quantum Coprocessor" in blob and "2031-05-06" in blob
    assert "nvidia-l4-renamed" in out.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge: [1, 2]\n")
    assert (
        main(["import-mlperf", "--results", str(r), "--systems", str(s), "--aliases", str(bad), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "merge" in err
    assert (
        main(["import-mlperf", "--results", str(r), "--systems", str(s), "--published", "May 2031", "--out", str(out)])
        == 2
    )
    assert "--published" in capsys.readouterr().err
