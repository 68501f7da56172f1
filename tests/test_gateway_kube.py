"""The request path on a real Kubernetes 1.20 API server.

A plan is applied; the test kubelet (``tests/kube_harness.FakeKubelet`` with a :class:`LocalServeRuntime`)
starts each pod as a local ``synergai serve --plan P --server GROUP`` process (emulated service times from
the plan's configurations) on its own loopback address, reported as the pod IP and Ready once the process
answers ``/v2/health/ready``; the real EndpointSlice controller publishes the ready pods (the Endpoints
controller cannot: Endpoints validation refuses loopback addresses); ``synergai gateway --kube-namespace``
discovers them by watching EndpointSlices and serves V2 requests sent with ``tritonclient.http``. Scaling a
Deployment adds a server while a bounded stream of requests flows, without a failed request.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.serving_procs import Procs, http_get

tritonclient_http = pytest.importorskip("tritonclient.http")

pytestmark = [pytest.mark.kube, pytest.mark.timeout(240)]


def small_plan(path):
    """Two dedicated server groups of one pool (one replica each): efficientnet-lite0 and mobilenet-v2."""
    from synergai import default_cluster, default_profiles, plan_offline
    from synergai.models import WorkloadSpec
    from synergai.planner import PlanOptions

    cl = default_cluster()
    cl = cl.model_copy(update={"pools": [p for p in cl.pools if p.name == "cloud-x86"]})
    wl = WorkloadSpec.model_validate(
        {
            "name": "kube-e2e",
            "models": [
                {"model": "efficientnet-lite0", "rate_rps": 40, "deadline_ms": 300},
                {"model": "mobilenet-v2", "rate_rps": 60, "deadline_ms": 200},
            ],
        }
    )
    plan = plan_offline(default_profiles(), cl, wl, options=PlanOptions(shared_servers=False), time_limit=20)
    assert not plan.unserved and len(plan.server_groups()) == 2, plan.server_groups()
    plan.save(path)
    return plan


def slice_urls(kube, ns) -> dict[str, list[str]]:
    """Service -> ready addresses in its EndpointSlices (what the controller published)."""
    from synergai.executor.gateway import endpoint_urls

    items, _ = kube.list("discovery.k8s.io/v1beta1", "EndpointSlice", ns)
    out: dict[str, list[str]] = {}
    for it in items:
        svc, urls = endpoint_urls("EndpointSlice", it)
        out.setdefault(svc, []).extend(urls)
    return out


def infer(c, model, rows=1):
    x = np.random.default_rng().random((rows, 16), dtype=np.float32)
    i = tritonclient_http.InferInput("INPUT0", [rows, 16], "FP32")
    i.set_data_from_numpy(x, binary_data=True)
    r = c.infer(model, [i], headers={"X-Deadline-Ms": "1000"})
    np.testing.assert_allclose(r.as_numpy("OUTPUT0").ravel(), x.sum(axis=1), rtol=1e-5)


def test_gateway_discovers_pods_on_kubernetes_and_scales_without_a_failed_request(
    kube_cluster, kube_admin, kube_namespace, local_pods, tmp_path
):
    from synergai.executor.apply import apply_objects
    from synergai.executor.gateway_objects import service_names
    from synergai.executor.manifests import build
    from synergai.executor.serve import group_assignments

    ns = kube_namespace
    t_start = time.monotonic()
    plan_path = tmp_path / "plan.json"
    plan = small_plan(plan_path)
    ms = build(plan)
    svc_of = service_names(plan)  # group -> Service
    group_of_model = {a.model: g for g, assigns in group_assignments(plan).items() for a in assigns}
    kubelet = local_pods(plan_path)
    apply_objects(kube_admin, ms.dicts(), ns)

    # the kubelet runs one process per pod on its own loopback IP; the EndpointSlice controller publishes them
    want = {svc_of[g]: 1 for g in svc_of}
    wait_for(
        lambda: {s: len(u) for s, u in slice_urls(kube_admin, ns).items() if s in want} == want,
        90,
        interval=0.3,
        what="one ready address per server Service in the EndpointSlices",
    )
    urls = slice_urls(kube_admin, ns)
    pods, _ = kube_admin.list("v1", "Pod", ns)
    ips = {p["status"]["podIP"] for p in pods}
    assert all(ip.startswith("127.") for ip in ips) and len(ips) == len(pods) == 2, ips
    assert {u.split("//")[1].rsplit(":", 1)[0] for s in want for u in urls[s]} == ips
    for s in want:  # the published address is the pod's real server
        assert http_get(urls[s][0] + "/v2/health/ready")[0] == 200

    with Procs() as ps:
        gw = ps.gateway(
            [
                "--plan",
                str(plan_path),
                "--kube-namespace",
                ns,
                "--kubeconfig",
                kube_cluster.kubeconfig_path,
                "--reload-interval",
                "0.5",
            ]
        )

        def gw_endpoints():
            code, body = http_get(gw.url + "/v1/status")
            return json.loads(body)["endpoints"] if code == 200 else {}

        wait_for(
            lambda: sum(len(v) for v in gw_endpoints().values()) == 2,
            30,
            interval=0.2,
            what="the gateway discovered both servers",
        )
        c = tritonclient_http.InferenceServerClient(
            gw.url.removeprefix("http://"), connection_timeout=10, network_timeout=10
        )
        for model in group_of_model:
            for _ in range(5):
                infer(c, model)
        # decisions follow the plan's groups: each model answered by its group's pool/server
        for model, grp in group_of_model.items():
            body = json.dumps(
                {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}
            ).encode()
            req = urllib.request.Request(
                f"{gw.url}/v2/models/{model}/infer",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.headers["X-Synergai-Server"] == grp, (model, r.headers["X-Synergai-Server"])
                assert r.headers["X-Synergai-Endpoint"] in urls[svc_of[grp]]
                assert json.loads(r.read())["outputs"][0]["data"] == [16.0]
        assert set(group_assignments(plan)) == set(group_of_model.values())

        # scale one Deployment 1 -> 2 while a bounded stream of requests flows: no request fails
        model = sorted(group_of_model)[0]
        grp = group_of_model[model]
        dep = ms.server_for(grp).name
        results = {"ok": 0, "errors": []}
        stop = threading.Event()

        def stream():
            cl = tritonclient_http.InferenceServerClient(
                gw.url.removeprefix("http://"), connection_timeout=10, network_timeout=10
            )
            end = time.monotonic() + 60
            for n in range(3000):  # bounded in count and time
                if stop.is_set() or time.monotonic() > end:
                    break
                try:
                    infer(cl, model if n % 2 == 0 else sorted(group_of_model)[1])
                    results["ok"] += 1
                except Exception as e:  # noqa: BLE001 - every failure is recorded and fails the test
                    results["errors"].append(repr(e)[:200])
                time.sleep(0.02)

        th = threading.Thread(target=stream, daemon=True)
        th.start()
        try:
            time.sleep(1.0)
            before = results["ok"]
            kube_admin.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{ns}/deployments/{dep}/scale",
                [("fieldManager", "kubectl")],
                body={"spec": {"replicas": 2}},
                content_type="application/merge-patch+json",
            )
            wait_for(
                lambda: len(gw_endpoints().get(grp, [])) == 2, 60, interval=0.2, what="the gateway added the new server"
            )
            new = [u for u in gw_endpoints()[grp] if u not in urls[svc_of[grp]]]
            assert len(new) == 1, (gw_endpoints(), urls)

            def new_served():
                code, text = http_get(new[0] + "/metrics")
                return code == 200 and any(
                    line.startswith("synergai_serve_requests_total")
                    and 'code="200"' in line
                    and float(line.split()[-1]) >= 3
                    for line in text.decode().splitlines()
                )

            wait_for(new_served, 30, interval=0.3, what="the new server answered requests")
        finally:
            stop.set()
            th.join(30)
        assert not th.is_alive()
        assert results["errors"] == [], results["errors"][:5]
        assert results["ok"] > before + 10, results
        assert len(kubelet.runtime.alive()) == 3
        code, text = http_get(gw.url + "/metrics")
        assert code == 200
        for line in text.decode().splitlines():
            if line.startswith("synergai_gateway_requests_total") and 'code="5' in line:
                assert float(line.split()[-1]) == 0, line
    assert time.monotonic() - t_start < 150
