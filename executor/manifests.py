"""Kubernetes objects from a :class:`models.Plan`.

* one ``apps/v1`` Deployment per (model, pool, configuration) with replicas > 0;
* one ``v1`` Service per Deployment (same name), which ``POST /v1/assign`` returns so a
  client reaches exactly the pool the online stage chose;
* one ``v1`` Service per model, selecting the model's pods on every pool (a plain
  entry point for clients that do not ask the daemon; kube-proxy spreads requests
  without regard to latency).

Objects are built as typed ``kubernetes.client`` models (``V1Deployment``, ``V1Service``)
and turned into plain dicts with ``ApiClient().sanitize_for_serialization``; only fields
that Kubernetes 1.20 accepts are used (checked by :mod:`executor.validate`). The client
(the ``kube`` extra) is imported on first use, so importing this module never needs it.

The manifests are what the API server stores: no field the server drops (``hostPID:
false`` and the other non-pointer booleans whose default is false) and quantities in
canonical form (``4Gi``, not ``4096Mi``; ``500m``, ``2``), so ``kubectl apply`` of the
same manifests reports ``unchanged`` and a server-side apply by another field manager
(``kubectl apply --server-side``) does not conflict with synergai's values.

The plan id goes into an annotation of the object metadata only, never into the pod
template, so a new plan that does not change a Deployment's pods does not roll them.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from synergai.models import Assignment, InputError, NodePool, Plan

from .images import ImageMap, ResolvedImage
from .names import Namer, dns_name, label_key_error, label_value_error

MANAGER = "synergai"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"          # the model (sanitised)
LABEL_INSTANCE = "app.kubernetes.io/instance"  # the deployment (model, pool[, config])
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_POOL = "synergai.io/pool"                # pool (sanitised) on pods/objects; raw pool name on nodes
LABEL_TIER = "synergai.io/tier"
LABEL_DEVICE = "synergai.io/device"
LABEL_ARCH = "kubernetes.io/arch"

ANN_PLAN_ID = "synergai.io/plan-id"
ANN_MODEL = "synergai.io/model"
ANN_POOL = "synergai.io/pool-name"
ANN_CONFIG = "synergai.io/config-id"
ANN_ENGINE = "synergai.io/engine"

SERVICE_PORT = 80
CONTAINER_NAME = "server"
RUN_AS_USER = 65532  # "nonroot" in distroless images

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"


@dataclass
class Workload:
    """One Deployment (and its Service) of the plan."""

    name: str
    model: str
    pool: str
    config_id: str
    replicas: int
    service: str


@dataclass
class ManifestSet:
    plan_id: str
    objects: list[Any] = field(default_factory=list)          # typed kubernetes client models
    workloads: list[Workload] = field(default_factory=list)
    model_services: dict[str, str] = field(default_factory=dict)  # model -> Service name
    _dicts: Optional[list[dict]] = field(default=None, repr=False, compare=False)

    def dicts(self, namespace: Optional[str] = None) -> list[dict]:
        """Plain manifests (what ``kubectl apply`` takes), optionally with ``metadata.namespace``."""
        if self._dicts is None or len(self._dicts) != len(self.objects):
            self._dicts = [sanitize(o) for o in self.objects]
        out = copy.deepcopy(self._dicts)
        if namespace:
            for d in out:
                d["metadata"]["namespace"] = namespace
        return out

    def workload_for(self, model: str, pool: str, config_id: Optional[str] = None) -> Optional[Workload]:
        for w in self.workloads:
            if w.model == model and w.pool == pool and (config_id is None or w.config_id == config_id):
                return w
        return None


# ``kubernetes.client``, imported by :func:`_client` on first use (the ``kube`` extra)
k: Any = None
_API: Any = None


def _client() -> Any:
    global k
    if k is None:
        from synergai.extras import require

        k = require("kubernetes.client", "kube", "building Kubernetes objects")
    return k


def sanitize(obj: Any) -> Any:
    """``ApiClient().sanitize_for_serialization``: typed model -> the dict the API server takes."""
    global _API
    if _API is None:
        _API = _client().ApiClient()
    return _API.sanitize_for_serialization(obj)


def cpu_quantity(cores: float) -> str:
    """CPU in the API server's canonical form: whole cores (``2``) or millicores (``500m``), rounded up."""
    m = max(1, int(math.ceil(round(cores * 1000, 6))))
    return str(m // 1000) if m % 1000 == 0 else f"{m}m"


_BINARY_SUFFIXES = ("Mi", "Gi", "Ti", "Pi", "Ei")


def memory_quantity(mib: float) -> str:
    """Memory (MiB, rounded up) in the API server's canonical form: the largest binary suffix with an
    integer mantissa (``4Gi`` for 4096 MiB, ``1536Mi`` for 1536 MiB), so the stored value equals ours."""
    v = max(1, int(math.ceil(round(mib, 6))))
    i = 0
    while v % 1024 == 0 and i + 1 < len(_BINARY_SUFFIXES):
        v //= 1024
        i += 1
    return f"{v}{_BINARY_SUFFIXES[i]}"


def _check_labels(labels: dict[str, str], where: str) -> None:
    for key, value in labels.items():
        err = label_key_error(key)
        if err:
            raise InputError(f"{where}: label key {key!r}: {err}", field="pools.labels")
        err = label_value_error(value)
        if err:
            raise InputError(f"{where}: label {key}={value!r}: value {err}", field="pools.labels")


def pool_label_value(pool_name: str) -> str:
    """The ``synergai.io/pool`` node label value for a pool: its name when that is a valid label
    value, else a sanitised, hashed form (``dns_name(pool, kind="pool")``)."""
    return pool_name if label_value_error(pool_name) is None and pool_name else dns_name(pool_name, kind="pool")


def pool_node_selector(pool: NodePool) -> dict[str, str]:
    """nodeSelector pinning pods to ``pool``: its architecture and its own labels.

    A pool without labels in the ClusterSpec is selected by ``synergai.io/pool=<pool>``
    (the label :mod:`executor.inventory` reads; see :func:`pool_label_value`), so pools
    of one architecture never mix.
    """
    sel = {LABEL_ARCH: pool.architecture}
    labels = dict(pool.labels)
    if not labels:
        labels = {LABEL_POOL: pool_label_value(pool.name)}
    _check_labels(labels, f"pool {pool.name!r}")
    if LABEL_ARCH in labels and labels[LABEL_ARCH] != pool.architecture:
        raise InputError(f"pool {pool.name!r}: label {LABEL_ARCH}={labels[LABEL_ARCH]!r} contradicts its "
                         f"architecture {pool.architecture!r}", field="pools.labels")
    sel.update(labels)
    return sel


def _resources(a: Assignment, pool: NodePool) -> Any:
    c = a.config
    cpu_req = c.cpu_cores
    cpu_lim = max(cpu_req, float(c.threads or 0))
    requests = {"cpu": cpu_quantity(cpu_req), "memory": memory_quantity(c.memory_request_mb)}
    limits = {"cpu": cpu_quantity(cpu_lim), "memory": memory_quantity(c.memory_request_mb)}
    if c.accelerators > 0:
        res = pool.accelerator_resource
        err = label_key_error(res)
        if err or "/" not in res:
            raise InputError(f"pool {pool.name!r}: accelerator_resource {res!r} is not an extended resource "
                             f"name like nvidia.com/gpu", field="pools.accelerator_resource")
        # extended resources: requests must equal limits
        requests[res] = str(c.accelerators)
        limits[res] = str(c.accelerators)
    return k.V1ResourceRequirements(requests=requests, limits=limits)


def _env(a: Assignment, pool: NodePool, img: ResolvedImage) -> list[Any]:
    c = a.config
    threads = "auto" if c.threads is None else str(c.threads)
    env = {
        "MODEL": a.model,
        "ENGINE": c.engine,
        "PRECISION": c.precision,
        "BATCH_SIZE": str(c.batch_size),
        "THREADS": threads,
        "POWER_MODE": c.power_mode,
        "ACCELERATOR": c.accelerator,
        "CONFIG_ID": c.config_id,
        "PORT": str(img.port),
    }
    if c.batch_size > 1:  # the bounded batch-formation wait the planner assumed (planner.candidates.batch_wait_ms)
        from synergai.planner.candidates import BATCH_WAIT_FRACTION
        env["MAX_BATCH_DELAY_MS"] = f"{BATCH_WAIT_FRACTION * c.latency_p50_ms:.3f}"
    if c.threads:
        env["OMP_NUM_THREADS"] = str(c.threads)
    for name, value in img.env:
        env.setdefault(name, value)
    return [k.V1EnvVar(name=n, value=v) for n, v in env.items()]


def _container(a: Assignment, pool: NodePool, img: ResolvedImage) -> Any:
    http = k.V1HTTPGetAction(path=img.readiness_path, port="http", scheme="HTTP")
    live = k.V1HTTPGetAction(path=img.liveness_path, port="http", scheme="HTTP")
    return k.V1Container(
        name=CONTAINER_NAME,
        image=img.image,
        image_pull_policy="IfNotPresent",
        args=list(img.args) or None,
        env=_env(a, pool, img),
        ports=[k.V1ContainerPort(name="http", container_port=img.port, protocol="TCP")],
        resources=_resources(a, pool),
        # model loading can take minutes on an edge board: the startup probe covers it
        startup_probe=k.V1Probe(http_get=http, period_seconds=5, failure_threshold=60, timeout_seconds=2),
        readiness_probe=k.V1Probe(http_get=http, period_seconds=5, failure_threshold=3, timeout_seconds=2),
        liveness_probe=k.V1Probe(http_get=live, period_seconds=10, failure_threshold=3, timeout_seconds=2),
        security_context=k.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            capabilities=k.V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[k.V1VolumeMount(name="tmp", mount_path="/tmp")],
        termination_message_policy="FallbackToLogsOnError",
    )


def build(plan: Plan, images: Optional[ImageMap] = None) -> ManifestSet:
    """All objects for ``plan``; raises :class:`models.InputError` (nothing half-built) on bad input."""
    k = _client()
    images = images or ImageMap.default()
    plan_id = plan.plan_id or plan.compute_id()
    pools = {p.name: p for p in plan.pools}
    active = [a for a in plan.assignments if a.replicas > 0]

    seen: dict[tuple, int] = {}
    per_mp: dict[tuple, int] = {}
    for i, a in enumerate(active):
        if a.pool not in pools:
            raise InputError(f"assignment {a.model}/{a.pool}: pool {a.pool!r} is not in plan.pools",
                             field="assignments.pool")
        key = (a.model, a.pool, a.config.config_id)
        if key in seen:
            raise InputError(f"duplicate assignment for model {a.model!r} on pool {a.pool!r} with "
                             f"configuration {a.config.config_id}", field="assignments")
        seen[key] = i
        per_mp[(a.model, a.pool)] = per_mp.get((a.model, a.pool), 0) + 1

    namer = Namer()
    out = ManifestSet(plan_id=plan_id)
    selectors = {name: pool_node_selector(p) for name, p in pools.items() if any(a.pool == name for a in active)}
    models = sorted({a.model for a in active})
    model_label = {m: namer.name(m, kind="model") for m in models}

    deployments, services = [], []
    for a in sorted(active, key=lambda a: (a.model, a.pool, a.config.config_id)):
        pool = pools[a.pool]
        try:
            img = images.resolve(a.config.engine, pool.architecture)
        except InputError as e:
            raise InputError(f"model {a.model!r} on pool {a.pool!r}: {e.message} (image map {images.source})",
                             field="assignments.config.engine") from None
        # name from (model, pool): a new configuration for the same (model, pool) rolls in place;
        # the configuration joins the name only if a hand-made plan has several for one (model, pool)
        parts = (a.model, a.pool) if per_mp[(a.model, a.pool)] == 1 else (a.model, a.pool, a.config.config_id)
        name = namer.name(*parts, kind="deployment")
        pool_label = pool_label_value(a.pool)
        selector = {LABEL_MANAGED_BY: MANAGER, LABEL_INSTANCE: name}
        labels = {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER, LABEL_COMPONENT: "inference",
                  LABEL_NAME: model_label[a.model], LABEL_INSTANCE: name, LABEL_POOL: pool_label,
                  LABEL_TIER: pool.tier}
        ident = {ANN_MODEL: a.model, ANN_POOL: a.pool, ANN_CONFIG: a.config.config_id, ANN_ENGINE: a.config.engine}
        meta = k.V1ObjectMeta(name=name, labels=dict(labels), annotations={ANN_PLAN_ID: plan_id, **ident})
        accel = a.config.accelerators > 0
        strategy = k.V1DeploymentStrategy(
            type="RollingUpdate",
            # accelerators are usually all allocated: surge pods could never schedule
            rolling_update=k.V1RollingUpdateDeployment(max_surge=0 if accel else 1, max_unavailable=1 if accel else 0))
        pod = k.V1PodSpec(
            containers=[_container(a, pool, img)],
            node_selector=dict(selectors[a.pool]),
            automount_service_account_token=False,
            enable_service_links=False,
            # hostNetwork/hostPID/hostIPC are left unset: false is their default and the API server
            # drops a false value, so writing it would make every kubectl re-apply a change
            security_context=k.V1PodSecurityContext(
                run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, fs_group=RUN_AS_USER,
                seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")),
            termination_grace_period_seconds=30,
            restart_policy="Always",
            volumes=[k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource(size_limit="1Gi"))],
            topology_spread_constraints=[k.V1TopologySpreadConstraint(
                max_skew=1, topology_key="kubernetes.io/hostname", when_unsatisfiable="ScheduleAnyway",
                label_selector=k.V1LabelSelector(match_labels=dict(selector)))],
        )
        dep = k.V1Deployment(
            api_version="apps/v1", kind="Deployment", metadata=meta,
            spec=k.V1DeploymentSpec(
                replicas=a.replicas,
                selector=k.V1LabelSelector(match_labels=dict(selector)),
                strategy=strategy,
                revision_history_limit=3,
                progress_deadline_seconds=600,
                template=k.V1PodTemplateSpec(
                    metadata=k.V1ObjectMeta(labels=dict(labels), annotations=dict(ident)),
                    spec=pod)))
        svc = k.V1Service(
            api_version="v1", kind="Service",
            metadata=k.V1ObjectMeta(name=name, labels=dict(labels), annotations={ANN_PLAN_ID: plan_id, **ident}),
            spec=k.V1ServiceSpec(type="ClusterIP", selector=dict(selector), session_affinity="None",
                                 ports=[k.V1ServicePort(name="http", port=SERVICE_PORT, target_port="http",
                                                        protocol="TCP")]))
        deployments.append(dep)
        services.append(svc)
        out.workloads.append(Workload(name=name, model=a.model, pool=a.pool, config_id=a.config.config_id,
                                      replicas=a.replicas, service=name))

    for m in models:
        name = namer.name(m, kind="model-service")
        labels = {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER, LABEL_COMPONENT: "model-endpoint",
                  LABEL_NAME: model_label[m]}
        services.append(k.V1Service(
            api_version="v1", kind="Service",
            metadata=k.V1ObjectMeta(name=name, labels=labels, annotations={ANN_PLAN_ID: plan_id, ANN_MODEL: m}),
            spec=k.V1ServiceSpec(type="ClusterIP", session_affinity="None",
                                 selector={LABEL_MANAGED_BY: MANAGER, LABEL_NAME: model_label[m]},
                                 ports=[k.V1ServicePort(name="http", port=SERVICE_PORT, target_port="http",
                                                        protocol="TCP")])))
        out.model_services[m] = name

    out.objects = deployments + services
    return out


def build_manifests(plan: Plan, images: Optional[ImageMap] = None, namespace: Optional[str] = None) -> list[dict]:
    """Plain dict manifests for ``plan`` (Deployments first, then Services)."""
    return build(plan, images).dicts(namespace)


def object_key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]
