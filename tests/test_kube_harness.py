"""Integration tests of the real local Kubernetes control plane (tests/kube_harness.py).

Needs the binaries from `bash .ci/build-kube.sh`; deselect with `-m "not kube"`.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import KUBE_TOKENS
from tests.kube_harness import FakeKubelet, KubeCluster  # noqa: F401

pytestmark = pytest.mark.kube

# the session cluster and fake kubelet come from tests/conftest.py
DAEMON_TOKEN = KUBE_TOKENS["synergai-daemon"]
READER_TOKEN = KUBE_TOKENS["ns-reader"]


def _ns_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _create_ns(core, name: str) -> None:
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "pause",
                            "image": "registry.k8s.io/pause:3.2",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def _deployment_status(apps, name: str, ns: str) -> dict:
    resp = apps.read_namespaced_deployment_status(name, ns, _preload_content=False)
    return json.loads(resp.data).get("status", {})


def _wait_ready_replicas(apps, name: str, ns: str, want: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = _deployment_status(apps, name, ns)
        if status.get("readyReplicas") == want and status.get("availableReplicas") == want:
            return status
        time.sleep(0.5)
    raise AssertionError(f"deployment {ns}/{name} not available after {timeout}s: {status}")


def test_cluster_basics(kube_cluster):
    from kubernetes import client

    assert kube_cluster.server.startswith("https://127.0.0.1:")
    with kube_cluster.api_client() as api:
        version = client.VersionApi(api).get_code(_preload_content=False)
        assert json.loads(version.data)["gitVersion"].startswith("v1.20.")
        # RBAC API is served (tests rely on it for least-privilege checks)
        groups = json.loads(client.ApisApi(api).get_api_versions(_preload_content=False).data)
        assert "rbac.authorization.k8s.io" in {g["name"] for g in groups["groups"]}


def test_deployment_becomes_available(kube_cluster, fake_kubelet):
    from kubernetes import client

    ns = _ns_name("deploy")
    with kube_cluster.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        _create_ns(core, ns)
        apps.create_namespaced_deployment(ns, _deployment("pause", 2))
        status = _wait_ready_replicas(apps, "pause", ns, 2, timeout=60)
        assert status["replicas"] == 2

        pods = json.loads(core.list_namespaced_pod(ns, _preload_content=False).data)["items"]
        assert len(pods) == 2
        assert {p["spec"]["nodeName"] for p in pods} == {"fake-node-1"}
        assert all(p["status"]["phase"] == "Running" for p in pods)

        node = json.loads(core.read_node("fake-node-1", _preload_content=False).data)
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == "amd64"
        assert node["metadata"]["labels"]["synergai.test/pool"] == "cpu"
        assert not node["spec"].get("taints")
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"

        # scale down: the fake kubelet must finish graceful pod deletion
        apps.patch_namespaced_deployment_scale("pause", ns, {"spec": {"replicas": 1}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pods = json.loads(core.list_namespaced_pod(ns, _preload_content=False).data)["items"]
            if len(pods) == 1:
                break
            time.sleep(0.5)
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]

        core.delete_namespace(ns)


def test_rbac_role_is_namespace_scoped(kube_cluster):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns_a, ns_b = _ns_name("rbac-a"), _ns_name("rbac-b")
    with kube_cluster.api_client() as admin:
        core = client.CoreV1Api(admin)
        rbac = client.RbacAuthorizationV1Api(admin)
        _create_ns(core, ns_a)
        _create_ns(core, ns_b)
        rbac.create_namespaced_role(
            ns_a,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            ns_a,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "ns-reader-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ns-reader"}],
            },
        )

    with kube_cluster.api_client(READER_TOKEN) as reader:
        rcore = client.CoreV1Api(reader)
        # The RBAC authorizer reads from an informer cache: allow a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                rcore.list_namespaced_pod(ns_a, _preload_content=False)
                break
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        with pytest.raises(ApiException) as err:
            rcore.list_namespaced_pod(ns_b, _preload_content=False)
        assert err.value.status == 403

        with pytest.raises(ApiException) as err:  # the Role doesn't grant writes
            rcore.create_namespaced_pod(
                ns_a,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "nope"},
                    "spec": {"containers": [{"name": "c", "image": "pause"}]},
                },
            )
        assert err.value.status == 403

    # a user with no bindings at all can't even list namespaces
    with kube_cluster.api_client(DAEMON_TOKEN) as daemon:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(daemon).list_namespace(_preload_content=False)
        assert err.value.status == 403


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_kubeconfig_for_token(kube_cluster, tmp_path):
    from kubernetes import client, config

    path = kube_cluster.kubeconfig_for_token(DAEMON_TOKEN, tmp_path / "daemon.kubeconfig")
    api = config.new_client_from_config(config_file=path)
    try:
        # authenticated as synergai-daemon: self-review of its own access works
        review = client.AuthorizationV1Api(api).create_self_subject_access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}},
            },
            _preload_content=False,
        )
        assert json.loads(review.data)["status"]["allowed"] is False
    finally:
        api.close()


def test_restart_apiserver_keeps_state(kube_cluster, fake_kubelet):
    from kubernetes import client

    ns = _ns_name("restart")
    with kube_cluster.api_client() as api:
        _create_ns(client.CoreV1Api(api), ns)
    old_pid = kube_cluster.apiserver_pid
    port = kube_cluster.apiserver_port
    t0 = time.monotonic()
    kube_cluster.restart_apiserver()
    restart_s = time.monotonic() - t0
    assert kube_cluster.apiserver_pid != old_pid
    assert kube_cluster.apiserver_port == port
    assert restart_s < 60
    with kube_cluster.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.read_namespace(ns, _preload_content=False)  # state in etcd survived
        # controller-manager and fake kubelet reconnect by themselves
        apps.create_namespaced_deployment(ns, _deployment("after-restart", 1))
        _wait_ready_replicas(apps, "after-restart", ns, 1, timeout=60)
