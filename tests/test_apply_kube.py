"""Against a real Kubernetes 1.20 API server: server-side dry run, apply, diff, re-apply, prune, conflicts, CLI.

Needs the binaries from `bash .ci/build-kube.sh` (the tests fail, never skip, without them).
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from synergai.cli import main as cli_main
from synergai.executor.apply import ApplyError, apply_objects
from synergai.executor.inventory import parse_quantity
from synergai.executor.kube import KubeError
from synergai.executor.manifests import LABEL_MANAGED_BY, MANAGER, PRUNE_SELECTOR, build
from synergai.executor.validate import SNAPSHOT, snapshot_from_openapi
from synergai.models import Plan
from tests.conftest import wait_for
from tests.test_manifests import default_plan, hostile_plan, random_plan

pytestmark = pytest.mark.kube


def managed(kube, ns) -> dict:
    """(kind, name) -> live object, for the plan's objects in ``ns``: synergai-managed Deployments, Services and
    server ConfigMaps (what prune may delete; not the gateway's objects)."""
    out = {}
    for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
        items, _ = kube.list(api, kind, ns, label_selector=PRUNE_SELECTOR)
        for it in items:
            if not it["metadata"].get("deletionTimestamp"):
                out[(kind, it["metadata"]["name"])] = it
    return out


def our_writes(kube, ns) -> dict:
    """(kind, name) -> (generation, time of synergai's last apply): changes only when synergai writes."""
    out = {}
    for k, v in managed(kube, ns).items():
        t = [m.get("time") for m in v["metadata"].get("managedFields") or [] if m["manager"] == MANAGER]
        out[k] = (v["metadata"].get("generation"), t)
    return out


def desired_keys(docs) -> set:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def changed_plan(plan: Plan) -> tuple[Plan, dict]:
    """Plan B from plan A: one more server in the first dedicated group, another configuration for the
    second, the shared group (or, without one, the last group) dropped with its assignments.
    Returns (plan B, the server group names: scaled, reconfigured, dropped)."""
    d = plan.model_dump(mode="json")
    groups = d["servers"]
    dedicated = [g for g in groups if not g["shared"] and g["replicas"] > 0]
    scaled, reconf = dedicated[0], dedicated[1]
    dropped = next((g for g in groups if g["shared"]), groups[-1])
    assert dropped is not scaled and dropped is not reconf
    scaled["replicas"] += 1
    for a in d["assignments"]:
        if a["server"] == scaled["name"]:
            a["replicas"] = scaled["replicas"]
        if a["server"] == reconf["name"]:
            a["config"]["batch_size"] = a["config"]["batch_size"] * 2
            a["config"]["config_id"] = a["config"]["config_id"].replace("/b", "/bx")
    d["servers"] = [g for g in groups if g is not dropped]
    d["assignments"] = [a for a in d["assignments"] if a["server"] != dropped["name"]]
    b = Plan.model_validate(d)
    b = b.model_copy(update={"plan_id": b.compute_id()})
    return b, {
        "scaled": scaled["name"],
        "reconfigured": reconf["name"],
        "dropped": dropped["name"],
        "dropped_models": list(dropped["models"]),
    }


def name_of(ms, group) -> str:
    return ms.server_for(group).name


# ------------------------------------------------------------------------------------------ schema


def test_1_20_field_snapshot_matches_the_live_api_server(kube_admin):
    openapi = kube_admin.request("GET", "/openapi/v2")
    assert openapi["info"]["version"].startswith("v1.20.")
    live = snapshot_from_openapi(openapi)["definitions"]
    stored = json.loads(SNAPSHOT.read_text())["definitions"]
    assert live == stored


@pytest.mark.parametrize("which", ["default", "random-0", "random-1", "random-2", "random-5", "hostile"])
def test_server_side_dry_run_accepts_every_manifest(kube_admin, kube_namespace, which):
    plan = {"default": default_plan, "hostile": hostile_plan}.get(which, lambda: random_plan(int(which[7:])))()
    docs = build(plan).dicts()
    res = apply_objects(kube_admin, docs, kube_namespace, dry_run=True, prune=True)
    assert res.counts()["created"] == len(docs)
    assert managed(kube_admin, kube_namespace) == {}, "a dry run wrote something"


def test_semantic_error_aborts_before_any_write(kube_admin, kube_namespace):
    docs = build(default_plan()).dicts()
    i = [n for n, d in enumerate(docs) if d["kind"] == "Deployment"][1]
    assert i > 0, "objects before the bad one must not be written either"
    bad = copy.deepcopy(docs[i])
    bad["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "something-else"  # selector != labels
    docs[i] = bad
    with pytest.raises(ApplyError) as e:
        apply_objects(kube_admin, docs, kube_namespace)
    assert "rejected by the API server" in str(e.value) and "\n" not in str(e.value)
    assert e.value.written == []
    assert managed(kube_admin, kube_namespace) == {}
    # requests > limits is caught by the server too
    docs = build(default_plan()).dicts()
    c = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    c["resources"]["limits"]["memory"] = "1Mi"
    with pytest.raises(ApplyError, match="limit"):
        apply_objects(kube_admin, docs, kube_namespace)
    assert managed(kube_admin, kube_namespace) == {}


def test_missing_namespace_is_a_clear_error(kube_admin):
    with pytest.raises(ApplyError, match="create the namespace"):
        apply_objects(kube_admin, build(default_plan()).dicts(), "no-such-namespace-xyz")


# ------------------------------------------------------------------------------------------ apply


def test_apply_default_plan(kube_admin, kube_namespace, fake_kubelet):
    plan = default_plan()
    ms = build(plan)
    docs = ms.dicts()
    res = apply_objects(kube_admin, docs, kube_namespace, prune=True)
    assert res.counts() == {"created": len(docs), "updated": 0, "unchanged": 0, "deleted": 0}
    live = managed(kube_admin, kube_namespace)
    assert set(live) == desired_keys(docs)
    for d in docs:
        obj = live[(d["kind"], d["metadata"]["name"])]
        assert obj["metadata"]["labels"] == d["metadata"]["labels"]
        assert obj["metadata"]["annotations"]["synergai.io/plan-id"] == plan.plan_id
        managers = {m["manager"] for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply"}
        assert managers == {MANAGER}
        if d["kind"] == "Service":
            assert obj["spec"]["selector"] == d["spec"]["selector"]
            continue
        if d["kind"] == "ConfigMap":
            assert obj["data"] == d["data"]
            continue
        assert obj["spec"]["selector"] == d["spec"]["selector"]
        assert obj["spec"]["replicas"] == d["spec"]["replicas"]
        pod, want = obj["spec"]["template"]["spec"], d["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == want["nodeSelector"]
        got_c, want_c = pod["containers"][0], want["containers"][0]
        for sec in ("requests", "limits"):
            assert {k: parse_quantity(v) for k, v in got_c["resources"][sec].items()} == {
                k: parse_quantity(v) for k, v in want_c["resources"][sec].items()
            }
        assert got_c["securityContext"] == want_c["securityContext"]
        assert got_c["env"] == want_c["env"]
        assert got_c["volumeMounts"] == want_c["volumeMounts"]
    # one Deployment per server group, the shared group's hosting all its models
    assert len([d for d in docs if d["kind"] == "Deployment"]) == len(plan.server_groups()) == len(ms.servers)
    assert any(s.shared and len(s.models) > 1 for s in ms.servers)
    # the controllers accept what we made: every Deployment becomes available (fake kubelet runs the pods)
    for w in ms.servers:
        wait_for(
            lambda w=w: (
                (kube_admin.get("apps/v1", "Deployment", w.name, kube_namespace).get("status") or {}).get(
                    "availableReplicas"
                )
                == w.replicas
            ),
            timeout=60,
            what=f"{w.name} available",
        )
    # every Service selects exactly the pods it should
    pods, _ = kube_admin.list("v1", "Pod", kube_namespace)
    for d in docs:
        if d["kind"] != "Service":
            continue
        sel = d["spec"]["selector"]
        chosen = [p for p in pods if all(p["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        ann = d["metadata"]["annotations"]
        if "synergai.io/server-group" in ann:
            w = ms.server_for(ann["synergai.io/server-group"])
            assert len(chosen) == w.replicas
            assert all(p["metadata"]["name"].startswith(w.name + "-") for p in chosen)
        else:  # the model's Service: the pods of every group hosting it, the shared one included
            assert len(chosen) == sum(w.replicas for w in ms.servers if ann["synergai.io/model"] in w.models)


def test_reapply_is_a_no_op(kube_admin, kube_namespace):
    docs = build(default_plan()).dicts()
    apply_objects(kube_admin, docs, kube_namespace, prune=True)
    before = our_writes(kube_admin, kube_namespace)
    time.sleep(1.1)  # managedFields times have a 1 s resolution
    res = apply_objects(kube_admin, docs, kube_namespace, prune=True)
    assert res.counts() == {"created": 0, "updated": 0, "unchanged": len(docs), "deleted": 0}
    assert not any(ch.written for ch in res.changes)
    assert our_writes(kube_admin, kube_namespace) == before
    # Services have no status: not even their resourceVersion moved
    svc = {
        k: v["metadata"]["resourceVersion"] for k, v in managed(kube_admin, kube_namespace).items() if k[0] == "Service"
    }
    apply_objects(kube_admin, docs, kube_namespace, prune=True)
    assert svc == {
        k: v["metadata"]["resourceVersion"] for k, v in managed(kube_admin, kube_namespace).items() if k[0] == "Service"
    }


def test_changed_plan_updates_in_place_and_prunes_only_what_it_should(kube_admin, kube_namespace, other_namespace):
    a = default_plan()
    b, what = changed_plan(a)
    ms_a, ms_b = build(a), build(b)
    # plan A with the gateway (its objects are never pruned: plan B below comes without them)
    apply_objects(kube_admin, build(a, gateway=True).dicts(kube_namespace), kube_namespace, prune=True)
    apply_objects(kube_admin, ms_a.dicts(), other_namespace, prune=True)
    uids = {k: v["metadata"]["uid"] for k, v in managed(kube_admin, kube_namespace).items()}

    # bystanders: not managed by synergai, managed by someone else, or a kind prune never touches
    base = copy.deepcopy(next(d for d in ms_a.dicts() if d["kind"] == "Deployment"))
    for key in ("annotations",):
        base["metadata"].pop(key, None)
    lone = copy.deepcopy(base)
    lone["metadata"] = {"name": "hand-made", "labels": {"app": "hand-made"}}
    lone["spec"]["selector"] = {"matchLabels": {"app": "hand-made"}}
    lone["spec"]["template"]["metadata"] = {"labels": {"app": "hand-made"}}
    kube_admin.create(lone, kube_namespace)
    helm = copy.deepcopy(lone)
    helm["metadata"] = {"name": "by-helm", "labels": {"app": "by-helm", LABEL_MANAGED_BY: "Helm"}}
    helm["spec"]["selector"] = {"matchLabels": {"app": "by-helm"}}
    helm["spec"]["template"]["metadata"] = {"labels": {"app": "by-helm"}}
    kube_admin.create(helm, kube_namespace)
    kube_admin.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "keep-me", "labels": {LABEL_MANAGED_BY: MANAGER}},
        },
        kube_namespace,
    )

    # dry run: reports, writes nothing (prune included)
    dry = apply_objects(kube_admin, ms_b.dicts(), kube_namespace, prune=True, dry_run=True)
    assert dry.by_action("deleted")
    assert {k: v["metadata"]["uid"] for k, v in managed(kube_admin, kube_namespace).items()} == uids

    res = apply_objects(kube_admin, ms_b.dicts(), kube_namespace, prune=True)
    scaled = name_of(ms_b, what["scaled"])
    reconf = name_of(ms_b, what["reconfigured"])
    dropped = name_of(ms_a, what["dropped"])
    assert f"Deployment/{scaled}" in res.by_action("updated")
    assert f"Deployment/{reconf}" in res.by_action("updated")
    assert f"ConfigMap/{reconf}" in res.by_action("updated")  # its server.json
    assert f"ConfigMap/{scaled}" not in res.by_action("updated")  # more servers, same configuration
    assert res.by_action("created") == []
    ch = next(c for c in res.changes if c.ref == f"Deployment/{scaled}")
    assert any(x.startswith("spec.replicas") for x in ch.details)
    ch = next(c for c in res.changes if c.ref == f"Deployment/{reconf}")
    assert any("config-hash" in x for x in ch.details), ch.details  # a new configuration rolls the pods
    deleted = set(res.by_action("deleted"))
    # the dropped (shared) group: its Deployment, Service and ConfigMap
    assert {f"Deployment/{dropped}", f"Service/{dropped}", f"ConfigMap/{dropped}"} <= deleted
    gone = [m for m in what["dropped_models"] if m not in ms_b.model_services]
    assert {f"Service/{ms_a.model_services[m]}" for m in gone} <= deleted
    assert len(deleted) == 3 + len(gone)
    # same dry-run report as the real one
    assert sorted(dry.by_action("deleted")) == sorted(deleted)
    assert sorted(dry.by_action("updated")) == sorted(res.by_action("updated"))

    live = managed(kube_admin, kube_namespace)
    assert set(live) == desired_keys(ms_b.dicts())
    # in place: the same objects, not re-created
    for k in live:
        assert live[k]["metadata"]["uid"] == uids[k]
    dep = live[("Deployment", scaled)]
    assert dep["spec"]["replicas"] == ms_b.server_for(what["scaled"]).replicas
    env = {
        e["name"]: e["value"] for e in live[("Deployment", reconf)]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    (w,) = [w for w in ms_b.workloads if w.server == what["reconfigured"]]
    assert env["CONFIG_ID"] == w.config_id
    conf = json.loads(live[("ConfigMap", reconf)]["data"]["server.json"])
    assert [m["config_id"] for m in conf["models"]] == [w.config_id]
    # bystanders untouched, other namespace untouched
    assert kube_admin.get("apps/v1", "Deployment", "hand-made", kube_namespace)
    assert kube_admin.get("apps/v1", "Deployment", "by-helm", kube_namespace)
    assert kube_admin.get("v1", "ConfigMap", "keep-me", kube_namespace)
    for api, kind in (
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("v1", "ConfigMap"),
    ):
        name = "synergai-gateway-plan" if kind == "ConfigMap" else "synergai-gateway"
        assert kube_admin.get(api, kind, name, kube_namespace), f"{kind}/{name} pruned"
    assert set(managed(kube_admin, other_namespace)) == desired_keys(ms_a.dicts())
    # and now it is stable
    again = apply_objects(kube_admin, ms_b.dicts(), kube_namespace, prune=True)
    assert not again.changed


def test_without_prune_old_objects_stay(kube_admin, kube_namespace):
    a = default_plan()
    b, what = changed_plan(a)
    apply_objects(kube_admin, build(a).dicts(), kube_namespace)
    res = apply_objects(kube_admin, build(b).dicts(), kube_namespace, prune=False)
    assert res.by_action("deleted") == []
    assert ("Deployment", name_of(build(a), what["dropped"])) in managed(kube_admin, kube_namespace)


# ------------------------------------------------------------------------------------------ conflicts


def test_field_manager_conflict_409_is_resolved_by_forcing(kube_admin, kube_namespace):
    ms = build(default_plan())
    apply_objects(kube_admin, ms.dicts(), kube_namespace)
    w = ms.servers[0]
    # another field manager (an autoscaler, say) takes spec.replicas with its own apply
    kube_admin.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas + 5},
        },
        kube_namespace,
        force=True,
        field_manager="autoscaler",
    )
    # a non-forced apply by synergai is now a real 409 from the server
    with pytest.raises(KubeError) as e:
        kube_admin.apply(
            next(d for d in ms.dicts(kube_namespace) if d["kind"] == "Deployment" and d["metadata"]["name"] == w.name),
            kube_namespace,
            force=False,
        )
    assert e.value.status == 409 and any("spec.replicas" in f for f in e.value.conflict_fields())
    # policy 1: report the conflict, write nothing
    with pytest.raises(ApplyError, match="autoscaler"):
        apply_objects(kube_admin, ms.dicts(), kube_namespace, force_conflicts=False)
    assert kube_admin.get("apps/v1", "Deployment", w.name, kube_namespace)["spec"]["replicas"] == w.replicas + 5
    # policy 2 (default): the plan wins; the conflict is reported and the field taken over
    res = apply_objects(kube_admin, ms.dicts(), kube_namespace)
    ch = next(c for c in res.changes if c.ref == f"Deployment/{w.name}")
    assert ch.action == "updated" and ch.conflicts and "autoscaler" in ch.conflicts[0]
    dep = kube_admin.get("apps/v1", "Deployment", w.name, kube_namespace)
    assert dep["spec"]["replicas"] == w.replicas
    owners = {m["manager"]: json.dumps(m.get("fieldsV1", {})) for m in dep["metadata"]["managedFields"]}
    assert '"f:replicas"' in owners[MANAGER]
    assert '"f:replicas"' not in owners.get("autoscaler", "")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_apply_prints_the_diff(kube_cluster, kube_admin, kube_namespace, tmp_path, capsys):
    a = default_plan()
    b, what = changed_plan(a)
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    a.save(fa)
    b.save(fb)
    kc = ["--kubeconfig", kube_cluster.kubeconfig_path, "--namespace", kube_namespace]
    n = len(build(a, gateway=True).objects)  # the plan's objects and the gateway's

    assert cli_main(["apply", str(fa), *kc, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("+ created") == n and "dry run" in out
    assert managed(kube_admin, kube_namespace) == {}

    assert cli_main(["apply", str(fa), *kc]) == 0
    out = capsys.readouterr().out
    assert out.count("+ created") == n and f"{n} created" in out

    assert cli_main(["apply", str(fa), *kc]) == 0
    out = capsys.readouterr().out
    assert out.count("= unchanged") == n and f"0 created, 0 updated, {n} unchanged, 0 deleted" in out

    assert cli_main(["apply", str(fb), *kc, "--prune"]) == 0
    out = capsys.readouterr().out
    assert "~ updated" in out and "spec.replicas" in out and "- deleted" in out
    # the dropped shared group is pruned: its Deployment, Service and ConfigMap
    dropped = name_of(build(a), what["dropped"])
    for kind in ("Deployment", "Service", "ConfigMap"):
        assert f"- deleted   {kind}/{dropped}" in out, out
    assert set(managed(kube_admin, kube_namespace)) == desired_keys(build(b).dicts())
    # the gateway stays, and reads plan B now
    assert "- deleted   Deployment/synergai-gateway" not in out
    cm = kube_admin.get("v1", "ConfigMap", "synergai-gateway-plan", kube_namespace)
    assert Plan.model_validate_json(cm["data"]["plan.json"]).plan_id == b.plan_id
    # and plan B again: nothing changes (--no-gateway leaves the gateway's objects alone, prune included)
    assert cli_main(["apply", str(fb), *kc, "--prune"]) == 0
    out = capsys.readouterr().out
    assert f"0 created, 0 updated, {len(build(b, gateway=True).objects)} unchanged, 0 deleted" in out, out
    assert cli_main(["apply", str(fb), *kc, "--prune", "--no-gateway"]) == 0
    out = capsys.readouterr().out
    assert f"0 created, 0 updated, {len(build(b).objects)} unchanged, 0 deleted" in out, out
    assert kube_admin.get("apps/v1", "Deployment", "synergai-gateway", kube_namespace)


@pytest.mark.parametrize("case", ["not-json", "wrong-schema-version", "wrong-schema", "unknown-engine"])
def test_cli_bad_input_touches_nothing(kube_cluster, kube_admin, kube_namespace, tmp_path, capsys, case):
    from tests.test_manifests import BAD_PLANS, _plan_file

    # something already deployed must survive a bad apply --prune untouched
    apply_objects(kube_admin, build(default_plan()).dicts(), kube_namespace)
    before = our_writes(kube_admin, kube_namespace)
    f = _plan_file(tmp_path, **BAD_PLANS[case])
    rc = cli_main(["apply", str(f), "--kubeconfig", kube_cluster.kubeconfig_path, "-n", kube_namespace, "--prune"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synergai: error:") and "\n" not in err
    assert our_writes(kube_admin, kube_namespace) == before


def test_cli_apply_api_error_is_one_line(kube_cluster, tmp_path, capsys):
    f = tmp_path / "a.json"
    default_plan().save(f)
    rc = cli_main(["apply", str(f), "--kubeconfig", kube_cluster.kubeconfig_path, "-n", "missing-ns-q"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("synergai: error:") and "\n" not in err and "namespace" in err


def test_cli_apply_to_a_missing_namespace_says_how_and_create_namespace_creates_it(
    kube_cluster, kube_admin, tmp_path, capsys
):
    import uuid

    f = tmp_path / "a.json"
    default_plan().save(f)
    ns = f"created-by-apply-{uuid.uuid4().hex[:6]}"
    kc = ["--kubeconfig", kube_cluster.kubeconfig_path, "-n", ns]
    assert cli_main(["apply", str(f), *kc]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--create-namespace" in err and "kubectl create namespace" in err, err
    assert kube_admin.get("v1", "Namespace", ns) is None
    # a dry run cannot check objects in a namespace that does not exist: it says so, creates nothing
    assert cli_main(["apply", str(f), *kc, "--create-namespace", "--dry-run"]) == 1
    assert "dry run" in capsys.readouterr().err and kube_admin.get("v1", "Namespace", ns) is None
    try:
        assert cli_main(["apply", str(f), *kc, "--create-namespace"]) == 0
        out = capsys.readouterr().out
        n = len(build(default_plan(), gateway=True).objects)
        assert f"+ created   Namespace/{ns}" in out and out.count("+ created") == n + 1
        assert len(managed(kube_admin, ns)) == len(build(default_plan()).objects)
        # the namespace exists now: nothing more to create, nothing changes
        assert cli_main(["apply", str(f), *kc, "--create-namespace"]) == 0
        out = capsys.readouterr().out
        assert "Namespace/" not in out and f"0 created, 0 updated, {n} unchanged" in out
    finally:
        kube_admin.delete("v1", "Namespace", ns)


def test_cli_inventory_reads_node_labels(kube_cluster, fake_kubelet, tmp_path, capsys):
    from synergai.models import ClusterSpec

    out = tmp_path / "cluster.yaml"
    assert cli_main(["inventory", "--kubeconfig", kube_cluster.kubeconfig_path, "--out", str(out)]) == 0
    cl = ClusterSpec.load(out)
    pool = cl.pool("cloud-x86")
    assert pool.device == "x86-xeon-8275cl" and pool.architecture == "amd64" and pool.tier == "cloud"
    assert pool.nodes >= 1 and pool.cpu == 16 and pool.memory_mb == 32 * 1024
    assert pool.labels == {"synergai.io/pool": "cloud-x86"}
