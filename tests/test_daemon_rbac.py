"""The RBAC of executor/deploy is enough for the daemon to do its job, and no more.

The Role/RoleBinding/ClusterRole/ClusterRoleBinding from ``executor/deploy/rbac.yaml`` are applied to
a test namespace (namespace substituted; the bindings' subject is the static-token user
``synergai-daemon``, which has no other permission), and the daemon runs with that token only.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
import yaml

from synergai.executor.apply import ApplyError, apply_objects
from synergai.executor.kube import KubeClient, KubeError
from synergai.executor.manifests import build
from tests.conftest import DAEMON_USER, KUBE_TOKENS, daemon_config, running_daemon, wait_for
from tests.test_apply_kube import managed
from tests.test_daemon_kube import converged, replicas, scale
from tests.test_manifests import default_plan

pytestmark = pytest.mark.kube

DEPLOY = Path(__file__).resolve().parents[1] / "executor" / "deploy"


def rbac_docs(namespace: str, suffix: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d]
    out = []
    for d in docs:
        d = copy.deepcopy(d)
        md = d["metadata"]
        if d["kind"] in ("Role", "RoleBinding"):
            md["namespace"] = namespace
        else:  # cluster-scoped: unique per test
            md["name"] = f"{md['name']}-{suffix}"
        if d["kind"] == "ClusterRoleBinding":
            d["roleRef"]["name"] = f"{d['roleRef']['name']}-{suffix}"
        if "subjects" in d:
            for s in d["subjects"]:
                if s["kind"] == "ServiceAccount":
                    s["namespace"] = namespace
            # the test's daemon authenticates as a static-token user instead of the ServiceAccount
            d["subjects"].append({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": DAEMON_USER})
        out.append(d)
    return out


@pytest.fixture
def daemon_rbac(kube_cluster, kube_admin, kube_namespace):
    suffix = uuid.uuid4().hex[:6]
    docs = rbac_docs(kube_namespace, suffix)
    assert {d["kind"] for d in docs} == {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        kube_admin.apply(d, d["metadata"].get("namespace"), field_manager="test-admin")
    yield docs
    for d in docs:
        if d["kind"].startswith("Cluster"):
            try:
                kube_admin.delete(d["apiVersion"], d["kind"], d["metadata"]["name"])
            except Exception:
                pass


def test_deploy_rbac_is_enough_and_no_more(
    kube_cluster, kube_admin, kube_namespace, other_namespace, daemon_rbac, tmp_path
):
    ns = kube_namespace
    token = KUBE_TOKENS[DAEMON_USER]
    kubeconfig = kube_cluster.kubeconfig_for_token(token, tmp_path / "daemon.kubeconfig", user=DAEMON_USER)
    me = KubeClient.from_kubeconfig(kubeconfig)
    # RBAC is read from an informer cache in the API server: allow it a moment
    wait_for(lambda: _can(lambda: me.list("apps/v1", "Deployment", ns)), 15, what="RBAC effective")

    ms = build(default_plan())
    f = tmp_path / "plan.json"
    default_plan().save(f)
    kube_admin.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "the-plan"},
            "data": {"plan.json": default_plan().model_dump_json()},
        },
        ns,
    )

    # enough: the daemon converges, reads its plan from a ConfigMap, watches, repairs drift, prunes,
    # writes its status ConfigMap and reads Nodes, all with this token only
    with running_daemon(daemon_config(f"configmap:{ns}/the-plan", ns, kubeconfig, interval=300.0)) as rd:
        wait_for(lambda: converged(kube_admin, ns, ms), 20, what="converged with the least-privilege token")
        w = ms.workloads[0]
        scale(kube_admin, ns, w.name, w.replicas + 2)
        wait_for(lambda: replicas(kube_admin, ns, w.name) == w.replicas, 10, what="drift repaired (watch allowed)")
        stale = next(d for d in ms.dicts() if d["kind"] == "Service")
        stale = copy.deepcopy(stale)
        stale["metadata"]["name"] = "stale-svc"
        kube_admin.apply(stale, ns, field_manager="old-synergai")
        # a dropped server group's ConfigMap (its server.json): prune deletes it too (`delete` on configmaps)
        stale_cm = copy.deepcopy(next(d for d in ms.dicts() if d["kind"] == "ConfigMap"))
        stale_cm["metadata"]["name"] = "stale-server-group"
        kube_admin.apply(stale_cm, ns, field_manager="old-synergai")
        assert ("ConfigMap", "stale-server-group") in managed(kube_admin, ns)
        kube_admin.delete("apps/v1", "Deployment", ms.workloads[1].name, ns)  # wakes the daemon
        wait_for(lambda: converged(kube_admin, ns, ms), 10, what="pruned and re-created")
        assert kube_admin.get("v1", "ConfigMap", "stale-server-group", ns) is None
        assert kube_admin.get("v1", "ConfigMap", "synergai-status", ns)["data"]["inSync"] == "true"
        st = json.loads(rd.get("/status")[1])
        assert st["lastError"] == "" and not rd.daemon._nodes_forbidden
        assert rd.metric("synergai_errors_total") == 0
        assert rd.metric("synergai_watch_restarts_total", reason="forbidden") == 0

    # no more: another namespace is off limits (403) and stays untouched
    with pytest.raises(ApplyError) as e:
        apply_objects(me, ms.dicts(), other_namespace)
    assert e.value.status == 403 and "forbidden" in str(e.value)
    with running_daemon(daemon_config(f"file:{f}", other_namespace, kubeconfig, interval=0.5)) as rd:
        wait_for(lambda: "forbidden" in json.loads(rd.get("/status")[1])["lastError"], 10, what="403 reported")
        assert rd.get("/readyz")[0] == 503
        assert rd.metric("synergai_errors_total", kind="forbidden") >= 1
    assert managed(kube_admin, other_namespace) == {}

    # and in its own namespace only what the Role lists
    for call in (
        lambda: me.list("v1", "Pod", ns),
        lambda: me.request("GET", f"/api/v1/namespaces/{ns}/secrets"),
        lambda: me.request(
            "PUT",
            f"/api/v1/namespaces/{ns}/configmaps/the-plan",
            body=kube_admin.get("v1", "ConfigMap", "the-plan", ns),
        ),
        lambda: me.request(
            "PUT",
            f"/apis/apps/v1/namespaces/{ns}/deployments/{ms.workloads[0].name}",
            body=kube_admin.get("apps/v1", "Deployment", ms.workloads[0].name, ns),
        ),
        lambda: me.request(
            "PATCH",
            "/api/v1/nodes/fake-node-1",
            body={"metadata": {"labels": {"x": "y"}}},
            content_type="application/merge-patch+json",
        ),
        lambda: me.list("rbac.authorization.k8s.io/v1", "Role", ns),
        lambda: me.list("apps/v1", "Deployment", other_namespace),
    ):
        with pytest.raises(KubeError) as e:
            call()
        assert e.value.status == 403
    me.list("v1", "Node")  # read-only Nodes through the ClusterRole
    me.close()


def _can(fn) -> bool:
    try:
        fn()
        return True
    except KubeError as e:
        if e.status == 403:
            return False
        raise
