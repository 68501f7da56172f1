"""Model stores: object storage through KServe's storage initializer (init containers), per-model stores
(--model-stores), credentials from a Secret, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import yaml

from synergai.cli import main as cli_main
from synergai.executor.images import ImageMap
from synergai.executor.manifests import (
    GCS_CREDENTIALS_KEY,
    MODEL_STORE_DIR,
    STORAGE_INITIALIZER_IMAGE,
    ModelStore,
    ModelStoreMap,
    build,
)
from synergai.executor.validate import validate_all
from synergai.models import InputError, Plan
from tests.test_manifests import REPO

PLAN_FILE = Path(__file__).parent / "data" / "model_store_plan.json"


@cache
def default_plan() -> Plan:
    """A fixed plan (the default inputs' plan when these tests were written: a Triton group sharing an Orin
    between three models, dedicated groups, a CPU group served by synergai serve), so the planner's
    choices do not move what these executor tests look at."""
    return Plan.model_validate_json(PLAN_FILE.read_text())


SHARED = "edge-agx-orin-shared"  # Triton: resnet50, bert, mobilenet-v2 (its CPU model on the CPU backend)
CPU_GROUP = "mobilenet-v2-cloud-x86-7a8d5a"  # synergai serve


def pods(ms, validate: bool = True) -> dict[str, dict]:
    """Server group -> its Deployment's pod spec (the manifests validated strictly, Kubernetes 1.20)."""
    docs = ms.dicts()
    if validate:
        assert validate_all(docs) == len(docs)
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            out[d["metadata"]["annotations"]["synergai.io/server-group"]] = d["spec"]["template"]["spec"]
    return out


def mounts(pod) -> dict[str, dict]:
    return {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}


def volumes(pod) -> dict[str, dict]:
    return {v["name"]: v for v in pod["volumes"]}


def inits(pod) -> list[dict]:
    return pod.get("initContainers") or []


def models_of(group: str) -> list[str]:
    return next(g.models for g in default_plan().server_groups() if g.name == group)


# ------------------------------------------------------------------------------------------ URIs


@pytest.mark.parametrize(
    "uri",
    [
        "s3://models/synergai",
        "s3://my.bucket-1/a/b/",
        "gs://models-eu/store",
        "https://models.example.com/store.tar.gz",
        "http://minio.storage:9000/store.zip",
        "https://acct.blob.core.windows.net/models/store",
        "hdfs://namenode:8020/models",
        "webhdfs://namenode:9870/models",
        "hf://synergai/model-store:v2",
    ],
)
def test_object_storage_uris_parse(uri):
    st = ModelStore.parse(uri)
    assert (st.kind, st.target, st.scheme) == ("object", uri, uri.partition("://")[0])


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("ftp://host/models", "unknown scheme 'ftp'"),
        ("oci://registry/models:1", "unknown scheme 'oci'"),
        ("S3://models/x", "lower case"),
        ("s3://", "bucket ''"),
        ("s3://Bad_Bucket/x", "bucket 'Bad_Bucket'"),
        ("gs://bucket/a/../x", "'..'"),
        ("s3://models/a b", "whitespace"),
        ("https://models.example.com", "no path"),
        ("https://models.example.com/", "no path"),
        ("https://user:secret@models.example.com/m.tgz", "credentials in the URI"),
        ("s3://key:secret@bucket/x", "credentials in the URI"),
        ("https://bad host/x", "whitespace"),
        ("https://-host-/x", "not a host name"),
        ("hf://only-one", "hf://OWNER/REPO"),
        ("s4://models/x", "unknown scheme"),
        ("1x://models/x", "not a URI"),
        ("://models/x", "not a URI"),
        ("pvc:", "expected pvc:CLAIM"),
        ("pvc:Not_A_Claim", "expected pvc:CLAIM"),
        ("hostpath:relative", "expected pvc:CLAIM"),
        ("bucket/models", "expected pvc:CLAIM"),
    ],
)
def test_bad_store_is_a_one_line_error_naming_the_flag(uri, needle):
    with pytest.raises(InputError) as e:
        ModelStore.parse(uri)
    msg = str(e.value)
    assert msg.startswith("--model-store: ") and needle in msg and "\n" not in msg, msg


def test_default_and_volume_stores_have_no_init_containers():
    for store in (None, "pvc:models", "hostpath:/data/models", "none"):
        ms = build(default_plan(), model_store=ModelStore.parse(store) if store else None)
        for pod in pods(ms, validate=False).values():
            assert "initContainers" not in pod


# ------------------------------------------------------------------------------------------ one store


def test_s3_store_fetches_each_hosted_model_into_an_empty_dir():
    ps = pods(build(default_plan(), model_store=ModelStore.parse("s3://models/synergai/")))
    assert set(ps) == {g.name for g in default_plan().server_groups() if g.replicas > 0}
    for group, pod in ps.items():
        ms = sorted(models_of(group))
        assert volumes(pod)["model-store"] == {"name": "model-store", "emptyDir": {}}
        got = inits(pod)
        assert [c["args"] for c in got] == [[f"s3://models/synergai/{m}", f"{MODEL_STORE_DIR}/{m}"] for m in ms]
        names = [c["name"] for c in got]
        assert names == (["storage-initializer"] if len(ms) == 1 else [f"storage-initializer-{i}" for i in range(3)])
        for c in got:
            assert c["image"] == STORAGE_INITIALIZER_IMAGE
            # writes the download volume (mounted at the store dir); no credentials without a Secret
            assert {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in c["volumeMounts"]} == {
                MODEL_STORE_DIR: ("model-store", False),
                "/tmp": ("tmp", False),
            }
            assert "envFrom" not in c and [e["name"] for e in c["env"]] == ["HOME"]
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
        # the serving container reads the files read-only: the whole store, or Triton's <model>/1
        mt = mounts(pod)
        store_mounts = [m for m in mt.values() if m["name"] == "model-store"]
        assert store_mounts and all(m["readOnly"] for m in store_mounts)
    triton = mounts(ps[SHARED])
    for m in models_of(SHARED):
        assert triton[f"{MODEL_STORE_DIR}/{m}/1"] == {
            "name": "model-store",
            "mountPath": f"{MODEL_STORE_DIR}/{m}/1",
            "subPath": f"{m}/1",
            "readOnly": True,
        }
    assert mounts(ps[CPU_GROUP])[MODEL_STORE_DIR] == {"name": "model-store", "mountPath": "/models", "readOnly": True}


@pytest.mark.parametrize("uri", ["https://models.example.com/store.tar.gz", "hf://synergai/model-store"])
def test_archive_store_is_fetched_once_per_pod_into_the_store_dir(uri):
    for pod in pods(build(default_plan(), model_store=ModelStore.parse(uri))).values():
        assert [c["args"] for c in inits(pod)] == [[uri, MODEL_STORE_DIR]]


def test_secret_keys_become_environment_never_inlined():
    ps = pods(build(default_plan(), model_store=ModelStore.parse("s3://models/x"), model_store_secret="s3-creds"))
    for pod in ps.values():
        for c in inits(pod):
            assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
            assert all("value" in e and e["name"] == "HOME" for e in c["env"])
        # the serving container never sees the credentials
        assert "envFrom" not in pod["containers"][0]
        assert "model-store-credentials" not in volumes(pod)


def test_gcs_credentials_file_from_the_secret():
    ps = pods(build(default_plan(), model_store=ModelStore.parse("gs://models/x"), model_store_secret="gcs-sa"))
    pod = ps[SHARED]
    assert volumes(pod)["model-store-credentials"] == {
        "name": "model-store-credentials",
        "secret": {"secretName": "gcs-sa"},
    }
    for c in inits(pod):
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"/var/secrets/{GCS_CREDENTIALS_KEY}"
        assert {"name": "model-store-credentials", "mountPath": "/var/secrets", "readOnly": True} in c["volumeMounts"]
    assert all(m["name"] != "model-store-credentials" for m in pod["containers"][0]["volumeMounts"])
    # without a Secret: ambient credentials (workload identity), nothing mounted
    pod = pods(build(default_plan(), model_store=ModelStore.parse("gs://models/x")))[SHARED]
    assert "model-store-credentials" not in volumes(pod)
    assert all("GOOGLE_APPLICATION_CREDENTIALS" not in json.dumps(c) for c in inits(pod))


def test_image_map_entry_overrides_the_initializer_image(tmp_path):
    doc = yaml.safe_load((REPO / "executor" / "images.yaml").read_text())
    doc["images"]["storage-initializer"] = {"arm64": "registry.local/si:arm", "*": "registry.local/si:any"}
    f = tmp_path / "images.yaml"
    f.write_text(yaml.safe_dump(doc))
    ps = pods(build(default_plan(), ImageMap.load(f), model_store=ModelStore.parse("s3://zoo/x")))
    assert {c["image"] for c in inits(ps[SHARED])} == {"registry.local/si:arm"}  # edge-agx-orin: arm64
    assert {c["image"] for c in inits(ps[CPU_GROUP])} == {"registry.local/si:any"}  # cloud-x86: amd64


# ------------------------------------------------------------------------------------------ per model


def test_per_model_stores_in_a_shared_group():
    smap = ModelStoreMap.of(
        {"resnet50": "s3://zoo/resnet50/v3", "bert": "https://models.example.com/bert.tar.gz"}, source="stores.yaml"
    )
    ps = pods(build(default_plan(), model_stores=smap, model_store_secret="creds"))
    pod = ps[SHARED]  # the third model, mobilenet-v2, from --model-store (the default host path)
    assert [c["args"] for c in inits(pod)] == [
        ["https://models.example.com/bert.tar.gz", "/models/bert"],
        ["s3://zoo/resnet50/v3", "/models/resnet50"],
    ]
    assert all(c["volumeMounts"][0] == {"name": "model-download", "mountPath": "/models"} for c in inits(pod))
    vols = volumes(pod)
    assert vols["model-download"] == {"name": "model-download", "emptyDir": {}}
    assert vols["model-store"]["hostPath"] == {"path": "/var/lib/synergai/models", "type": "Directory"}
    mt = mounts(pod)
    assert (mt["/models/resnet50/1"]["name"], mt["/models/resnet50/1"]["subPath"]) == ("model-download", "resnet50/1")
    assert (mt["/models/bert/1"]["name"], mt["/models/bert/1"]["subPath"]) == ("model-download", "bert/1")
    assert (mt["/models/mobilenet-v2/1"]["name"], mt["/models/mobilenet-v2/1"]["subPath"]) == (
        "model-store",
        "mobilenet-v2/1",
    )
    # groups of models without an entry are exactly what --model-store alone makes
    plain = pods(build(default_plan()))
    assert ps["retinanet-cloud-gpu-l4-cc6107"] == plain["retinanet-cloud-gpu-l4-cc6107"]


def test_per_model_volume_is_the_models_own_directory():
    smap = ModelStoreMap.of({"mobilenet-v2": "pvc:mobilenet-files", "bert": "hostpath:/opt/bert"})
    ps = pods(build(default_plan(), model_stores=smap))
    # synergai serve: /models holds a mount point per model; the claim's root is the model's directory
    pod = ps[CPU_GROUP]
    vol = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert vol["persistentVolumeClaim"] == {"claimName": "mobilenet-files", "readOnly": True}
    assert vol["name"].startswith("model-src-")
    mt = mounts(pod)
    assert mt["/models"] == {"name": "model-repository", "mountPath": "/models"}
    assert mt["/models/mobilenet-v2"] == {"name": vol["name"], "mountPath": "/models/mobilenet-v2", "readOnly": True}
    assert "model-store" not in volumes(pod) and not inits(pod)
    # Triton: <dir>/1 of each model's own volume
    mt = mounts(ps[SHARED])
    assert mt["/models/mobilenet-v2/1"]["subPath"] == "1" and mt["/models/bert/1"]["subPath"] == "1"
    assert mt["/models/resnet50/1"]["subPath"] == "resnet50/1" and mt["/models/resnet50/1"]["name"] == "model-store"
    hp = volumes(ps[SHARED])[mt["/models/bert/1"]["name"]]
    assert hp["hostPath"] == {"path": "/opt/bert", "type": "Directory"}


def test_per_model_object_store_on_a_serve_group_mounts_the_download_dir_as_the_store():
    ps = pods(build(default_plan(), model_stores=ModelStoreMap.of({"mobilenet-v2": "gs://zoo/mnv2"})))
    pod = ps[CPU_GROUP]
    assert [c["args"] for c in inits(pod)] == [["gs://zoo/mnv2", "/models/mobilenet-v2"]]
    assert mounts(pod)["/models"] == {"name": "model-download", "mountPath": "/models", "readOnly": True}
    assert set(volumes(pod)) == {"tmp", "server-config", "model-download"}


def test_object_store_with_per_model_overrides():
    smap = ModelStoreMap.of({"bert": "s3://other/bert-v2"})
    pod = pods(build(default_plan(), model_store=ModelStore.parse("s3://zoo/store"), model_stores=smap))[SHARED]
    assert [c["args"] for c in inits(pod)] == [
        ["s3://other/bert-v2", "/models/bert"],
        ["s3://zoo/store/mobilenet-v2", "/models/mobilenet-v2"],
        ["s3://zoo/store/resnet50", "/models/resnet50"],
    ]
    assert {v for v in volumes(pod) if v.startswith("model-")} == {"model-store", "model-repository"}


def test_a_model_without_store_cannot_share_a_server_with_mounted_ones():
    smap = ModelStoreMap.of({"bert": "s3://zoo/bert"}, source="stores.yaml")
    with pytest.raises(InputError) as e:
        build(default_plan(), model_store=ModelStore.parse("none"), model_stores=smap)
    assert str(e.value).startswith("stores.yaml: ") and "--model-store none" in str(e.value)


# ------------------------------------------------------------------------------------------ CLI


def _plan(tmp_path) -> Path:
    f = tmp_path / "plan.json"
    default_plan().save(f)
    return f


def test_cli_manifests_with_object_and_per_model_stores(tmp_path, capsys):
    stores = tmp_path / "stores.yaml"
    stores.write_text("resnet50: s3://zoo/resnet50/v3\nbert: pvc:bert-files\n")
    out = tmp_path / "out"
    args = ["manifests", str(_plan(tmp_path)), "--out", str(out), "--no-gateway"]
    args += ["--model-store", "gs://zoo/store", "--model-stores", str(stores), "--model-store-secret", "zoo-creds"]
    assert cli_main(args) == 0, capsys.readouterr().err
    docs = [yaml.safe_load(f.read_text()) for f in out.glob("*.yaml")]
    assert validate_all(docs) == len(docs)
    dep = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["annotations"].get("synergai.io/server-group") == SHARED
    )
    got = {tuple(c["args"]): c for c in dep["spec"]["template"]["spec"]["initContainers"]}
    assert set(got) == {
        ("s3://zoo/resnet50/v3", "/models/resnet50"),
        ("gs://zoo/store/mobilenet-v2", "/models/mobilenet-v2"),
    }
    assert all(c["envFrom"] == [{"secretRef": {"name": "zoo-creds"}}] for c in got.values())


BAD_MAPS = {
    "syntax": ("stores.yaml", "resnet50: [s3://x\n", "YAML syntax error"),
    "json-syntax": ("stores.json", '{"resnet50": ', "JSON syntax error"),
    "not-a-mapping": ("stores.yaml", "- s3://zoo/resnet50\n", "--model-stores: expected a mapping"),
    "not-a-string": ("stores.yaml", "resnet50: 3\n", "resnet50: expected a string"),
    "unknown-scheme": (
        "stores.yaml",
        "resnet50: ftp://zoo/resnet50\n",
        "resnet50: model store 'ftp://zoo/resnet50': unknown scheme",
    ),
    "bad-bucket": ("stores.yaml", "bert: s3://B/x\n", "bert: model store 's3://B/x': bucket 'B'"),
    "none": ("stores.yaml", "bert: none\n", "bert: 'none' is not a model's directory"),
    "unknown-model": ("stores.yaml", "resnet-50: s3://zoo/x\n", "resnet-50: 'resnet-50' is not a model of the plan"),
    "empty": ("stores.yaml", "", "file is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
@pytest.mark.parametrize("command", ["manifests", "apply"])
def test_cli_bad_model_stores_file_one_line_exit_2(tmp_path, capsys, case, command):
    name, text, needle = BAD_MAPS[case]
    f = tmp_path / name
    f.write_text(text)
    err = _run_bad(tmp_path, capsys, command, ["--model-stores", str(f)])
    assert f"{f}" in err and needle in err, err


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--model-store", "ftp://zoo/models"], "--model-store: model store 'ftp://zoo/models': unknown scheme 'ftp'"),
        (["--model-store", "s3:/zoo/models"], "--model-store: model store 's3:/zoo/models': expected pvc:CLAIM"),
        (["--model-store", "https://zoo.example.com"], "no path after the host"),
        (
            ["--model-store", "s3://zoo/x", "--model-store-secret", "Bad_Name"],
            "--model-store-secret: 'Bad_Name' is not a valid Secret name",
        ),
        (["--model-stores", "/nonexistent/stores.yaml"], "/nonexistent/stores.yaml: file not found"),
    ],
)
@pytest.mark.parametrize("command", ["manifests", "apply"])
def test_cli_bad_model_store_flags_one_line_exit_2(tmp_path, capsys, flags, needle, command):
    err = _run_bad(tmp_path, capsys, command, flags)
    assert needle in err, err


def _run_bad(tmp_path, capsys, command, flags) -> str:
    args = [command, str(_plan(tmp_path))] + flags
    args += (
        ["--out", str(tmp_path / "o")]
        if command == "manifests"
        else ["--kubeconfig", str(tmp_path / "none.kubeconfig")]
    )
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synergai: error: ") and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()  # nothing written
    return err


# ------------------------------------------------------------------------------------------ API server


@pytest.mark.kube
def test_server_side_dry_run_accepts_object_and_per_model_stores(kube_admin, kube_namespace):
    from synergai.executor.apply import apply_objects

    smap = ModelStoreMap.of({"bert": "pvc:bert-files", "mobilenet-v2": "https://models.example.com/mnv2.tgz"})
    ms = build(
        default_plan(), model_store=ModelStore.parse("gs://zoo/store"), model_stores=smap, model_store_secret="zoo"
    )
    docs = ms.dicts()
    assert any("initContainers" in d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment")
    res = apply_objects(kube_admin, docs, kube_namespace, dry_run=True)
    assert res.counts()["created"] == len(docs)
