"""Profile every node pool from inside the cluster: one Kubernetes Job per pool, results in ConfigMaps.

* :func:`build_objects` -> a ServiceAccount + Role + RoleBinding (the profiler may read/write ConfigMaps in
  its namespace, nothing else) and one ``batch/v1`` Job per pool.  Each Job's pod is pinned like the serving
  Deployments (``kubernetes.io/arch`` + the pool's labels: :func:`executor.manifests.pool_node_selector`) and
  hardened the same way (non-root uid 65532, read-only root filesystem with an ``emptyDir`` on ``/tmp``, all
  capabilities dropped, no privilege escalation, RuntimeDefault seccomp).  It runs::

      synergai profile --quick --engine all --device <pool.device> --out /tmp/p.csv \
                       --publish-configmap synergai-profile-<pool> --pool <pool>

  i.e. the quick grid on the pool's node, then writes the CSV (and the measurement sidecar when it fits) into
  the ConfigMap ``synergai-profile-<pool>``.  The pod asks for whole cores with limits = requests (Guaranteed
  QoS: with the kubelet's static CPU manager it gets exclusive cores, so serving pods do not disturb it).
* :func:`publish` (inside the pod) writes the ConfigMap, refusing clearly when it would exceed the 1 MiB
  ConfigMap limit.
* :func:`collect` (outside) reads every profiler ConfigMap back, validates each record on its own, merges the
  valid ones (newer measurement wins on duplicate keys) and rejects malformed ones with a one-line reason.

Kubernetes access uses the official ``kubernetes`` client; nothing here needs kubectl.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from synergai.models import ClusterSpec, InputError, NodePool
from synergai.models.profiles import COLUMNS, REQUIRED, ProfileRecord, ProfileTable

from .manifests import RUN_AS_USER, cpu_quantity, memory_quantity, pool_node_selector
from .names import dns_name, is_dns1035_label, label_value_error

#: ConfigMaps (data + binaryData, keys included) may hold at most 1 MiB.
CONFIGMAP_MAX_BYTES = 1024 * 1024
CSV_KEY = "profiles.csv"
META_KEY = "meta.jsonl"

PROFILER = "synergai-profiler"  # ServiceAccount / Role / RoleBinding name
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_POOL = "synergai.io/pool"
ANN_POOL = "synergai.io/pool-name"
ANN_DEVICE = "synergai.io/device"
ANN_META = "synergai.io/meta"
COMPONENT = "profiler"
SELECTOR = f"{LABEL_MANAGED_BY}=synergai,{LABEL_COMPONENT}={COMPONENT}"
DEFAULT_IMAGE = "synergai/profiler:{version}"
OUT_IN_POD = "/tmp/p.csv"
ACTIVE_DEADLINE_S = 3600


class ProfileJobError(Exception):
    """Publishing or collecting failed; ``str()`` is one line."""


# ------------------------------------------------------------------------------------------------ names
def object_name(pool: str) -> str:
    """``synergai-profile-<pool>`` (Job and ConfigMap), hashed when the pool name is not a valid DNS label."""
    n = f"synergai-profile-{pool}"
    if is_dns1035_label(n):
        return n
    return dns_name("synergai-profile", pool, kind="profile")


def pool_label(pool: str) -> str:
    return pool if label_value_error(pool) is None and pool else dns_name(pool, kind="pool")


def _version() -> str:
    try:
        from synergai import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "latest"


def image_for(pool: NodePool, images: Any = None, image: Optional[str] = None) -> str:
    """``image`` if given; else the image map's ``profiler`` entry for the pool's architecture; else the default."""
    if image:
        return image
    try:
        from .images import ImageMap

        m = images if images is not None else ImageMap.default()
        return m.resolve("profiler", pool.architecture).image
    except (InputError, ImportError, OSError):
        return DEFAULT_IMAGE.format(version=_version())


# -------------------------------------------------------------------------------------------- manifests
def _labels(pool: Optional[NodePool] = None) -> dict[str, str]:
    d = {LABEL_MANAGED_BY: "synergai", LABEL_COMPONENT: COMPONENT}
    if pool is not None:
        d[LABEL_POOL] = pool_label(pool.name)
    return d


def rbac_objects(namespace: Optional[str] = None) -> list[dict]:
    md = {"name": PROFILER, "labels": _labels()}
    if namespace:
        md["namespace"] = namespace
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(md)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": dict(md),
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "patch"]}],
    }
    rb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": dict(md),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROFILER},
        "subjects": [{"kind": "ServiceAccount", "name": PROFILER, **({"namespace": namespace} if namespace else {})}],
    }
    return [sa, role, rb]


def profiler_args(pool: NodePool, *, engines: str = "all", extra: Optional[list[str]] = None) -> list[str]:
    return [
        "synergai",
        "profile",
        "--quick",
        "--engine",
        engines,
        "--device",
        pool.device,
        "--out",
        OUT_IN_POD,
        "--publish-configmap",
        object_name(pool.name),
        "--pool",
        pool.name,
        *(extra or []),
    ]


def job_object(
    pool: NodePool,
    *,
    image: str,
    namespace: Optional[str] = None,
    engines: str = "all",
    extra_args: Optional[list[str]] = None,
    memory_mb: Optional[float] = None,
) -> dict:
    """The Job profiling ``pool`` (a plain dict manifest)."""
    sel = pool_node_selector(pool)
    cores = max(1, math.floor(pool.cpu + 1e-9))
    mem = memory_mb if memory_mb is not None else max(512.0, min(4096.0, pool.memory_mb * 0.5))
    res = {"cpu": cpu_quantity(cores), "memory": memory_quantity(mem)}
    name = object_name(pool.name)
    labels = _labels(pool)
    ann = {ANN_POOL: pool.name, ANN_DEVICE: pool.device}
    md: dict[str, Any] = {"name": name, "labels": dict(labels), "annotations": dict(ann)}
    if namespace:
        md["namespace"] = namespace
    container = {
        "name": "profiler",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": profiler_args(pool, engines=engines, extra=extra_args)[:1],
        "args": profiler_args(pool, engines=engines, extra=extra_args)[1:],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "SYNERGAI_CACHE", "value": "/tmp/synergai"},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "SYNERGAI_POOL", "value": pool.name},
        ],
        "resources": {"requests": dict(res), "limits": dict(res)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = {
        "restartPolicy": "Never",
        "serviceAccountName": PROFILER,
        "automountServiceAccountToken": True,  # it writes its ConfigMap through the API
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "nodeSelector": sel,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": md,
        "spec": {
            "backoffLimit": 1,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_S,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(ann)}, "spec": pod},
        },
    }


def build_objects(
    cluster: ClusterSpec,
    *,
    namespace: Optional[str] = None,
    images: Any = None,
    image: Optional[str] = None,
    engines: str = "all",
    extra_args: Optional[list[str]] = None,
    pools: Optional[list[str]] = None,
) -> list[dict]:
    """RBAC objects then one Job per pool (pools with ``nodes == 0`` are skipped: nothing to run on)."""
    chosen = cluster.pools
    if pools:
        known = {p.name for p in cluster.pools}
        for p in pools:
            if p not in known:
                raise InputError(
                    f"pool {p!r} is not in the cluster (pools: {', '.join(sorted(known))})", field="--pool"
                )
        chosen = [p for p in cluster.pools if p.name in pools]
    out = rbac_objects(namespace)
    names: dict[str, str] = {}
    for p in chosen:
        if p.nodes == 0:
            continue
        n = object_name(p.name)
        if n in names:
            raise InputError(f"pools {names[n]!r} and {p.name!r} map to the same Job name {n}", field="pools.name")
        names[n] = p.name
        out.append(
            job_object(
                p, image=image_for(p, images, image), namespace=namespace, engines=engines, extra_args=extra_args
            )
        )
    return out


def write_manifests(objs: list[dict], out_dir: Path) -> list[Path]:
    """One YAML file per object (``00-rbac-*.yaml``, then ``job-<name>.yaml``)."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, o in enumerate(objs):
        kind, name = o["kind"], o["metadata"]["name"]
        fn = f"00-{kind.lower()}-{name}.yaml" if kind != "Job" else f"job-{name}.yaml"
        p = out_dir / fn
        p.write_text(yaml.safe_dump(o, sort_keys=False))
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------- client
def api_client(kubeconfig: Optional[str] = None):
    """ApiClient from ``kubeconfig``, else in-cluster, else the default kubeconfig; one-line errors."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig:
            if not Path(kubeconfig).exists():
                raise InputError("file not found", file=str(kubeconfig), field="--kubeconfig")
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(client_configuration=cfg)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"cannot load Kubernetes configuration: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            field="--kubeconfig",
        ) from None
    cfg.client_side_validation = False
    if not cfg.verify_ssl:
        try:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        except Exception:  # pragma: no cover
            pass
    return client.ApiClient(cfg)


def pod_namespace() -> str:
    ns = os.environ.get("POD_NAMESPACE")
    if ns:
        return ns
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if p.exists():
        return p.read_text().strip() or "default"
    return "default"


def _api_error(e: Exception) -> str:
    body = getattr(e, "body", None)
    msg = ""
    if body:
        try:
            msg = json.loads(body).get("message", "")
        except (ValueError, TypeError, AttributeError):
            msg = str(body)
    status = getattr(e, "status", None)
    return f"HTTP {status}: {' '.join((msg or str(e)).split())}" if status else " ".join(str(e).split())


def apply_objects(api, objs: list[dict], namespace: str, *, replace_jobs: bool = False) -> list[str]:
    """Create the objects (existing RBAC is left alone; an existing Job is kept unless ``replace_jobs``).

    Returns one line per object saying what happened.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core, rbac, batch = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.BatchV1Api(api)
    create = {
        "ServiceAccount": core.create_namespaced_service_account,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
        "Job": batch.create_namespaced_job,
    }
    lines = []
    for o in objs:
        o = json.loads(json.dumps(o))
        o["metadata"]["namespace"] = namespace
        for s in o.get("subjects", []):
            s["namespace"] = namespace
        kind, name = o["kind"], o["metadata"]["name"]
        fn = create.get(kind)
        if fn is None:
            raise InputError(f"cannot apply kind {kind}")
        try:
            fn(namespace, o)
            lines.append(f"created {kind}/{name}")
        except ApiException as e:
            if e.status != 409:
                raise ProfileJobError(f"create {kind}/{name} in {namespace}: {_api_error(e)}") from None
            if kind == "Job" and replace_jobs:
                batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
                import time

                for _ in range(50):
                    try:
                        fn(namespace, o)
                        break
                    except ApiException as e2:
                        if e2.status != 409:
                            raise ProfileJobError(f"re-create {kind}/{name}: {_api_error(e2)}") from None
                        time.sleep(0.2)
                else:
                    raise ProfileJobError(f"re-create {kind}/{name}: the old Job is still being deleted")
                lines.append(f"replaced {kind}/{name}")
            else:
                lines.append(f"exists  {kind}/{name} (kept{'; pass --replace to re-run it' if kind == 'Job' else ''})")
    return lines


# ---------------------------------------------------------------------------------------------- publish
def configmap_object(name: str, pool: str, device: str, csv_text: str, meta_text: Optional[str] = None) -> dict:
    """The ConfigMap holding one pool's profiles; raises ProfileJobError when the CSV alone is over 1 MiB.

    The measurement sidecar (``meta.jsonl``) is included only when it still fits; otherwise the
    ``synergai.io/meta`` annotation says it was left out.
    """

    def size(d: dict) -> int:
        return sum(len(k.encode()) + len(v.encode()) for k, v in d.items())

    data = {CSV_KEY: csv_text}
    if size(data) > CONFIGMAP_MAX_BYTES:
        raise ProfileJobError(
            f"profiles of pool {pool!r} are {size(data)} bytes; a ConfigMap holds at most "
            f"{CONFIGMAP_MAX_BYTES} bytes (1 MiB): profile fewer configurations (--budget, --quick)"
        )
    ann = {ANN_POOL: pool, ANN_DEVICE: device}
    if meta_text:
        if size(data) + len(META_KEY) + len(meta_text.encode()) <= CONFIGMAP_MAX_BYTES:
            data[META_KEY] = meta_text
            ann[ANN_META] = "included"
        else:
            ann[ANN_META] = "omitted: over the 1 MiB ConfigMap limit"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {**_labels(), LABEL_POOL: pool_label(pool)}, "annotations": ann},
        "data": data,
    }


def publish(api, csv_path: Path, *, name: str, pool: str, device: str, namespace: str) -> str:
    """Write ``csv_path`` (and its ``.meta.jsonl``) into ConfigMap ``name``; returns a one-line summary."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    csv_path = Path(csv_path)
    text = csv_path.read_text(encoding="utf-8")
    meta_path = csv_path.with_name(csv_path.name + ".meta.jsonl")
    meta = meta_path.read_text(encoding="utf-8") if meta_path.exists() else None
    cm = configmap_object(name, pool, device, text, meta)
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_config_map(namespace, cm)
        verb = "created"
    except ApiException as e:
        if e.status != 409:
            raise ProfileJobError(f"create ConfigMap {namespace}/{name}: {_api_error(e)}") from None
        try:
            core.replace_namespaced_config_map(name, namespace, cm)
        except ApiException as e2:
            raise ProfileJobError(f"replace ConfigMap {namespace}/{name}: {_api_error(e2)}") from None
        verb = "replaced"
    n = max(0, text.count("\n") - 1)
    return (
        f"{verb} ConfigMap {namespace}/{name}: {n} records, {sum(len(v.encode()) for v in cm['data'].values())} bytes"
    )


# ---------------------------------------------------------------------------------------------- collect
@dataclass
class Collected:
    table: Optional[ProfileTable]
    accepted: dict[str, int] = field(default_factory=dict)  # configmap name -> records kept
    rejected: list[str] = field(default_factory=list)  # one line each
    missing: list[str] = field(default_factory=list)  # pools without a ConfigMap (with job state)


def parse_configmap(cm: dict, pools: Optional[dict[str, NodePool]] = None) -> tuple[list[ProfileRecord], list[str]]:
    """Valid records of one profiler ConfigMap and a one-line reason per rejected record (or for the whole map)."""
    import pandas as pd

    md = cm.get("metadata") or {}
    name = md.get("name", "?")
    ann = md.get("annotations") or {}
    pool = ann.get(ANN_POOL)
    where = f"configmap {md.get('namespace', '')}/{name}".replace(" /", " ")
    data = cm.get("data") or {}
    text = data.get(CSV_KEY)
    if text is None:
        return [], [f"{where}: no {CSV_KEY} key"]
    if not text.strip():
        return [], [f"{where}: {CSV_KEY} is empty"]
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:
        return [], [f"{where}: {CSV_KEY}: not a CSV table ({' '.join(str(e).split())[:160]})"]
    cols = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        return [], [f"{where}: {CSV_KEY}: missing column(s) {', '.join(missing)}"]
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        return [], [f"{where}: {CSV_KEY}: unknown column(s) {', '.join(unknown)}"]
    expect = None
    if pools is not None and pool is not None:
        if pool not in pools:
            return [], [f"{where}: pool {pool!r} is not in the cluster"]
        expect = pools[pool]
    good, bad = [], []
    for i in range(len(df)):
        row = i + 2
        try:
            t = ProfileTable.from_frame(df.iloc[[i]], source=CSV_KEY)
        except InputError as e:
            fld = f"{e.field}: " if e.field else ""
            bad.append(f"{where}: {CSV_KEY} row {row}: {fld}{e.message.removeprefix('Value error, ')}")
            continue
        r = t.records[0]
        if expect is not None and r.device != expect.device:
            bad.append(
                f"{where}: {CSV_KEY} row {row}: device: {r.device!r} is not pool {pool!r}'s device {expect.device!r}"
            )
            continue
        if expect is not None and r.architecture != expect.architecture:
            bad.append(
                f"{where}: {CSV_KEY} row {row}: architecture: {r.architecture!r} is not pool {pool!r}'s "
                f"architecture {expect.architecture!r}"
            )
            continue
        good.append(r)
    return good, bad


def collect(api, namespace: str, cluster: Optional[ClusterSpec] = None) -> Collected:
    """Read every profiler ConfigMap in ``namespace``; merge valid records, reject malformed ones."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api)
    try:
        resp = api.sanitize_for_serialization(core.list_namespaced_config_map(namespace, label_selector=SELECTOR))
    except ApiException as e:
        raise ProfileJobError(f"list ConfigMaps in {namespace}: {_api_error(e)}") from None
    items = (resp or {}).get("items", [])
    pools = {p.name: p for p in cluster.pools} if cluster else None
    out = Collected(table=None)
    recs: list[ProfileRecord] = []
    seen_pools = set()
    for cm in sorted(items, key=lambda c: c["metadata"]["name"]):
        cm["metadata"].setdefault("namespace", namespace)
        good, bad = parse_configmap(cm, pools)
        out.rejected.extend(bad)
        out.accepted[cm["metadata"]["name"]] = len(good)
        recs.extend(good)
        pool = (cm["metadata"].get("annotations") or {}).get(ANN_POOL)
        if pool:
            seen_pools.add(pool)
    if cluster is not None:
        states = job_states(api, namespace)
        for p in cluster.pools:
            if p.nodes > 0 and p.name not in seen_pools:
                st = states.get(object_name(p.name), "no Job")
                out.missing.append(f"pool {p.name}: no profile ConfigMap yet ({st})")
    if recs:
        out.table = ProfileTable(recs, source=f"configmaps:{namespace}", on_duplicate="newest")
    return out


def job_states(api, namespace: str) -> dict[str, str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        resp = api.sanitize_for_serialization(
            client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=SELECTOR)
        )
    except ApiException:
        return {}
    out = {}
    for j in (resp or {}).get("items", []):
        st = j.get("status") or {}
        if st.get("succeeded"):
            s = "job succeeded"
        elif st.get("failed") and not st.get("active"):
            s = f"job failed {st.get('failed')} time(s)"
        elif st.get("active"):
            s = "job running"
        else:
            s = "job pending"
        out[j["metadata"]["name"]] = s
    return out
