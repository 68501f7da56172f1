"""Kubernetes objects of the request path, as plain dicts (what ``kubectl apply`` takes).

* :func:`gateway_objects`: the gateway's ServiceAccount, Role (read EndpointSlices, Endpoints, Services
  and the plan ConfigMap) + RoleBinding, Deployment, Service and a NetworkPolicy (ingress on the gateway port only;
  egress to the inference pods, the API server and DNS);
* :func:`triton_configmaps`: one ConfigMap per Triton-served server group with every hosted model's
  ``config.pbtxt`` (max batch size, dynamic batching delay from the plan's batch wait, instance count,
  backend thread parameters), mounted into the model repository by the serving Deployment;
* :func:`service_names`: server group -> the Service the executor creates for it (one per group, named
  like its Deployment: what the gateway watches the Endpoints of);
* :func:`plan_configmap`: the plan the gateway reads (``plan.json``, candidates left out).

Model store layout (Triton's model repository layout, also read by ``synergai serve``)::

    <store>/<model>/config.pbtxt            generated here (ConfigMap, mounted with subPath; Triton groups)
    <store>/<model>/1/model.onnx            ONNX Runtime / OpenVINO (synergai serve, Triton onnxruntime)
    <store>/<model>/1/model.plan            TensorRT engine built for the target GPU / Jetson
    <store>/<model>/1/model.pt              PyTorch (Triton libtorch backend)
"""

from __future__ import annotations

from typing import Any, Optional

from synergai.models import InputError, Plan

from .images import ImageMap
from .manifests import (
    ANN_PLAN_ID,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGER,
    RUN_AS_USER,
)


def group_assignments(plan: Plan) -> dict[str, list]:
    """Server group name -> the assignments it hosts (as ``executor.serve.group_assignments``, without
    importing the serving stack)."""
    return {srv.name: plan.assignments_of(srv.name) for srv in plan.server_groups()}


GATEWAY_NAME = "synergai-gateway"
GATEWAY_PLAN_CONFIGMAP = "synergai-gateway-plan"
GATEWAY_PORT = 8000
TOKEN_SECRET = "synergai-gateway-token"
#: engines served by NVIDIA Triton and the Triton platform/backend of each
TRITON_PLATFORMS = {"tensorrt": "tensorrt_plan", "onnxruntime-gpu": "onnxruntime_onnx", "pytorch": "pytorch_libtorch"}
MODEL_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt"}


def service_names(plan: Plan, images: Optional[ImageMap] = None) -> dict[str, str]:
    """Server group -> the name of the Service :func:`executor.manifests.build` makes for it (one per
    group, shared groups included). Cheap (no Kubernetes client, no image map): the gateway calls it
    whenever its endpoints change. ``images`` is accepted for compatibility and unused."""
    from .manifests import server_names
    from .names import dns_name

    key = (id(plan), plan.plan_id, len(plan.servers), len(plan.assignments))
    if _SERVICE_NAMES_MEMO.get("key") == key:  # one plan at a time: the gateway asks on every endpoint change
        return dict(_SERVICE_NAMES_MEMO["names"])
    try:
        names = server_names(plan)
    except InputError:  # a plan build() would reject: the same rule for the groups it names
        names = {}
    out = {g: names.get(g) or dns_name(g, kind="server") for g in group_assignments(plan)}
    _SERVICE_NAMES_MEMO.update(key=key, names=dict(out), plan=plan)  # holding the plan keeps id() unique
    return out


_SERVICE_NAMES_MEMO: dict[str, Any] = {}


def plan_configmap(plan: Plan, name: str = GATEWAY_PLAN_CONFIGMAP, namespace: Optional[str] = None) -> dict:
    """The ConfigMap the gateway reads the plan from (key ``plan.json``; the candidate list, which only
    ``explain`` uses, is left out to stay far below the 1 MiB object limit)."""
    doc = plan.model_copy(update={"candidates": [], "plan_id": plan.plan_id or plan.compute_id()})
    md: dict[str, Any] = {"name": name, "labels": _labels("gateway-plan"), "annotations": {ANN_PLAN_ID: doc.plan_id}}
    if namespace:
        md["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": md,
        "data": {"plan.json": doc.model_dump_json(indent=1) + "\n"},
    }


def _labels(component: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: MANAGER,
        LABEL_COMPONENT: component,
        LABEL_NAME: GATEWAY_NAME,
        LABEL_INSTANCE: GATEWAY_NAME,
    }


def gateway_objects(
    plan: Plan,
    *,
    namespace: Optional[str] = None,
    images: Optional[ImageMap] = None,
    replicas: int = 2,
    plan_configmap: str = "synergai-plan",
    routing: str = "synergai",
    overload: str = "sacrifice",
    api_server_ports: tuple[int, ...] = (443, 6443),
    allow_from: Optional[list[dict]] = None,
) -> list[dict]:
    """The gateway's objects. ``allow_from``: NetworkPolicy ``from`` peers (default: any client)."""
    images = images or ImageMap.default()
    img = images.resolve("gateway", "*")
    labels = _labels("gateway")
    sel = {LABEL_MANAGED_BY: MANAGER, LABEL_INSTANCE: GATEWAY_NAME}
    meta = lambda name, kind_labels=labels: {  # noqa: E731
        "name": name,
        "labels": dict(kind_labels),
        **({"namespace": namespace} if namespace else {}),
    }
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(GATEWAY_NAME),
        "automountServiceAccountToken": True,
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(GATEWAY_NAME),
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["get", "list", "watch"]},
            # server discovery: EndpointSlices first (discovery.k8s.io/v1, v1beta1 on 1.20), Endpoints fallback
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [plan_configmap],
                "verbs": ["get", "watch"],
            },
        ],
    }
    rb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(GATEWAY_NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY_NAME},
        "subjects": [
            {"kind": "ServiceAccount", "name": GATEWAY_NAME, **({"namespace": namespace} if namespace else {})}
        ],
    }
    args = [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        str(GATEWAY_PORT),
        "--plan",
        f"configmap:{plan_configmap}",
        "--kube-namespace",
        "$(POD_NAMESPACE)",
        "--routing",
        routing,
        "--overload",
        overload,
        "--token-file",
        "/var/run/secrets/synergai/token",
    ]
    probe = lambda path, period: {  # noqa: E731
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    container = {
        "name": "gateway",
        "image": img.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
        "readinessProbe": probe("/readyz", 5),
        "livenessProbe": probe("/healthz", 10),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "token", "mountPath": "/var/run/secrets/synergai", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(GATEWAY_NAME),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(sel)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": GATEWAY_NAME,
                    "containers": [container],
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumes": [
                        {"name": "token", "secret": {"secretName": TOKEN_SECRET, "optional": True}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(GATEWAY_NAME),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(sel),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    inference_pods = {"podSelector": {"matchLabels": {LABEL_MANAGED_BY: MANAGER, LABEL_COMPONENT: "inference"}}}
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(GATEWAY_NAME),
        "spec": {
            "podSelector": {"matchLabels": dict(sel)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}], **({"from": allow_from} if allow_from else {})}
            ],
            "egress": [
                {"to": [inference_pods]},  # the servers (any port they declare)
                {"ports": [{"protocol": "TCP", "port": p} for p in api_server_ports]},  # API server
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},  # DNS
            ],
        },
    }
    return [sa, role, rb, dep, svc, netpol]


# ------------------------------------------------------------------------------------------ Triton


def triton_config(model: str, config: Any, *, platform: str, instances: int = 1, kind: str = "KIND_GPU") -> str:
    """``config.pbtxt`` for one model of the plan."""
    from synergai.planner.service import batch_wait_ms

    b = int(config.batch_size)
    lines = [f'name: "{model}"', f'platform: "{platform}"', f"max_batch_size: {b}"]
    if b > 1:
        wait_us = int(round(batch_wait_ms(config) * 1000))
        lines.append("dynamic_batching {")
        lines.append(f"  preferred_batch_size: [ {b} ]")
        lines.append(f"  max_queue_delay_microseconds: {wait_us}")
        lines.append("}")
    lines.append(f"instance_group [ {{ count: {max(1, int(instances))} kind: {kind} }} ]")
    params = {"synergai_config_id": config.config_id}
    if config.threads and platform == "onnxruntime_onnx":
        params["intra_op_thread_count"] = str(config.threads)
        params["inter_op_thread_count"] = "1"
    for k, v in params.items():
        lines.append(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}')
    return "\n".join(lines) + "\n"


def triton_platform(engine: str, accelerator: str) -> Optional[str]:
    e = engine.strip().lower()
    if e == "onnxruntime" and accelerator not in ("none", "cpu", ""):
        e = "onnxruntime-gpu"
    return TRITON_PLATFORMS.get(e)


def triton_group_configs(assigns: list) -> dict[str, str]:
    """Model -> ``config.pbtxt`` for the models of one Triton-served server group (see
    :func:`executor.manifests.server_runtime`): GPU engines on ``KIND_GPU``; a CPU engine in a Triton
    group runs on Triton's ONNX Runtime backend on ``KIND_CPU`` with its threads. The model name in the
    file is Triton's directory name (:func:`executor.manifests.triton_model_name`)."""
    from synergai.planner.service import ServiceModel

    from .manifests import triton_model_name

    out = {}
    for a in assigns:
        plat = triton_platform(a.config.engine, a.config.accelerator)
        gpu = plat is not None and (a.config.accelerators > 0 or a.config.accelerator == "gpu")
        slots = ServiceModel.of(a.config).slots
        out[a.model] = triton_config(
            triton_model_name(a.model),
            a.config,
            platform=plat or "onnxruntime_onnx",
            instances=slots,
            kind="KIND_GPU" if gpu else "KIND_CPU",
        )
    return out


def triton_configmaps(plan: Plan, namespace: Optional[str] = None) -> list[dict]:
    """The ``config.pbtxt`` files of every Triton-served server group, as the ConfigMaps
    :func:`executor.manifests.build` makes (one per group, named like its Deployment, key
    ``<triton model name>.config.pbtxt`` per hosted model, mounted with ``subPath`` at
    ``/models/<triton model name>/config.pbtxt``; the same ConfigMap holds ``server.json``)."""
    from .manifests import RUNTIME_TRITON, _groups, server_names, server_runtime, triton_model_name

    names = server_names(plan)
    out = []
    for g, assigns in _groups(plan):
        if server_runtime(assigns) != RUNTIME_TRITON:
            continue
        data = {f"{triton_model_name(m)}.config.pbtxt": text for m, text in triton_group_configs(assigns).items()}
        md: dict[str, Any] = {
            "name": names[g.name],
            "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER, LABEL_COMPONENT: "server-config"},
            "annotations": {"synergai.io/server-group": g.name, ANN_PLAN_ID: plan.plan_id or plan.compute_id()},
        }
        if namespace:
            md["namespace"] = namespace
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data})
    return out


def model_file(engine: str, accelerator: str = "none") -> str:
    """File name of a model in its version directory of the store."""
    plat = triton_platform(engine, accelerator)
    return MODEL_FILES.get(plat or "onnxruntime_onnx", "model.onnx")
