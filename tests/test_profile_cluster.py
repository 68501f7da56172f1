"""Profiling every pool from the cluster: Job manifests, ConfigMap publishing and collection.

Offline: manifest structure, kubernetes-validate strict, the 1.20 field snapshot, size checks, parsing.
`@pytest.mark.kube`: against the real v1.20 kube-apiserver of tests/kube_harness.py (Jobs created with the
right selectors, RBAC lets the profiler's ServiceAccount write its ConfigMap, collection merges valid
records and rejects malformed ones with a one-line reason each).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from synergai.cli import main
from synergai.executor import profiling_jobs as pj
from synergai.executor.manifests import pool_node_selector
from synergai.models import ClusterSpec, ProfileRecord, ProfileTable
from synergai.profiling_data import default_cluster


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    o = capsys.readouterr()
    return code, o.out, o.err


def _rec(device: str, arch: str, batch: int = 1, when: datetime | None = None, p50: float = 10.0) -> ProfileRecord:
    return ProfileRecord(
        model="resnet50",
        engine="onnxruntime",
        device=device,
        architecture=arch,
        accelerator="none",
        precision="fp32",
        batch_size=batch,
        threads=2,
        power_mode="default",
        latency_p50_ms=p50,
        latency_p90_ms=p50 * 1.1,
        latency_p99_ms=p50 * 1.3,
        throughput_rps=batch * 1000 / p50 * 0.95,
        memory_mb=400,
        cpu_cores=2,
        memory_request_mb=512,
        source="measured:pod:test",
        measured_at=when or datetime.now(timezone.utc).replace(microsecond=0),
    )


def _csv(records) -> str:
    buf = io.StringIO()
    ProfileTable(records).df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ offline
def test_one_job_per_pool_pinned_and_hardened():
    cl = default_cluster()
    objs = pj.build_objects(cl, namespace="prof")
    kinds = [o["kind"] for o in objs]
    assert kinds[:3] == ["ServiceAccount", "Role", "RoleBinding"]
    jobs = [o for o in objs if o["kind"] == "Job"]
    assert len(jobs) == len([p for p in cl.pools if p.nodes > 0]) == len(cl.pools)
    role = objs[1]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "patch"]}
    ]
    assert objs[2]["subjects"][0]["name"] == pj.PROFILER and objs[2]["roleRef"]["name"] == pj.PROFILER
    for pool, job in zip(cl.pools, jobs):
        assert job["apiVersion"] == "batch/v1" and job["metadata"]["name"] == f"synergai-profile-{pool.name}"
        assert job["metadata"]["namespace"] == "prof"
        pod = job["spec"]["template"]["spec"]
        # pinned exactly like the serving Deployments
        assert pod["nodeSelector"] == pool_node_selector(pool)
        assert pod["nodeSelector"]["kubernetes.io/arch"] == pool.architecture
        assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == pj.PROFILER
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
        cmd = c["command"] + c["args"]
        assert cmd[:3] == ["synergai", "profile", "--quick"]
        assert cmd[cmd.index("--device") + 1] == pool.device
        assert cmd[cmd.index("--out") + 1] == "/tmp/p.csv"
        assert cmd[cmd.index("--publish-configmap") + 1] == pj.object_name(pool.name) == job["metadata"]["name"]
        assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS
        assert c["image"].startswith("synergai/profiler:")
    assert {o["metadata"]["namespace"] for o in objs} == {"prof"}


def test_manifests_validate_offline_strict_and_against_the_1_20_fields():
    from synergai.executor import validate as v

    objs = pj.build_objects(default_cluster())
    for o in objs:
        v.validate_strict(o)  # kubernetes-validate, strict mode (unknown fields fail)
        if (o["apiVersion"], o["kind"]) in v.SNAPSHOT_KINDS:
            v.validate_fields_1_20(o)  # RBAC objects: field snapshot of a real 1.20 server
    # the 1.20 snapshot has no Job root; check what matters in it, the pod template, field by field
    defs = v._snapshot()
    for job in (o for o in objs if o["kind"] == "Job"):
        errors: list[str] = []
        v._check(job["spec"]["template"], defs["io.k8s.api.core.v1.PodTemplateSpec"], "", defs, errors)
        assert not errors, errors
        assert set(job["spec"]) <= {
            "activeDeadlineSeconds",
            "backoffLimit",
            "completions",
            "manualSelector",
            "parallelism",
            "selector",
            "template",
            "ttlSecondsAfterFinished",
        }


def test_odd_pool_names_and_images(tmp_path):
    cl = ClusterSpec.model_validate(
        {
            "pools": [
                {
                    "name": "Edge_Pool.1",
                    "device": "rpi4",
                    "architecture": "arm64",
                    "tier": "edge",
                    "nodes": 1,
                    "cpu": 3.8,
                    "memory_mb": 3584,
                    "labels": {"synergai.io/pool": "edge-pool-1"},
                },
                {
                    "name": "empty",
                    "device": "rpi4",
                    "architecture": "arm64",
                    "tier": "edge",
                    "nodes": 0,
                    "cpu": 4,
                    "memory_mb": 4096,
                },
            ]
        }
    )
    objs = pj.build_objects(cl, image="registry.example/prof:1")
    jobs = [o for o in objs if o["kind"] == "Job"]
    assert len(jobs) == 1  # no nodes, no Job
    name = jobs[0]["metadata"]["name"]
    from synergai.executor.names import is_dns1035_label

    assert is_dns1035_label(name) and name != "synergai-profile-Edge_Pool.1"
    assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/prof:1"
    assert jobs[0]["metadata"]["annotations"][pj.ANN_POOL] == "Edge_Pool.1"


def test_cli_writes_manifests(tmp_path, capsys):
    code, so, se = run_cli(capsys, "profile-cluster", "--out", tmp_path / "m")
    assert code == 0, se
    files = sorted((tmp_path / "m").glob("*.yaml"))
    assert len(files) == 3 + len(default_cluster().pools)
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert sum(d["kind"] == "Job" for d in docs) == len(default_cluster().pools)
    assert "validated" in so
    code, _, se = run_cli(capsys, "profile-cluster", "--pool", "nope", "--out", tmp_path / "n")
    assert code == 2 and len(se.strip().splitlines()) == 1 and "not in the cluster" in se


def test_configmap_size_is_checked():
    recs = [_rec("rpi4", "arm64", batch=b) for b in range(1, 4)]
    text = _csv(recs)
    cm = pj.configmap_object("synergai-profile-x", "x", "rpi4", text, meta_text="{}\n" * 10)
    assert cm["data"][pj.CSV_KEY] == text and pj.META_KEY in cm["data"]
    big_meta = "x" * (pj.CONFIGMAP_MAX_BYTES - len(text))
    cm = pj.configmap_object("synergai-profile-x", "x", "rpi4", text, meta_text=big_meta)
    assert pj.META_KEY not in cm["data"] and "omitted" in cm["metadata"]["annotations"][pj.ANN_META]
    with pytest.raises(pj.ProfileJobError, match=r"at most 1048576 bytes"):
        pj.configmap_object("synergai-profile-x", "x", "rpi4", text + "y" * pj.CONFIGMAP_MAX_BYTES)


def _malformed_csv(device: str, arch: str) -> str:
    good = _rec(device, arch, batch=8)
    df = ProfileTable(
        [good, _rec(device, arch, batch=16), _rec(device, arch, batch=32), _rec("jetson-agx-orin", "arm64", batch=2)]
    ).df.copy()
    df = df.astype(object)
    df.loc[1, "latency_p99_ms"] = 1.0  # p99 < p50
    df.loc[2, "throughput_rps"] = "fast"  # not a number
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def test_parse_configmap_keeps_valid_rows_and_gives_one_line_reasons():
    cl = default_cluster()
    pool = cl.pool("cloud-x86")
    cm = pj.configmap_object(pj.object_name(pool.name), pool.name, pool.device, _malformed_csv(pool.device, "amd64"))
    cm["metadata"]["namespace"] = "ns"
    good, bad = pj.parse_configmap(cm, {p.name: p for p in cl.pools})
    assert [r.batch_size for r in good] == [8]
    assert len(bad) == 3 and all("\n" not in b for b in bad)
    assert "row 3: latency percentiles must be ordered" in bad[0]
    assert "row 4: throughput_rps" in bad[1]
    assert "row 5: device: 'jetson-agx-orin' is not pool 'cloud-x86'" in bad[2]
    for bad_cm, why in (
        (dict(cm, data={}), "no profiles.csv"),
        (dict(cm, data={pj.CSV_KEY: "a,b\n1,2\n"}), "missing column"),
    ):
        assert why in pj.parse_configmap(bad_cm)[1][0]


# ---------------------------------------------------------------------------------- real API server (1.20)
@pytest.fixture
def api(kube_cluster):
    a = pj.api_client(kube_cluster.kubeconfig_path)
    yield a
    a.close()


@pytest.mark.kube
def test_jobs_and_collection_against_the_api_server(kube_cluster, kube_namespace, api, tmp_path, capsys):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns = kube_namespace
    cl = default_cluster()
    # ---- create the RBAC objects and one Job per pool through the CLI (real 1.20 validation)
    code, so, se = run_cli(capsys, "profile-cluster", "--apply", "-n", ns, "--kubeconfig", kube_cluster.kubeconfig_path)
    assert code == 0, se
    assert so.count("created Job/") == len(cl.pools)
    batch = client.BatchV1Api(api)
    jobs = {j.metadata.name: j for j in batch.list_namespaced_job(ns, label_selector=pj.SELECTOR).items}
    assert set(jobs) == {pj.object_name(p.name) for p in cl.pools}
    for p in cl.pools:
        j = jobs[pj.object_name(p.name)]
        spec = j.spec.template.spec
        assert spec.node_selector == pool_node_selector(p)
        assert spec.service_account_name == pj.PROFILER
        assert spec.containers[0].security_context.read_only_root_filesystem is True
        assert j.spec.template.metadata.labels[pj.LABEL_POOL] == p.name
    # applying again keeps them (and says so), --replace re-creates one
    code, so, _ = run_cli(capsys, "profile-cluster", "--apply", "-n", ns, "--kubeconfig", kube_cluster.kubeconfig_path)
    assert code == 0 and so.count("exists  Job/") == len(cl.pools)
    uid = jobs[pj.object_name("cloud-gpu-l4")].metadata.uid
    code, so, se = run_cli(
        capsys,
        "profile-cluster",
        "--apply",
        "--replace",
        "--pool",
        "cloud-gpu-l4",
        "-n",
        ns,
        "--kubeconfig",
        kube_cluster.kubeconfig_path,
    )
    assert code == 0, se
    assert "replaced Job/synergai-profile-cloud-gpu-l4" in so
    assert batch.read_namespaced_job(pj.object_name("cloud-gpu-l4"), ns).metadata.uid != uid

    # ---- the profiler's ServiceAccount may write ConfigMaps (and nothing else): impersonate it
    sa_api = pj.api_client(kube_cluster.kubeconfig_path)
    sa_api.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:{pj.PROFILER}")
    x86 = cl.pool("cloud-x86")
    good_csv = tmp_path / "p.csv"
    older = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    good_csv.write_text(_csv([_rec(x86.device, "amd64", b, when=older) for b in (1, 4)]))
    (tmp_path / "p.csv.meta.jsonl").write_text('{"calls": 6}\n{"calls": 6}\n')
    line = pj.publish(sa_api, good_csv, name=pj.object_name(x86.name), pool=x86.name, device=x86.device, namespace=ns)
    assert line.startswith("created ConfigMap") and "2 records" in line
    good_csv.write_text(_csv([_rec(x86.device, "amd64", b) for b in (1, 4, 8)]))  # re-run: replaced
    line = pj.publish(sa_api, good_csv, name=pj.object_name(x86.name), pool=x86.name, device=x86.device, namespace=ns)
    assert line.startswith("replaced ConfigMap") and "3 records" in line
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(sa_api).list_namespaced_pod(ns)
    assert e.value.status == 403
    sa_api.close()

    # ---- what the Job's container runs, end to end: profile (tiny grid) then publish through the CLI
    orin = cl.pool("edge-agx-orin")
    code, so, se = run_cli(
        capsys,
        "profile",
        "--model-name",
        "transformer-tiny",
        "--batch",
        "1",
        "--threads",
        "1",
        "--precision",
        "fp32",
        "--min-runs",
        "3",
        "--min-time",
        "0.02",
        "--device",
        orin.device,
        "--out",
        tmp_path / "orin.csv",
        "--publish-configmap",
        pj.object_name(orin.name),
        "--pool",
        orin.name,
        "--namespace",
        ns,
        "--kubeconfig",
        kube_cluster.kubeconfig_path,
    )
    assert code == 0, se
    assert "created ConfigMap" in so
    # (measured on this amd64 machine: collection rejects it for the arm64 pool, one line)

    # ---- a malformed ConfigMap from another pool
    rpi = cl.pool("edge-rpi4")
    bad = pj.configmap_object(pj.object_name(rpi.name), rpi.name, rpi.device, _malformed_csv(rpi.device, "arm64"))
    client.CoreV1Api(api).create_namespaced_config_map(ns, bad)

    res = pj.collect(api, ns, cl)
    arch_here = dev_facts_arch()
    orin_ok = 1 if arch_here == "arm64" else 0
    assert res.accepted == {
        pj.object_name(x86.name): 3,
        pj.object_name(rpi.name): 1,
        pj.object_name(orin.name): orin_ok,
    }
    assert len(res.table) == 4 + orin_ok
    assert {r.device for r in res.table.records} >= {x86.device, rpi.device}
    rpi_rej = [r for r in res.rejected if pj.object_name(rpi.name) in r]
    assert len(rpi_rej) == 3
    if not orin_ok:
        assert any(pj.object_name(orin.name) in r and "architecture" in r for r in res.rejected)
    assert len(res.missing) == len(cl.pools) - 3 and all("job pending" in m for m in res.missing)

    # ---- through the CLI: merged into an existing file (newer wins, noted), rejects listed one per line
    out = tmp_path / "cluster.csv"
    ProfileTable([_rec(x86.device, "amd64", 1, when=older, p50=99.0)]).save(out)
    code, so, se = run_cli(
        capsys, "profile-cluster", "--collect", "-n", ns, "--kubeconfig", kube_cluster.kubeconfig_path, "--out", out
    )
    assert code == 0, se
    t = ProfileTable.load(out)
    assert len(t) == 4 + orin_ok
    b1 = next(r for r in t.records if r.device == x86.device and r.batch_size == 1)
    assert b1.latency_p50_ms == 10.0  # the newer measurement won
    assert "replaces" in so
    rejected = [x for x in so.splitlines() if x.startswith("rejected: ")]
    assert len(rejected) == 3 + (1 - orin_ok)


def dev_facts_arch() -> str:
    from synergai.profiling_data.profiler.device import read_facts

    return read_facts().architecture


def test_cli_mode_conflicts_are_one_line(capsys, tmp_path):
    code, _, se = run_cli(capsys, "profile-cluster", "--apply", "--collect")
    assert code == 2 and len(se.strip().splitlines()) == 1 and "not both" in se
    code, _, se = run_cli(capsys, "profile-cluster", "--engine", "onnxruntime,tensorflow", "--out", tmp_path / "m")
    assert code == 2 and len(se.strip().splitlines()) == 1 and "unknown engine 'tensorflow'" in se
    code, _, se = run_cli(capsys, "profile-cluster", "--collect", "--kubeconfig", tmp_path / "none.yaml")
    assert code == 2 and len(se.strip().splitlines()) == 1 and "not found" in se
