"""Offline: Kubernetes objects from plans (shape, hardening, names) and strict schema validation."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import pytest
import yaml

from synergai.cli import main as cli_main
from synergai.executor.images import ImageMap
from synergai.executor.manifests import (
    ANN_PLAN_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    MANAGER,
    build,
    cpu_quantity,
    memory_quantity,
)
from synergai.executor.names import is_dns1035_label, label_value_error
from synergai.executor.validate import ManifestInvalid, schema_version, validate, validate_all, validate_fields_1_20
from synergai.models import InputError, Plan

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ plans


@cache
def default_plan() -> Plan:
    import synergai.profiling_data as pdd
    from synergai.planner import plan_offline

    return plan_offline(pdd.default_profiles(), pdd.default_cluster(), pdd.default_workload())


@cache
def random_plan(seed: int) -> Plan:
    from synergai.planner import plan_offline
    from synergai.planner.synthetic import random_instance

    t, c, w = random_instance(seed, 4, 3, 4, power_modes=1 + seed % 3)
    return plan_offline(t, c, w)


def scenario_plans() -> list:
    """(name, plan) for every bundled scenario: its cluster and model mix at a moderate rate."""
    try:
        from synergai.experiments.scenarios import builtin_scenarios
    except ImportError:  # scenarios not in this checkout
        return []
    return [pytest.param(name, path, id=f"scenario-{name}") for name, path in builtin_scenarios().items()]


HOSTILE_MODELS = ["ResNet.50/v1", "resnet.50/v1", "模型-ü", "m" * 200, "9-lives", "UPPER.Case_Name", ".."]
HOSTILE_POOLS = ["Edge.Orin/AGX", "edge.orin/agx", "クラウド", "p" * 300, "0-pool", "a b c", "_"]


def renamed(plan: Plan, models: dict, pools: dict, keep_labels: bool = False) -> Plan:
    d = plan.model_dump(mode="json")
    for p in d["pools"]:
        p["name"] = pools.get(p["name"], p["name"])
        if not keep_labels:
            p["labels"] = {}
    for sec in ("assignments", "candidates", "unserved", "demands"):
        for x in d[sec]:
            x["model"] = models.get(x["model"], x["model"])
            if "pool" in x:
                x["pool"] = pools.get(x["pool"], x["pool"])
    for g in d["servers"]:
        g["pool"] = pools.get(g["pool"], g["pool"])
        g["models"] = [models.get(m, m) for m in g["models"]]
    return Plan.model_validate(d)


def hostile_plan(seed: int = 1) -> Plan:
    from synergai.planner import plan_offline
    from synergai.planner.synthetic import random_instance

    t, c, w = random_instance(seed, 5, 5, 3)
    p = plan_offline(t, c, w)
    models = {f"m{i}": HOSTILE_MODELS[i] for i in range(5)}
    pools = {f"pool{i}": HOSTILE_POOLS[i] for i in range(5)}
    return renamed(p, models, pools)


def deployments(docs):
    return [d for d in docs if d["kind"] == "Deployment"]


def services(docs):
    return [d for d in docs if d["kind"] == "Service"]


# ------------------------------------------------------------------------------------------ shape


def configmaps(docs):
    return [d for d in docs if d["kind"] == "ConfigMap"]


def server_config_of(docs, dep) -> dict:
    cm = next(c for c in configmaps(docs) if c["metadata"]["name"] == dep["metadata"]["name"])
    return json.loads(cm["data"]["server.json"])


def test_default_plan_has_a_shared_group():
    """The fixture the shape tests rely on: the default plan shares one Jetson AGX Orin between two models."""
    shared = [g for g in default_plan().server_groups() if g.shared]
    assert shared and all(len(g.models) >= 2 for g in shared)


def test_default_plan_objects():
    from synergai.planner.service import ServiceModel, batch_wait_ms

    plan = default_plan()
    ms = build(plan)
    docs = ms.dicts()
    groups = [g for g in plan.server_groups() if g.replicas > 0]
    models = {a.model for a in plan.assignments if a.replicas > 0}
    # one Deployment, one Service and one ConfigMap per server group (same name) + one Service per model
    assert len(deployments(docs)) == len(groups) == len(ms.servers)
    assert len(configmaps(docs)) == len(groups)
    assert len(services(docs)) == len(groups) + len(models)
    dep_names = {d["metadata"]["name"] for d in deployments(docs)}
    assert dep_names <= {s["metadata"]["name"] for s in services(docs)}
    assert dep_names == {c["metadata"]["name"] for c in configmaps(docs)}
    assert set(ms.model_services) == models
    pools = {p.name: p for p in plan.pools}
    by_group = {g.name: g for g in groups}
    seen_groups = set()
    for d in deployments(docs):
        md, spec = d["metadata"], d["spec"]
        ann = md["annotations"]
        g = by_group[ann["synergai.io/server-group"]]
        seen_groups.add(g.name)
        assigns = plan.assignments_of(g.name)
        pool = pools[g.pool]
        assert md["labels"][LABEL_MANAGED_BY] == MANAGER
        assert md["labels"]["synergai.io/server"] == g.name
        assert md["labels"]["synergai.io/shared"] == ("true" if g.shared else "false")
        assert md["labels"][LABEL_POOL] == g.pool
        assert json.loads(ann["synergai.io/models"]) == sorted(a.model for a in assigns)
        assert ann[ANN_PLAN_ID] == plan.plan_id
        assert spec["replicas"] == g.replicas
        sel = spec["selector"]["matchLabels"]
        tmpl = spec["template"]
        assert all(tmpl["metadata"]["labels"][k] == v for k, v in sel.items())
        assert ANN_PLAN_ID not in (tmpl["metadata"].get("annotations") or {}), "plan id in the pod template rolls pods"
        pod = tmpl["spec"]
        assert pod["nodeSelector"]["kubernetes.io/arch"] == pool.architecture
        for k, v in pool.labels.items():
            assert pod["nodeSelector"][k] == v
        (c,) = pod["containers"]
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["SYNERGAI_SERVER_CONFIG"] == "/etc/synergai/server.json"
        if len(assigns) == 1:  # dedicated: the configuration in the environment too
            a = assigns[0]
            assert env["MODEL"] == a.model and env["ENGINE"] == a.config.engine
            assert env["PRECISION"] == a.config.precision and env["BATCH_SIZE"] == str(a.config.batch_size)
            assert env["POWER_MODE"] == a.config.power_mode
            assert env["THREADS"] == ("auto" if a.config.threads is None else str(a.config.threads))
        else:
            assert "MODEL" not in env
        # the runtime: Triton when any hosted configuration is on a GPU engine, else synergai serve
        triton = any(a.config.engine in ("tensorrt", "pytorch") for a in assigns)
        assert ann["synergai.io/runtime"] == ("triton" if triton else "synergai-serve")
        if triton:
            assert "tritonserver" in c["image"] and c["args"][0] == "tritonserver"
        else:
            assert c["image"].startswith("synergai/serve:")
            assert c["args"][:3] == ["serve", "--plan-config", "/etc/synergai/server.json"]
        # resources from the group
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert req["cpu"] == cpu_quantity(g.cpu_cores)
        assert req["memory"] == memory_quantity(g.memory_mb) == lim["memory"]
        if g.accelerators:
            assert req[pool.accelerator_resource] == lim[pool.accelerator_resource] == str(g.accelerators)
            assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0
        else:
            assert not any("/" in k for k in req)
        # the server configuration: every hosted model with its configuration, mounted at /etc/synergai
        conf = server_config_of(docs, d)
        assert conf["server"] == g.name and conf["shared"] == g.shared and conf["pool"] == g.pool
        want = {a.model: a.config for a in assigns}
        assert sorted(m["model"] for m in conf["models"]) == sorted(want) == sorted(g.models)
        for m in conf["models"]:
            cfg = want[m["model"]]
            assert (m["engine"], m["precision"], m["batch_size"], m["threads"], m["config_id"]) == (
                cfg.engine,
                cfg.precision,
                cfg.batch_size,
                cfg.threads,
                cfg.config_id,
            )
            assert m["batch_wait_ms"] == pytest.approx(batch_wait_ms(cfg), abs=1e-6)
            assert m["slots"] == ServiceModel.of(cfg).slots
        mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
        assert mounts["/etc/synergai"]["name"] == "server-config" and mounts["/etc/synergai"]["readOnly"]
        vol = next(v for v in pod["volumes"] if v["name"] == "server-config")
        assert vol["configMap"]["name"] == md["name"]
        if triton:  # Triton's repository: config.pbtxt from the ConfigMap, the version directory from the store
            for m in conf["models"]:
                cp = mounts[f"/models/{m['runtime_name']}/config.pbtxt"]
                assert cp["name"] == "server-config" and cp["subPath"] == f"{m['runtime_name']}.config.pbtxt"
                assert mounts[f"/models/{m['runtime_name']}/1"]["subPath"] == f"{m['model']}/1"
        # a changed configuration changes the pod template (subPath mounts never see ConfigMap updates)
        assert tmpl["metadata"]["annotations"]["synergai.io/config-hash"]
        # hardened
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
        assert sc.get("privileged") is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        # false is the default, which the API server drops: never written (a re-apply would report a change)
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert pod["automountServiceAccountToken"] is False
        assert c["readinessProbe"] and c["livenessProbe"] and c["startupProbe"]
        assert pod["terminationGracePeriodSeconds"] > 0
    assert seen_groups == set(by_group), "standby groups are deployed too"
    assert any(g.standby for g in groups)
    for s in services(docs):
        sel = s["spec"]["selector"]
        assert sel[LABEL_MANAGED_BY] == MANAGER
        assert s["spec"]["ports"][0]["targetPort"] == "http"
        if LABEL_INSTANCE in sel:  # per-group Service selects exactly its Deployment's pods
            dep = next(d for d in deployments(docs) if d["metadata"]["name"] == s["metadata"]["name"])
            assert sel == dep["spec"]["selector"]["matchLabels"]
        else:  # per-model Service: the pods of every group that hosts the model (shared ones included)
            model = s["metadata"]["annotations"]["synergai.io/model"]
            mine = [
                d for d in deployments(docs) if model in json.loads(d["metadata"]["annotations"]["synergai.io/models"])
            ]
            hosts = [
                d
                for d in deployments(docs)
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
            ]
            assert mine and hosts == mine


def test_shared_group_is_one_triton_deployment_with_both_models():
    from synergai.executor.gateway_objects import service_names, triton_configmaps

    plan = default_plan()
    ms = build(plan)
    docs = ms.dicts()
    (g,) = [g for g in plan.server_groups() if g.shared]
    srv = ms.server_for(g.name)
    assert srv.shared and srv.runtime == "triton" and sorted(srv.models) == sorted(g.models)
    dep = next(d for d in deployments(docs) if d["metadata"]["name"] == srv.name)
    assert dep["spec"]["replicas"] == g.replicas
    conf = server_config_of(docs, dep)
    assert {m["model"] for m in conf["models"]} == set(g.models)
    cm = next(c for c in configmaps(docs) if c["metadata"]["name"] == srv.name)
    for m in conf["models"]:
        text = cm["data"][f"{m['runtime_name']}.config.pbtxt"]
        # accelerator engines run on the GPU, CPU engines (a mixed group) on Triton's CPU instances
        kind = "KIND_GPU" if m["config"]["accelerators"] > 0 else "KIND_CPU"
        assert f'name: "{m["runtime_name"]}"' in text and kind in text
    # the routing view: every hosted model maps to the group's one Deployment and Service
    assert {w.model for w in ms.workloads if w.server == g.name} == set(g.models)
    assert {w.name for w in ms.workloads if w.server == g.name} == {srv.name}
    # the gateway watches one Service per group, the one build() made (shared groups included)
    names = service_names(plan)
    assert names == {s.server: s.service for s in ms.servers}
    # triton_configmaps gives the same config.pbtxt files as the ConfigMap build() mounts
    tcm = {c["metadata"]["name"]: c["data"] for c in triton_configmaps(plan)}
    assert all(cm["data"][k] == v for k, v in tcm[srv.name].items())


def test_mixed_group_runs_triton_and_serves_the_cpu_model_on_its_cpu_backend():
    d = default_plan().model_dump(mode="json")
    shared = next(s for s in d["servers"] if s["shared"])
    a = next(x for x in d["assignments"] if x["server"] == shared["name"])
    a["config"].update(
        engine="onnxruntime",
        accelerator="none",
        accelerators=0,
        threads=4,
        config_id="onnxruntime/fp32/b4/t4/default",
        batch_size=4,
    )
    p = Plan.model_validate(d)
    ms = build(p)
    docs = ms.dicts()
    validate_all(docs)
    srv = ms.server_for(shared["name"])
    assert srv.runtime == "triton"
    cm = next(c for c in configmaps(docs) if c["metadata"]["name"] == srv.name)
    text = cm["data"][f"{a['model']}.config.pbtxt"]
    assert 'platform: "onnxruntime_onnx"' in text and "KIND_CPU" in text and "max_batch_size: 4" in text
    assert "max_queue_delay_microseconds" in text and 'intra_op_thread_count" value: { string_value: "4"' in text


def test_standby_group_is_deployed():
    plan = default_plan()
    ms = build(plan)
    standby = [g for g in plan.server_groups() if g.standby and g.replicas > 0]
    assert standby
    for g in standby:
        dep = next(d for d in deployments(ms.dicts()) if d["metadata"]["name"] == ms.server_for(g.name).name)
        assert dep["spec"]["replicas"] == g.replicas


def test_a_changed_configuration_rolls_the_pods_and_a_new_plan_id_does_not():
    plan = default_plan()
    a = build(plan).dicts()
    d = plan.model_dump(mode="json")
    shared = next(s for s in d["servers"] if s["shared"])
    x = next(x for x in d["assignments"] if x["server"] == shared["name"])
    x["config"]["batch_size"] = 8
    x["routed_rate_rps"] *= 0.5  # rates are not part of the server configuration
    b = build(Plan.model_validate(d)).dicts()
    ha = {
        dd["metadata"]["name"]: dd["spec"]["template"]["metadata"]["annotations"]["synergai.io/config-hash"]
        for dd in deployments(a)
    }
    hb = {
        dd["metadata"]["name"]: dd["spec"]["template"]["metadata"]["annotations"]["synergai.io/config-hash"]
        for dd in deployments(b)
    }
    changed = {n for n in ha if ha[n] != hb[n]}
    assert len(changed) == 1 and changed <= {
        dd["metadata"]["name"]
        for dd in deployments(a)
        if dd["metadata"]["annotations"]["synergai.io/server-group"] == shared["name"]
    }


def test_groups_that_need_different_images_are_an_input_error():
    d = default_plan().model_dump(mode="json")
    shared = next(s for s in d["servers"] if s["shared"])
    a = next(x for x in d["assignments"] if x["server"] == shared["name"])
    a["config"]["engine"] = "pytorch"
    f = Path(__file__).parent  # noqa: F841
    imap = ImageMap.load(_image_map_with(pytorch="my/pytorch:1"))
    with pytest.raises(InputError, match="different images"):
        build(Plan.model_validate(d), imap)


def _image_map_with(**over) -> Path:
    import tempfile

    doc = yaml.safe_load((REPO / "executor" / "images.yaml").read_text())
    for engine, image in over.items():
        doc["images"][engine] = {"*": image}
    f = Path(tempfile.mkdtemp()) / "images.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


def test_gateway_objects_come_with_the_plan_and_validate():
    plan = default_plan()
    ms = build(plan, gateway=True)
    docs = ms.dicts("team-a")
    assert validate_all(docs) == len(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind in ("Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"):
        assert (kind, "synergai-gateway") in kinds
    rb = next(d for d in docs if d["kind"] == "RoleBinding")
    assert rb["subjects"][0]["namespace"] == "team-a"
    gw = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "synergai-gateway")
    pod = gw["spec"]["template"]["spec"]
    assert any(v.get("secret", {}).get("secretName") == "synergai-gateway-token" for v in pod["volumes"])
    args = pod["containers"][0]["args"]
    cm_name = args[args.index("--plan") + 1].split(":", 1)[1]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    assert Plan.model_validate_json(cm["data"]["plan.json"]).compute_id() == plan.compute_id()
    role = next(d for d in docs if d["kind"] == "Role")
    assert any("endpoints" in r["resources"] and "watch" in r["verbs"] for r in role["rules"])
    assert any(r.get("resourceNames") == [cm_name] for r in role["rules"])
    # without the gateway: none of it
    assert {d["metadata"]["name"] for d in build(plan).dicts()}.isdisjoint({"synergai-gateway", cm_name})


def test_zero_replica_groups_make_nothing():
    plan = default_plan()
    d = plan.model_dump(mode="json")
    d["servers"][0]["replicas"] = 0
    p2 = Plan.model_validate(d)
    assert len(deployments(build(p2).dicts())) == len(plan.server_groups()) - 1


def test_plan_id_changes_only_object_metadata():
    plan = default_plan()
    a = build(plan).dicts()
    b = build(plan.model_copy(update={"plan_id": "ffffffffffff"})).dicts()
    for x, y in zip(a, b):
        assert x["metadata"]["annotations"][ANN_PLAN_ID] != y["metadata"]["annotations"][ANN_PLAN_ID]
        x2, y2 = copy.deepcopy(x), copy.deepcopy(y)
        del x2["metadata"]["annotations"][ANN_PLAN_ID], y2["metadata"]["annotations"][ANN_PLAN_ID]
        assert x2 == y2


def test_namespace_is_optional():
    docs = build(default_plan()).dicts("team-a")
    assert all(d["metadata"]["namespace"] == "team-a" for d in docs)
    assert all("namespace" not in d["metadata"] for d in build(default_plan()).dicts())


def test_quantities():
    assert cpu_quantity(2.0) == "2"
    assert cpu_quantity(1.5) == "1500m"
    assert cpu_quantity(0.0001) == "1m"
    assert cpu_quantity(10.8) == "10800m"
    # the API server's canonical form: the largest binary suffix with an integer mantissa
    assert memory_quantity(2048.0) == "2Gi"
    assert memory_quantity(4096.0) == "4Gi"
    assert memory_quantity(1536.0) == "1536Mi"
    assert memory_quantity(1024.0 * 1024 * 3) == "3Ti"
    assert memory_quantity(100.2) == "101Mi"
    assert memory_quantity(1023.5) == "1Gi"  # rounded up to whole MiB first


def test_every_quantity_in_the_manifests_is_canonical():
    """What the API server would store: no value that it rewrites (e.g. 4096Mi -> 4Gi, 1000m -> 1)."""
    import re

    docs = build(default_plan()).dicts() + [d for seed in range(4) for d in build(random_plan(seed)).dicts()]
    seen = 0
    for d in deployments(docs):
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for q in (c["resources"].get("requests") or {}, c["resources"].get("limits") or {}):
                for res, v in q.items():
                    seen += 1
                    if res == "cpu":
                        m = re.fullmatch(r"(\d+)m", v)
                        assert re.fullmatch(r"\d+", v) or (m and int(m.group(1)) % 1000 != 0), v
                    elif res == "memory":
                        num, suf = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", v).groups()
                        assert int(num) % 1024 != 0 or suf == "Ti", v
        for vol in pod.get("volumes") or []:
            size = vol.get("emptyDir", {}).get("sizeLimit")
            if size:
                assert size in ("1Gi", "64Mi"), size
    assert seen > 20


def test_threads_raise_the_cpu_limit_not_the_request():
    plan = random_plan(3)
    d = plan.model_dump(mode="json")
    a = d["assignments"][0]
    a["replicas"] = max(1, a["replicas"])
    a["config"]["cpu_cores"] = 1.0
    a["config"]["threads"] = 4
    for g in d["servers"]:
        if g["name"] == a["server"]:
            g["cpu_cores"] = 1.0
            g["replicas"] = max(1, g["replicas"])
    p = Plan.model_validate(d)
    dep = next(
        x
        for x in deployments(build(p).dicts())
        if x["metadata"]["annotations"]["synergai.io/model"] == a["model"]
        and x["metadata"]["annotations"]["synergai.io/pool-name"] == a["pool"]
    )
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"] == "1" and c["resources"]["limits"]["cpu"] == "4"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["THREADS"] == "4" and env["OMP_NUM_THREADS"] == "4"


def test_pool_without_labels_is_pinned_by_pool_label():
    plan = random_plan(0)
    assert all(not p.labels for p in plan.pools)
    for d in deployments(build(plan).dicts()):
        sel = d["spec"]["template"]["spec"]["nodeSelector"]
        pool = d["metadata"]["annotations"]["synergai.io/pool-name"]
        assert sel[LABEL_POOL] == pool
        assert set(sel) == {"kubernetes.io/arch", LABEL_POOL}


def test_several_configurations_for_one_model_and_pool():
    """A hand-made plan may run two configurations of a model on a pool (two dedicated groups): two
    Deployments, the configuration in their names."""
    from synergai.models.plan import dedicated_name

    plan = default_plan()
    d = plan.model_dump(mode="json")
    a2 = copy.deepcopy(d["assignments"][0])
    a2["config"]["config_id"] = a2["config"]["config_id"] + "-alt"
    a2["config"]["batch_size"] = 8
    g2 = copy.deepcopy(next(g for g in d["servers"] if g["name"] == a2["server"]))
    g2["name"] = a2["server"] = dedicated_name(a2["model"], a2["pool"], a2["config"]["config_id"])
    d["assignments"].append(a2)
    d["servers"].append(g2)
    ms = build(Plan.model_validate(d))
    docs = ms.dicts()
    validate_all(docs)
    names = [x["metadata"]["name"] for x in deployments(docs)]
    assert len(names) == len(set(names)) == len(plan.server_groups()) + 1
    assert ms.workload_for(a2["model"], a2["pool"], a2["config"]["config_id"]).name in names


def test_duplicate_assignment_is_an_input_error():
    d = default_plan().model_dump(mode="json")
    d["assignments"].append(copy.deepcopy(d["assignments"][0]))
    with pytest.raises(InputError, match="duplicate assignment"):
        build(Plan.model_validate(d))


def test_invalid_pool_label_is_an_input_error():
    d = default_plan().model_dump(mode="json")
    pool = d["assignments"][0]["pool"]
    for p in d["pools"]:
        if p["name"] == pool:
            p["labels"] = {"bad key!": "x"}
    with pytest.raises(InputError) as e:
        build(Plan.model_validate(d))
    assert "\n" not in str(e.value) and "label key" in str(e.value)


# ------------------------------------------------------------------------------------------ names


def test_hostile_names_give_valid_distinct_names():
    plan = hostile_plan()
    ms = build(plan)
    docs = ms.dicts()
    validate_all(docs)
    for kind in ("Deployment", "Service", "ConfigMap"):
        names = [d["metadata"]["name"] for d in docs if d["kind"] == kind]
        assert len(names) == len(set(names))
        assert all(is_dns1035_label(n) for n in names)
    for d in docs:
        for v in list(d["metadata"]["labels"].values()) + list(d.get("spec", {}).get("selector", {}).values()):
            if isinstance(v, str):
                assert label_value_error(v) is None, v
    # the raw names survive in annotations and env
    raw_models = {a.model for a in plan.assignments if a.replicas > 0}
    assert {
        m for d in deployments(docs) for m in json.loads(d["metadata"]["annotations"]["synergai.io/models"])
    } == raw_models
    assert len(ms.model_services) == len(raw_models)
    # models that differ only in case or punctuation do not collide
    assert "ResNet.50/v1" in raw_models or "resnet.50/v1" in raw_models


def test_hostile_names_case_and_dots_do_not_collide():
    plan = default_plan()
    d = plan.model_dump(mode="json")
    extra = []
    for i, name in enumerate(["Bert", "BERT", "be.rt", "be-rt", "b e r t"]):
        a = copy.deepcopy(d["assignments"][0])
        a["model"] = name
        g = copy.deepcopy(next(g for g in d["servers"] if g["name"] == a["server"]))
        g["name"] = a["server"] = f"{a['server']}-x{i}"
        g["models"] = [name]
        d["servers"].append(g)
        extra.append(a)
    d["assignments"].extend(extra)
    docs = build(Plan.model_validate(d)).dicts()
    validate_all(docs)
    names = [x["metadata"]["name"] for x in docs if x["kind"] == "Service"]
    assert len(names) == len(set(names))


# ------------------------------------------------------------------------------------------ validation


def test_validator_uses_an_official_schema_and_rejects_post_1_20_fields():
    from synergai.executor.validate import have_kubernetes_validate

    assert have_kubernetes_validate(), "kubernetes-validate must be installed for the tests (official schema)"
    assert schema_version()  # the oldest schema kubernetes-validate ships that covers 1.20
    dep = deployments(build(default_plan()).dicts())[0]
    validate(dep)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["os"] = {"name": "linux"}  # added in 1.23
    with pytest.raises(ManifestInvalid, match="1.20"):
        validate_fields_1_20(bad)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": 1}}  # 1.24
    with pytest.raises(ManifestInvalid):
        validate(bad)
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "3"
    with pytest.raises(ManifestInvalid):
        validate(bad)
    bad = copy.deepcopy(dep)
    bad["spec"]["selectr"] = {}
    with pytest.raises(ManifestInvalid):
        validate(bad)


@pytest.mark.parametrize("seed", range(8))
def test_random_plans_validate_strict(seed):
    docs = build(random_plan(seed)).dicts("ns")
    assert validate_all(docs) == len(docs) > 0


def test_default_and_hostile_plans_validate_strict():
    assert validate_all(build(default_plan()).dicts())
    assert validate_all(build(hostile_plan(2)).dicts())
    assert validate_all(
        build(
            renamed(default_plan(), {"bert": "BERT.large/ü"}, {"cloud-gpu-l4": "Cloud GPU.L4"}, keep_labels=True)
        ).dicts()
    )


@pytest.mark.parametrize("name,path", scenario_plans())
def test_bundled_scenarios_validate_strict(name, path):
    from synergai.experiments.scenarios import _defaults, base_workload, build_cluster, load_scenario
    from synergai.planner import plan_offline

    table, _, dwl = _defaults()
    sc = load_scenario(path)
    cl = build_cluster(sc)
    wl = base_workload(sc, table, cl).scaled(0.6 * sum(d.rate_rps for d in dwl.models))
    plan = plan_offline(table, cl, wl, time_limit=10)
    docs = build(plan).dicts()
    assert validate_all(docs) == len(docs)


def test_every_engine_of_the_default_profiles_has_an_image():
    import synergai.profiling_data as pdd

    imap = ImageMap.default()
    pairs = {(r.engine, r.architecture) for r in pdd.default_profiles().records}
    for engine, arch in sorted(pairs):
        imap.resolve(engine, arch)


def test_deploy_manifests_validate_strict():
    docs = []
    for f in sorted((REPO / "executor" / "deploy").glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    } <= kinds
    validate_all(docs)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    # the daemon's own objects must never carry the label prune selects on
    for d in docs:
        assert (d["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGER, d["metadata"]["name"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


# ------------------------------------------------------------------------------------------ image map


def test_unknown_engine_is_a_one_line_input_error():
    d = default_plan().model_dump(mode="json")
    d["assignments"][0]["config"]["engine"] = "mystery-engine"
    with pytest.raises(InputError) as e:
        build(Plan.model_validate(d))
    msg = str(e.value)
    assert "\n" not in msg and "mystery-engine" in msg and "image" in msg


def test_engine_without_image_for_the_architecture():
    d = default_plan().model_dump(mode="json")
    a = next(x for x in d["assignments"] if x["pool"].startswith("edge"))
    a["config"]["engine"] = "deepsparse"  # amd64 only in the default map
    with pytest.raises(InputError, match="arm64"):
        build(Plan.model_validate(d))


def test_user_image_map(tmp_path):
    f = tmp_path / "images.yaml"
    f.write_text(
        "version: 1\ndefaults: {port: 9000, readiness_path: /ready}\nimages:\n"
        "  tensorrt: {'*': {image: my.reg.example/trt:1, args: ['--fast'], env: {A: b}}}\n"
        "  armnn-neon: {arm64: my/armnn:2}\n  armnn-opencl: {arm64: my/armnn:2}\n"
        "  tflite: {'*': my/tflite:3}\n"
    )
    imap = ImageMap.load(f)
    docs = build(default_plan(), imap).dicts()
    validate_all(docs)
    imgs = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments(docs)}
    assert imgs <= {"my.reg.example/trt:1", "my/armnn:2", "my/tflite:3"}
    c = next(
        d
        for d in deployments(docs)
        if d["spec"]["template"]["spec"]["containers"][0]["image"] == "my.reg.example/trt:1"
    )["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["--fast"] and c["ports"][0]["containerPort"] == 9000
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"name": "A", "value": "b"} in c["env"]
    assert {"name": "PORT", "value": "9000"} in c["env"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("images: [1, 2]", "images"),
        ("version: 2\nimages: {x: {amd64: a/b}}", "version"),
        ("images: {x: {amd64: 'Bad Image!'}}", "image"),
        ("images: {x: {}}", "architecture"),
        ("images: {x: {amd64: {image: a/b, env: {'1bad': x}}}}", "environment"),
        ("{{{", "YAML"),
    ],
)
def test_bad_image_map(tmp_path, text, needle):
    f = tmp_path / "images.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        ImageMap.load(f)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_manifests_writes_valid_yaml(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    default_plan().save(plan)
    out = tmp_path / "out"
    assert cli_main(["manifests", str(plan), "--out", str(out), "--namespace", "team-a"]) == 0
    files = sorted(out.glob("*.yaml"))
    # the kustomization has no .yaml extension, so `kubectl apply -f DIR` reads only the objects
    kust = yaml.safe_load((out / "Kustomization").read_text())
    assert kust["kind"] == "Kustomization" and not (out / "kustomization.yaml").exists()
    assert sorted(kust["resources"]) == sorted(f.name for f in files)
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
    }
    assert validate_all(docs) == len(build(default_plan(), gateway=True).objects)
    o = capsys.readouterr().out
    assert "validated offline for Kubernetes 1.20" in o and "(1 shared)" in o and "with the gateway" in o
    # the gateway needs a namespace (its RoleBinding names it): asked for without one, an error; by default
    # without a namespace the serving objects are written and the note says how to add the gateway
    assert cli_main(["manifests", str(plan), "--out", str(tmp_path / "o3"), "--gateway"]) == 2
    assert "--namespace" in capsys.readouterr().err and not (tmp_path / "o3").exists()
    assert cli_main(["manifests", str(plan), "--out", str(tmp_path / "o2")]) == 0
    assert "give --namespace NAME to add them" in capsys.readouterr().out
    kinds = {yaml.safe_load(f.read_text())["kind"] for f in (tmp_path / "o2").glob("*.yaml")}
    assert kinds == {"ConfigMap", "Deployment", "Service"}
    assert cli_main(["manifests", str(plan), "--out", str(tmp_path / "o3"), "--no-gateway"]) == 0
    docs = [yaml.safe_load(f.read_text()) for f in (tmp_path / "o3").glob("*.yaml")]
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service"}
    assert len(docs) == len(build(default_plan()).objects)


def test_cli_manifests_removes_what_an_earlier_run_wrote_and_nothing_else(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    default_plan().save(plan)
    out = tmp_path / "out"
    out.mkdir()
    # an older synergai wrote kustomization.yaml and an object the new plan does not have; the user keeps notes
    (out / "kustomization.yaml").write_text(
        "# generated by synergai from plan old\nkind: Kustomization\nresources:\n- deployment-gone-abc.yaml\n"
    )
    (out / "deployment-gone-abc.yaml").write_text("# generated by synergai from plan old\nkind: Deployment\n")
    (out / "mine.yaml").write_text("kind: ConfigMap\n")
    assert cli_main(["manifests", str(plan), "--out", str(out), "--no-gateway"]) == 0
    assert not (out / "kustomization.yaml").exists() and not (out / "deployment-gone-abc.yaml").exists()
    assert (out / "mine.yaml").exists()
    assert "removed 2 stale files" in capsys.readouterr().out


def _plan_file(tmp_path, mutate=None, text=None) -> Path:
    f = tmp_path / "plan.json"
    if text is not None:
        f.write_text(text)
        return f
    d = default_plan().model_dump(mode="json")
    if mutate:
        mutate(d)
    f.write_text(json.dumps(d))
    return f


BAD_PLANS = {
    "not-json": dict(text="{ this is not json"),
    "empty": dict(text=""),
    "wrong-schema-version": dict(mutate=lambda d: d.__setitem__("schema_version", "synergai.plan/v0")),
    "wrong-schema": dict(mutate=lambda d: d["assignments"][0].__setitem__("replicas", "many")),
    "unknown-engine": dict(mutate=lambda d: d["assignments"][0]["config"].__setitem__("engine", "nope-engine")),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
@pytest.mark.parametrize("command", ["manifests", "apply"])
def test_cli_bad_plans_one_line_exit_2(tmp_path, capsys, case, command):
    f = _plan_file(tmp_path, **BAD_PLANS[case])
    args = [command, str(f)] + (
        ["--out", str(tmp_path / "o")]
        if command == "manifests"
        else ["--kubeconfig", str(tmp_path / "missing.kubeconfig")]
    )
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synergai: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
