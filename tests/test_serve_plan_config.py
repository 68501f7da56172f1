"""``synergai serve --plan-config``: the ``server.json`` that ``executor.manifests.build`` mounts into every
``synergai serve`` pod, served by a real process on a loopback address.

The documents come from ``manifests.build`` of real plans (nothing hand-written): a shared CPU group (a
small custom cluster with one Graviton pool and three small models) and a dedicated CPU group of the
default plan. Emulated (``--emulate-config`` / ``$SYNERGAI_SERVE_EMULATE``) and real (ONNX Runtime from
``$SYNERGAI_MODEL_STORE/<file>``); every hosted model answers V2 requests with the group's batching.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.serving_procs import Procs, http_get

tritonclient_http = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.timeout(180)


def _server_json(plan, want_shared: bool) -> dict:
    """server.json (as mounted) of the first synergai-serve group of ``plan`` that is (not) shared."""
    from synergai.executor import manifests

    ms = manifests.build(plan)
    srv = next(
        s for s in ms.servers if s.runtime == manifests.RUNTIME_SERVE and s.shared == want_shared and s.replicas > 0
    )
    cm = next(d for d in ms.dicts() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == srv.configmap)
    return json.loads(cm["data"][manifests.SERVER_CONFIG_KEY])


@pytest.fixture(scope="module")
def shared_doc():
    from synergai import default_cluster, default_profiles, default_workload, plan_offline
    from synergai.models import ModelDemand

    c = default_cluster()
    cluster = c.model_copy(update={"pools": [p for p in c.pools if p.name == "cloud-graviton"]})
    work = default_workload().model_copy(
        update={
            "models": [
                ModelDemand(model=m, rate_rps=2.0, deadline_ms=500.0)
                for m in ("mobilenet-v1", "mobilenet-v2", "efficientnet-lite0")
            ]
        }
    )
    doc = _server_json(plan_offline(default_profiles(), cluster, work, time_limit=20), want_shared=True)
    assert doc["shared"] and len(doc["models"]) >= 2, doc
    return doc


@pytest.fixture(scope="module")
def default_plan():
    from synergai import default_cluster, default_profiles, default_workload, plan_offline

    return plan_offline(default_profiles(), default_cluster(), default_workload(), time_limit=30)


@pytest.fixture(scope="module")
def dedicated_doc(default_plan):
    doc = _server_json(default_plan, want_shared=False)
    assert not doc["shared"] and len(doc["models"]) == 1, doc
    return doc


def _client(proc):
    return tritonclient_http.InferenceServerClient(
        proc.url.removeprefix("http://"), connection_timeout=10, network_timeout=10
    )


def _check_emulated(proc, doc):
    c = _client(proc)
    assert c.is_server_ready()
    for m in doc["models"]:
        name = m["runtime_name"]
        meta = c.get_model_metadata(name)
        p = meta["parameters"]
        assert meta["platform"] == "synergai_emulated"
        assert p["max_batch_size"] == m["batch_size"] and p["slots"] == m["slots"]
        assert p["max_queue_delay_ms"] == pytest.approx(m["batch_wait_ms"], abs=1e-3)
        assert p["shared"] is doc["shared"]
        assert p["emulates"].endswith(m["config_id"])
        rows = min(2, m["batch_size"])
        x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
        i = tritonclient_http.InferInput("INPUT0", [rows, 16], "FP32")
        i.set_data_from_numpy(x)
        r = c.infer(name, [i])
        np.testing.assert_allclose(r.as_numpy("OUTPUT0"), x.sum(axis=1, keepdims=True))
    # exactly the group's models
    code, _ = http_get(f"{proc.url}/v2/models/not-{doc['models'][0]['runtime_name']}")
    assert code == 404


def test_shared_group_emulated_from_server_json(shared_doc, tmp_path):
    f = tmp_path / "server.json"
    f.write_text(json.dumps(shared_doc))
    with Procs() as ps:
        proc = ps.serve(["--plan-config", str(f), "--emulate-config"], host="127.0.0.41")
        _check_emulated(proc, shared_doc)


def test_dedicated_group_from_the_environment(dedicated_doc, tmp_path):
    """As in a pod: no flag, $SYNERGAI_SERVER_CONFIG names the file; emulation from $SYNERGAI_SERVE_EMULATE."""
    f = tmp_path / "server.json"
    f.write_text(json.dumps(dedicated_doc))
    env = {"SYNERGAI_SERVER_CONFIG": str(f), "SYNERGAI_SERVE_EMULATE": "1"}
    with Procs() as ps:
        proc = ps.serve([], host="127.0.0.42", env=env)
        _check_emulated(proc, dedicated_doc)


def test_shared_group_real_onnx_from_the_model_store(shared_doc, tmp_path):
    """Real mode: ONNX Runtime loads ``$SYNERGAI_MODEL_STORE/<file>`` of every model, with the group's
    batch size, batch wait, slots and threads."""
    from synergai.profiling_data.profiler import zoo

    src = zoo.build(zoo.resolve("mobilenet-tiny"))
    store = tmp_path / "store"
    for m in shared_doc["models"]:
        dst = store / m["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    f = tmp_path / "server.json"
    f.write_text(json.dumps(shared_doc))
    with Procs() as ps:
        proc = ps.serve(["--plan-config", str(f)], host="127.0.0.43", env={"SYNERGAI_MODEL_STORE": str(store)})
        c = _client(proc)
        for m in shared_doc["models"]:
            meta = c.get_model_metadata(m["runtime_name"])
            p = meta["parameters"]
            assert meta["platform"] == "onnxruntime_onnx" and p["shared"] is True
            assert p["max_batch_size"] == m["batch_size"] and p["slots"] == m["slots"]
            assert p["threads"] == (m["threads"] or 1)
            inp = meta["inputs"][0]
            shape = [1] + [d for d in inp["shape"][1:]]
            i = tritonclient_http.InferInput(inp["name"], shape, inp["datatype"])
            i.set_data_from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))
            out = c.infer(m["runtime_name"], [i]).as_numpy(meta["outputs"][0]["name"])
            assert out.shape == (1, 10)  # mobilenet-tiny: 10 classes


def test_bad_server_configs_are_one_line_input_errors(shared_doc, default_plan, tmp_path, capsys):
    from synergai.executor import manifests
    from synergai.executor.serving_cli import main

    f = tmp_path / "server.json"
    f.write_text(json.dumps(shared_doc))
    # real mode without the files
    assert main(["serve", "--plan-config", str(f), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no model file" in err and shared_doc["models"][0]["file"] in err
    # a Triton group is not for synergai serve (unless emulated)
    ms = manifests.build(default_plan)
    tri = next(s for s in ms.servers if s.runtime == manifests.RUNTIME_TRITON)
    cm = next(d for d in ms.dicts() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == tri.configmap)
    f.write_text(cm["data"]["server.json"])
    assert main(["serve", "--plan-config", str(f), "--port", "0"]) == 2
    assert "emulate-config" in capsys.readouterr().err
    # not a server.json
    f.write_text(json.dumps({"schema_version": "x"}))
    assert main(["serve", "--plan-config", str(f), "--port", "0"]) == 2
    assert "schema_version" in capsys.readouterr().err
    # --plan-config serves a whole group: no other source beside it
    assert main(["serve", "--plan-config", str(f), "--onnx", "m", "--port", "0"]) == 2
    assert "not with" in capsys.readouterr().err
