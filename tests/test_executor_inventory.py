"""Offline: ClusterSpec from Node labels, plan sources, and the daemon's request validation."""

from __future__ import annotations

import json

import pytest

from synergai.executor.inventory import cluster_from_nodes, matching_nodes, parse_quantity
from synergai.executor.manifests import pool_node_selector
from synergai.executor.source import ConfigMapSource, FileSource, SourceDoc, parse_document, parse_source
from synergai.models import InputError, Plan, WorkloadSpec


def node(name, labels, cpu="8", memory="16Gi", extra=None, ready=True, unschedulable=False, arch="arm64"):
    alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
    alloc.update(extra or {})
    lb = {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux", "kubernetes.io/hostname": name}
    lb.update(labels)
    return {
        "metadata": {"name": name, "labels": lb},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "allocatable": alloc,
            "nodeInfo": {"architecture": arch},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_parse_quantity():
    assert parse_quantity("7500m") == 7.5
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("2") == 2
    assert parse_quantity("100k") == 1e5
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_inventory_groups_nodes_into_pools():
    nodes = [
        node(
            "orin-1",
            {
                "synergai.io/device": "jetson-agx-orin",
                "synergai.io/tier": "edge",
                "synergai.io/pool": "edge-orin",
                "synergai.io/rtt-ms": "2",
            },
            cpu="12",
            memory="30Gi",
            extra={"nvidia.com/gpu": "1"},
        ),
        node(
            "orin-2",
            {
                "synergai.io/device": "jetson-agx-orin",
                "synergai.io/tier": "edge",
                "synergai.io/pool": "edge-orin",
                "synergai.io/rtt-ms": "3",
            },
            cpu="11500m",
            memory="29Gi",
            extra={"nvidia.com/gpu": "1"},
        ),
        node("rpi-1", {"synergai.io/device": "rpi4", "synergai.io/tier": "edge"}, cpu="4", memory="3800Mi"),
        node(
            "x86-1",
            {"synergai.io/device": "x86-xeon-8275cl", "synergai.io/tier": "cloud"},
            arch="amd64",
            cpu="16",
            memory="32Gi",
        ),
        node(
            "x86-cordoned",
            {"synergai.io/device": "x86-xeon-8275cl", "synergai.io/tier": "cloud"},
            arch="amd64",
            unschedulable=True,
        ),
        node(
            "x86-notready",
            {"synergai.io/device": "x86-xeon-8275cl", "synergai.io/tier": "cloud"},
            arch="amd64",
            ready=False,
        ),
        node("plain", {}),
        node("weird-tier", {"synergai.io/device": "rpi4", "synergai.io/tier": "fog"}),
    ]
    inv = cluster_from_nodes(nodes)
    cl = inv.cluster
    assert cl is not None
    pools = {p.name: p for p in cl.pools}
    assert set(pools) == {"edge-orin", "rpi4-edge", "x86-xeon-8275cl-cloud"}
    orin = pools["edge-orin"]
    assert orin.nodes == 2 and orin.cpu == 11.5 and orin.memory_mb == 29 * 1024
    assert orin.accelerators == 1 and orin.accelerator_resource == "nvidia.com/gpu"
    assert orin.architecture == "arm64" and orin.tier == "edge" and orin.rtt_ms == 3
    assert orin.labels == {"synergai.io/pool": "edge-orin"}
    assert pools["rpi4-edge"].labels == {"synergai.io/device": "rpi4", "synergai.io/tier": "edge"}
    assert pools["x86-xeon-8275cl-cloud"].nodes == 1 and pools["x86-xeon-8275cl-cloud"].architecture == "amd64"
    ignored = " ".join(inv.ignored)
    for n in ("x86-cordoned", "x86-notready", "plain", "weird-tier"):
        assert n in ignored
    # the nodeSelector the manifests use for an inventory pool selects exactly its nodes
    for p in cl.pools:
        assert sorted(matching_nodes(pool_node_selector(p), nodes)) == inv.nodes[p.name]


def test_inventory_of_unlabelled_cluster_is_empty():
    inv = cluster_from_nodes([node("a", {}), node("b", {})])
    assert inv.cluster is None and len(inv.ignored) == 2


def test_inventory_bad_numeric_label():
    with pytest.raises(InputError, match="rtt"):
        cluster_from_nodes([node("a", {"synergai.io/device": "rpi4", "synergai.io/rtt-ms": "fast"})])


# ------------------------------------------------------------------------------------------ sources


def test_parse_source():
    assert isinstance(parse_source("file:/x/plan.json"), FileSource)
    s = parse_source("configmap:team/plan")
    assert isinstance(s, ConfigMapSource) and (s.namespace, s.name) == ("team", "plan")
    s = parse_source("configmap:plan", "default-ns")
    assert (s.namespace, s.name) == ("default-ns", "plan")
    for bad in ("plan.json", "http://x", "configmap:", "configmap:Bad_Name", "configmap:a/b/c", "s3:bucket"):
        with pytest.raises(InputError) as e:
            parse_source(bad, "ns")
        assert "\n" not in str(e.value)


def _doc(text, json_hint=False):
    return SourceDoc("test", text, "d", json_hint)


def test_parse_document_plan_and_workload(tmp_path):
    from synergai.planner import plan_offline
    from synergai.planner.synthetic import random_instance

    t, c, w = random_instance(0, 2, 2, 2)
    plan = plan_offline(t, c, w)
    assert isinstance(parse_document(_doc(plan.model_dump_json(), True)), Plan)
    wl = parse_document(_doc("models:\n  - {model: resnet50, rate_rps: 10, deadline_ms: 15}\n"))
    assert isinstance(wl, WorkloadSpec) and wl.models[0].model == "resnet50"
    for text, needle in (
        ("{not json", "JSON"),
        ('{"schema_version": "v0"}', "schema version"),
        ("- a\n- b", "expected"),
        ("", "empty"),
        ("name: x", "expected"),
        ('{"schema_version": "synergai.plan/v1"}', "pools"),
    ):
        with pytest.raises(InputError) as e:
            parse_document(_doc(text, text.startswith("{")))
        assert needle in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ /v1/assign input


class _FakeKube:
    stop = None
    on_retry = None

    def with_stop(self, stop):
        self.stop = stop
        return self

    def close(self):
        pass


def test_assign_request_validation(tmp_path):
    from synergai.executor.daemon import Daemon, DaemonConfig

    f = tmp_path / "plan.json"
    f.write_text("{}")
    d = Daemon(DaemonConfig(plan_source=f"file:{f}", namespace="ns", port=-1), kube=_FakeKube())
    assert d.assign_http(b'{"model": "resnet50"}')[0] == 503  # no live plan yet
    for body in (
        b"not json",
        b"[1]",
        b"{}",
        b'{"model": 3}',
        b'{"model": "x", "deadline_ms": -1}',
        b'{"model": "x", "deadline_ms": "soon"}',
        b'{"model": "x", "origin": "moon"}',
        b'{"model": "x", "deadline_ms": true}',
    ):
        code, out = d.assign_http(body)
        assert code == 400 and "error" in out, body
    assert d.ready()[0] is False
    assert d.healthy()[0] is False  # not started
    json.dumps(d.status())
