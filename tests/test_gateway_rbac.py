"""The gateway's Role (``executor.gateway_objects``) on a real Kubernetes 1.20 API server: its
ServiceAccount may read what server discovery reads (EndpointSlices of ``discovery.k8s.io`` -- v1beta1
on 1.20 -- and core Endpoints, Services) and its plan ConfigMap, and nothing more.

The objects are applied as ``gateway_objects`` makes them; requests go through the project's REST layer
(``executor.kube.KubeClient``, the gateway's discovery calls: list + watch with the Service-name label
selector) as the ServiceAccount (impersonated by the admin)."""

from __future__ import annotations

import pytest

from synergai.executor.kube import KubeClient, KubeError
from tests.conftest import wait_for
from tests.test_manifests import default_plan

pytestmark = pytest.mark.kube

SLICES = "discovery.k8s.io/v1beta1"  # what a 1.20 server serves


class AsServiceAccount(KubeClient):
    """A KubeClient that impersonates ``user`` on every call."""

    def __init__(self, configuration, user: str, **kw):
        super().__init__(configuration, **kw)
        self.user = user

    @property
    def api(self):
        c = super().api
        c.set_default_header("Impersonate-User", self.user)
        return c


def _status(fn) -> int:
    try:
        fn()
        return 200
    except KubeError as e:
        return e.status


def test_gateway_role_reads_endpointslices_endpoints_and_its_plan_only(kube_cluster, kube_admin, kube_namespace):
    from synergai.executor.gateway import SLICE_SERVICE_LABEL
    from synergai.executor.gateway_objects import GATEWAY_NAME, gateway_objects, plan_configmap

    ns = kube_namespace
    plan = default_plan()
    cm = "gw-plan"
    objs = gateway_objects(plan, namespace=ns, plan_configmap=cm)
    for o in objs:
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            kube_admin.apply(o, ns, field_manager="test-admin")
    kube_admin.apply(plan_configmap(plan, cm, ns), ns, field_manager="test-admin")
    kube_admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-the-plan"}}, ns)

    gw = AsServiceAccount(kube_admin.configuration, f"system:serviceaccount:{ns}:{GATEWAY_NAME}")
    try:
        # RBAC is read from an informer cache in the API server: allow it a moment
        wait_for(lambda: _status(lambda: gw.list("v1", "Service", ns)) == 200, 15, what="RBAC effective")
        # discovery: list + watch EndpointSlices (label selector as the gateway uses it) and Endpoints
        items, rv = gw.list(SLICES, "EndpointSlice", ns, label_selector=SLICE_SERVICE_LABEL)
        assert isinstance(items, list) and rv
        for _ in gw.watch(SLICES, "EndpointSlice", ns, rv, label_selector=SLICE_SERVICE_LABEL, timeout_seconds=1):
            pass  # allowed: the watch runs until the server closes it
        items, rv = gw.list("v1", "Endpoints", ns)
        for _ in gw.watch("v1", "Endpoints", ns, rv, timeout_seconds=1):
            pass
        assert gw.get("v1", "ConfigMap", cm, ns)["data"]["plan.json"]
        # and no more: writes, other ConfigMaps, Secrets, Pods, other namespaces
        for call in (
            lambda: gw.delete(SLICES, "EndpointSlice", "x", ns),
            lambda: gw.create(
                {
                    "apiVersion": SLICES,
                    "kind": "EndpointSlice",
                    "metadata": {"name": "x"},
                    "addressType": "IPv4",
                    "endpoints": [],
                },
                ns,
            ),
            lambda: gw.get("v1", "ConfigMap", "not-the-plan", ns),
            lambda: gw.list("v1", "ConfigMap", ns),
            lambda: gw.request("GET", f"/api/v1/namespaces/{ns}/secrets"),
            lambda: gw.list("v1", "Pod", ns),
            lambda: gw.list(SLICES, "EndpointSlice", "default"),
        ):
            assert _status(call) == 403
    finally:
        gw.close()
