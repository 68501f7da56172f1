"""The gateway forwards a request for a Triton-served group to the name Triton serves the model under
(``manifests.triton_model_name``: the model's name, or a sanitised one when the name is not a safe folder
name), and to the model's own name on ``synergai serve`` groups.

Real processes on loopback: a plan whose ``bert`` is renamed ``BERT large`` (not a safe folder name);
every group hosting it runs on Triton, stood in for by ``synergai serve --plan-config server.json
--emulate-config`` (the group's ``server.json`` from ``manifests.build``: it serves each model under its
``runtime_name``, as Triton does); the gateway; ``tritonclient.http`` asks for ``BERT large``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serving_procs import Procs

tritonclient_http = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.timeout(180)

MODEL = "BERT large"


@pytest.fixture(scope="module")
def plan():
    from synergai import default_cluster, default_profiles, default_workload, plan_offline
    from synergai.models import Plan

    doc = plan_offline(default_profiles(), default_cluster(), default_workload(), time_limit=30).model_dump(mode="json")
    for sec in ("assignments", "demands", "candidates"):
        for x in doc.get(sec) or []:
            if x.get("model") == "bert":
                x["model"] = MODEL
    return Plan.model_validate(doc)


def test_gateway_forwards_to_the_triton_model_name(plan, tmp_path):
    from synergai.executor import manifests
    from synergai.executor.serve import group_assignments

    assert manifests.triton_model_name(MODEL) != MODEL
    ms = manifests.build(plan)
    groups = sorted(
        g for g, a in group_assignments(plan).items() if any(x.model == MODEL and x.replicas > 0 for x in a)
    )
    assert groups and all(ms.server_for(g).runtime == manifests.RUNTIME_TRITON for g in groups)
    plan_file = tmp_path / "plan.json"
    plan.save(plan_file)
    cms = {d["metadata"]["name"]: d for d in ms.dicts() if d["kind"] == "ConfigMap"}
    with Procs() as ps:
        eps = {}
        for k, g in enumerate(groups):
            doc = json.loads(cms[ms.server_for(g).configmap]["data"][manifests.SERVER_CONFIG_KEY])
            assert {m["runtime_name"] for m in doc["models"] if m["model"] == MODEL} == {
                manifests.triton_model_name(MODEL)
            }
            f = tmp_path / f"server-{k}.json"
            f.write_text(json.dumps(doc))
            srv = ps.serve(["--plan-config", str(f), "--emulate-config"], host=f"127.0.0.{51 + k}")
            eps[g] = [srv.url]
        ep_file = tmp_path / "endpoints.json"
        ep_file.write_text(json.dumps(eps))
        gw = ps.gateway(["--plan", str(plan_file), "--endpoints", str(ep_file)], host="127.0.0.50")
        c = tritonclient_http.InferenceServerClient(
            gw.url.removeprefix("http://"), connection_timeout=10, network_timeout=10
        )
        assert c.get_model_metadata(MODEL)["inputs"][0]["name"] == "INPUT0"  # metadata: proxied under its name
        seen = set()
        for n in range(12):
            x = np.full((1, 16), n, dtype=np.float32)
            i = tritonclient_http.InferInput("INPUT0", [1, 16], "FP32")
            i.set_data_from_numpy(x)
            r = c.infer(MODEL, [i], headers={"X-Deadline-Ms": "5000"})
            np.testing.assert_allclose(r.as_numpy("OUTPUT0"), x.sum(axis=1, keepdims=True))
            seen.add(r.get_response()["model_name"])
        assert seen == {manifests.triton_model_name(MODEL)}  # the server that answered knows it by that name
        # other models of those groups keep their names (safe folder names: unchanged)
        others = {x.model for g in groups for x in plan.assignments_of(g) if x.model != MODEL}
        for m in sorted(others):
            i = tritonclient_http.InferInput("INPUT0", [1, 16], "FP32")
            i.set_data_from_numpy(np.ones((1, 16), dtype=np.float32))
            assert c.infer(m, [i], headers={"X-Deadline-Ms": "5000"}).as_numpy("OUTPUT0")[0, 0] == 16.0
