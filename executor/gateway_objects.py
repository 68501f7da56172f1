"""Kubernetes objects of the request path, as plain dicts (what ``kubectl apply`` takes).

* :func:`gateway_objects`: the gateway's ServiceAccount, Role (read Endpoints, Services and the plan
  ConfigMap) + RoleBinding, Deployment, Service and a NetworkPolicy (ingress on the gateway port only;
  egress to the inference pods, the API server and DNS);
* :func:`triton_configmaps`: one ConfigMap per Triton-served server group with every hosted model's
  ``config.pbtxt`` (max batch size, dynamic batching delay from the plan's batch wait, instance count,
  backend thread parameters), mounted into the model repository by the serving Deployment;
* :func:`service_names`: server group -> the Service the executor creates for it (what the gateway
  watches the Endpoints of).

Model store layout (Triton's model repository layout, also read by ``synergai serve``)::

    <store>/<model>/config.pbtxt            generated here (ConfigMap, mounted with subPath)
    <store>/<model>/1/model.onnx            ONNX Runtime / OpenVINO (synergai serve, Triton onnxruntime)
    <store>/<model>/1/model.plan            TensorRT engine built for the target GPU / Jetson
    <store>/<model>/1/model.pt              PyTorch (Triton libtorch backend)
"""
from __future__ import annotations

from typing import Any, Optional

from synergai.models import Plan

from .images import ImageMap
from .manifests import (LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, MANAGER,
                        RUN_AS_USER)
from .serve import group_assignments

GATEWAY_NAME = "synergai-gateway"
GATEWAY_PORT = 8000
TOKEN_SECRET = "synergai-gateway-token"
#: engines served by NVIDIA Triton and the Triton platform/backend of each
TRITON_PLATFORMS = {"tensorrt": "tensorrt_plan", "onnxruntime-gpu": "onnxruntime_onnx", "pytorch": "pytorch_libtorch"}
MODEL_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt"}


def service_names(plan: Plan, images: Optional[ImageMap] = None) -> dict[str, str]:
    """Server group -> Service name, as :func:`executor.manifests.build` names them.

    TODO(issue 11): with shared server groups (``plan.servers``) the executor will emit one Service
    per group; read its name from the manifest set then.
    """
    from .manifests import build

    try:
        ms = build(plan, images)
    except Exception:  # an engine missing from the image map: fall back to the same naming rule
        ms = None
    out: dict[str, str] = {}
    for grp, assigns in group_assignments(plan).items():
        for a in assigns:
            w = ms.workload_for(a.model, a.pool, a.config.config_id) if ms else None
            if w is not None:
                out[grp] = w.service
                break
        else:
            from .names import dns_name

            out[grp] = dns_name(grp, kind="deployment")
    return out


def _labels(component: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER, LABEL_COMPONENT: component,
            LABEL_NAME: GATEWAY_NAME, LABEL_INSTANCE: GATEWAY_NAME}


def gateway_objects(plan: Plan, *, namespace: Optional[str] = None, images: Optional[ImageMap] = None,
                    replicas: int = 2, plan_configmap: str = "synergai-plan", routing: str = "synergai",
                    overload: str = "sacrifice", api_server_ports: tuple[int, ...] = (443, 6443),
                    allow_from: Optional[list[dict]] = None) -> list[dict]:
    """The gateway's objects. ``allow_from``: NetworkPolicy ``from`` peers (default: any client)."""
    images = images or ImageMap.default()
    img = images.resolve("gateway", "*")
    labels = _labels("gateway")
    sel = {LABEL_MANAGED_BY: MANAGER, LABEL_INSTANCE: GATEWAY_NAME}
    meta = lambda name, kind_labels=labels: {"name": name, "labels": dict(kind_labels),  # noqa: E731
                                             **({"namespace": namespace} if namespace else {})}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(GATEWAY_NAME),
          "automountServiceAccountToken": True}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(GATEWAY_NAME),
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [plan_configmap],
                 "verbs": ["get", "watch"]},
            ]}
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(GATEWAY_NAME),
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY_NAME},
          "subjects": [{"kind": "ServiceAccount", "name": GATEWAY_NAME,
                        **({"namespace": namespace} if namespace else {})}]}
    args = ["gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--plan", f"configmap:{plan_configmap}",
            "--kube-namespace", "$(POD_NAMESPACE)", "--routing", routing, "--overload", overload,
            "--token-file", "/var/run/secrets/synergai/token"]
    probe = lambda path, period: {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,  # noqa: E731
                                  "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": "gateway", "image": img.image, "imagePullPolicy": "IfNotPresent", "args": args,
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
        "readinessProbe": probe("/readyz", 5), "livenessProbe": probe("/healthz", 10),
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "allowPrivilegeEscalation": False, "privileged": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/synergai", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(GATEWAY_NAME),
           "spec": {"replicas": replicas, "selector": {"matchLabels": dict(sel)},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": dict(labels)},
                                 "spec": {"serviceAccountName": GATEWAY_NAME, "containers": [container],
                                          "enableServiceLinks": False,
                                          "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                                                              "fsGroup": RUN_AS_USER,
                                                              "seccompProfile": {"type": "RuntimeDefault"}},
                                          "volumes": [{"name": "token", "secret": {"secretName": TOKEN_SECRET,
                                                                                   "optional": True}},
                                                      {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta(GATEWAY_NAME),
           "spec": {"type": "ClusterIP", "selector": dict(sel),
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
    inference_pods = {"podSelector": {"matchLabels": {LABEL_MANAGED_BY: MANAGER, LABEL_COMPONENT: "inference"}}}
    netpol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(GATEWAY_NAME),
              "spec": {"podSelector": {"matchLabels": dict(sel)}, "policyTypes": ["Ingress", "Egress"],
                       "ingress": [{"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                                    **({"from": allow_from} if allow_from else {})}],
                       "egress": [
                           {"to": [inference_pods]},                         # the servers (any port they declare)
                           {"ports": [{"protocol": "TCP", "port": p} for p in api_server_ports]},  # API server
                           {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},  # DNS
                       ]}}
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


def triton_configmaps(plan: Plan, namespace: Optional[str] = None) -> list[dict]:
    """One ConfigMap per server group that Triton serves: key ``<model>.config.pbtxt`` per hosted model
    (mount each with ``subPath`` at ``/models/<model>/config.pbtxt``)."""
    from synergai.planner.service import ServiceModel

    from .names import dns_name

    out = []
    for grp, assigns in sorted(group_assignments(plan).items()):
        data = {}
        for a in assigns:
            plat = triton_platform(a.config.engine, a.config.accelerator)
            if plat is None:
                continue
            slots = ServiceModel.of(a.config).slots
            kind = "KIND_GPU" if a.config.accelerators > 0 or a.config.accelerator == "gpu" else "KIND_CPU"
            data[f"{a.model}.config.pbtxt"] = triton_config(a.model, a.config, platform=plat, instances=slots, kind=kind)
        if not data:
            continue
        name = dns_name(f"{grp}-triton", kind="configmap")
        md: dict[str, Any] = {"name": name, "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER,
                                                        LABEL_COMPONENT: "model-config"},
                              "annotations": {"synergai.io/server-group": grp,
                                              "synergai.io/plan-id": plan.plan_id or plan.compute_id()}}
        if namespace:
            md["namespace"] = namespace
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data})
    return out


def model_file(engine: str, accelerator: str = "none") -> str:
    """File name of a model in its version directory of the store."""
    plat = triton_platform(engine, accelerator)
    return MODEL_FILES.get(plat or "onnxruntime_onnx", "model.onnx")
