"""Cluster inventory from Node labels: a :class:`models.ClusterSpec` without writing one.

Node labels read (see executor/README.md):

=============================  ==========================================================
``kubernetes.io/arch``         architecture (set by the kubelet; ``amd64`` / ``arm64``)
``synergai.io/device``         device name as in the profiles (e.g. ``jetson-agx-orin``);
                               nodes without it are not part of the inventory
``synergai.io/tier``           ``edge`` or ``cloud`` (default ``cloud``)
``synergai.io/pool``           pool name (default: ``<device>-<tier>``)
``synergai.io/rtt-ms``         client round trip to the pool, ms (optional, default 0)
``synergai.io/idle-power-w``   idle power of one node, W (optional, default 0)
``synergai.io/accelerator``    extended resource name of the accelerator (optional; default:
                               the first allocatable ``vendor/resource`` with a count > 0)
=============================  ==========================================================

Capacity per node is the node's *allocatable* cpu/memory/accelerators; a pool of
nodes that differ takes the smallest of each, so the plan fits every node. Nodes that are
cordoned or not Ready are left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from synergai.models import ClusterSpec, InputError, NodePool

LABEL_ARCH = "kubernetes.io/arch"
LABEL_DEVICE = "synergai.io/device"
LABEL_TIER = "synergai.io/tier"
LABEL_POOL = "synergai.io/pool"
LABEL_RTT = "synergai.io/rtt-ms"
LABEL_IDLE = "synergai.io/idle-power-w"
LABEL_ACCEL = "synergai.io/accelerator"

_SUFFIX = {
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPEmun]?)$")
_NOT_ACCEL_PREFIX = ("hugepages-", "attachable-volumes-")


def parse_quantity(q: str | int | float) -> float:
    """Kubernetes quantity -> float (``"7500m"`` -> 7.5, ``"16Gi"`` -> 17179869184)."""
    if isinstance(q, (int, float)):
        return float(q)
    m = _QTY.match(str(q).strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


@dataclass
class Inventory:
    cluster: Optional[ClusterSpec]
    ignored: list[str] = field(default_factory=list)  # "node: reason"
    nodes: dict[str, list[str]] = field(default_factory=dict)  # pool -> node names


def _ready(node: dict) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _float_label(labels: dict, key: str, node: str) -> float:
    v = labels.get(key)
    if v is None or v == "":
        return 0.0
    try:
        x = float(v)
    except ValueError:
        raise InputError(f"node {node}: label {key}={v!r} is not a number", field=key) from None
    if not math.isfinite(x) or x < 0:
        raise InputError(f"node {node}: label {key}={v!r} must be a finite number >= 0", field=key)
    return x


def _accelerator(alloc: dict, labels: dict) -> tuple[Optional[str], int]:
    res = labels.get(LABEL_ACCEL)
    if res:
        # label values cannot hold '/': accept vendor.com_gpu too
        res = res if "/" in res else res.replace("_", "/", 1)
        return res, int(parse_quantity(alloc.get(res, 0)))
    for key in sorted(alloc):
        if "/" in key and not key.startswith(_NOT_ACCEL_PREFIX) and not key.startswith("kubernetes.io/"):
            try:
                n = int(parse_quantity(alloc[key]))
            except ValueError:
                continue
            if n > 0:
                return key, n
    return None, 0


def cluster_from_nodes(nodes: Iterable[dict], name: str = "inventory") -> Inventory:
    """Group Ready nodes into pools by their synergai labels (see module docstring)."""
    groups: dict[str, list[dict]] = {}
    ignored: list[str] = []
    for node in nodes:
        md = node.get("metadata") or {}
        nname = md.get("name", "?")
        labels = md.get("labels") or {}
        if not _ready(node):
            ignored.append(f"{nname}: not Ready or cordoned")
            continue
        device = labels.get(LABEL_DEVICE)
        if not device:
            ignored.append(f"{nname}: no {LABEL_DEVICE} label")
            continue
        arch = labels.get(LABEL_ARCH) or ((node.get("status") or {}).get("nodeInfo") or {}).get("architecture")
        if arch not in ("amd64", "arm64"):
            ignored.append(f"{nname}: architecture {arch!r} is not amd64/arm64")
            continue
        tier = labels.get(LABEL_TIER, "cloud")
        if tier not in ("edge", "cloud"):
            ignored.append(f"{nname}: {LABEL_TIER}={tier!r} is not edge/cloud")
            continue
        pool = labels.get(LABEL_POOL) or f"{device}-{tier}"
        groups.setdefault(pool, []).append(node)

    pools: list[NodePool] = []
    members: dict[str, list[str]] = {}
    for pool_name in sorted(groups):
        ns = groups[pool_name]
        first = ns[0]["metadata"]["labels"]
        device, tier = first[LABEL_DEVICE], first.get(LABEL_TIER, "cloud")
        arch = first.get(LABEL_ARCH) or ns[0]["status"]["nodeInfo"]["architecture"]
        keep = []
        for n in ns:
            lb = n["metadata"]["labels"]
            if (lb[LABEL_DEVICE], lb.get(LABEL_TIER, "cloud"), lb.get(LABEL_ARCH, arch)) != (device, tier, arch):
                ignored.append(
                    f"{n['metadata']['name']}: pool {pool_name!r} mixes devices/tiers/architectures "
                    f"(first node: {device}/{tier}/{arch})"
                )
                continue
            keep.append(n)
        cpu, mem, acc, res = [], [], [], None
        for n in keep:
            alloc = (n.get("status") or {}).get("allocatable") or {}
            cpu.append(parse_quantity(alloc.get("cpu", 0)))
            mem.append(parse_quantity(alloc.get("memory", 0)) / 2**20)
            r, c = _accelerator(alloc, n["metadata"]["labels"])
            acc.append(c)
            res = res or r
        if not keep or min(cpu) <= 0 or min(mem) <= 0:
            ignored.extend(f"{n['metadata']['name']}: no allocatable cpu/memory" for n in keep)
            continue
        labels = {LABEL_POOL: pool_name} if LABEL_POOL in first else {LABEL_DEVICE: device, LABEL_TIER: tier}
        pools.append(
            NodePool(
                name=pool_name,
                device=device,
                architecture=arch,
                tier=tier,
                nodes=len(keep),
                cpu=round(min(cpu), 3),
                memory_mb=round(min(mem), 1),
                accelerators=min(acc),
                accelerator_resource=res or "nvidia.com/gpu",
                rtt_ms=max(_float_label(n["metadata"]["labels"], LABEL_RTT, n["metadata"]["name"]) for n in keep),
                idle_power_w=max(
                    _float_label(n["metadata"]["labels"], LABEL_IDLE, n["metadata"]["name"]) for n in keep
                ),
                labels=labels,
            )
        )
        members[pool_name] = sorted(n["metadata"]["name"] for n in keep)
    return Inventory(cluster=ClusterSpec(name=name, pools=pools) if pools else None, ignored=ignored, nodes=members)


def read_inventory(kube, name: str = "inventory") -> Inventory:
    """List Nodes (needs get/list on nodes) and build the inventory."""
    items, _ = kube.list("v1", "Node")
    return cluster_from_nodes(items, name=name)


def matching_nodes(selector: dict[str, str], nodes: Iterable[dict]) -> list[str]:
    """Names of the Ready nodes whose labels satisfy a nodeSelector."""
    out = []
    for n in nodes:
        lb = (n.get("metadata") or {}).get("labels") or {}
        if _ready(n) and all(lb.get(k) == v for k, v in selector.items()):
            out.append(n["metadata"]["name"])
    return out
