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
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from synergai.models import Assignment, InputError, NodePool, Plan
from synergai.models.plan import Server

from .images import ImageMap, ResolvedImage
from .names import Namer, dns_name, is_dns1123_subdomain, label_key_error, label_value_error

MANAGER = "synergai"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"  # the model (sanitised)
LABEL_INSTANCE = "app.kubernetes.io/instance"  # the deployment (model, pool[, config])
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_POOL = "synergai.io/pool"  # pool (sanitised) on pods/objects; raw pool name on nodes
LABEL_TIER = "synergai.io/tier"
LABEL_DEVICE = "synergai.io/device"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_SERVER = "synergai.io/server"  # the server group (its plan name, or a sanitised form)
LABEL_SHARED = "synergai.io/shared"  # "true" when the group's servers host several models
MODEL_LABEL_PREFIX = "model.synergai.io"  # model.synergai.io/<model label>: serving, per hosted model

ANN_PLAN_ID = "synergai.io/plan-id"
ANN_MODEL = "synergai.io/model"
ANN_POOL = "synergai.io/pool-name"
ANN_CONFIG = "synergai.io/config-id"
ANN_ENGINE = "synergai.io/engine"
ANN_SERVER = "synergai.io/server-group"
ANN_MODELS = "synergai.io/models"  # JSON list of the hosted models (raw names)
ANN_RUNTIME = "synergai.io/runtime"  # triton | synergai-serve
ANN_CONFIG_HASH = "synergai.io/config-hash"  # hash of the server ConfigMap's data (pod template: rolls pods)

SERVICE_PORT = 80
CONTAINER_NAME = "server"
RUN_AS_USER = 65532  # "nonroot" in distroless images

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
#: plan-derived objects (what prune may delete): never the gateway's objects nor anything without a component
PLAN_COMPONENTS = ("inference", "model-endpoint", "server-config")
PRUNE_SELECTOR = f"{MANAGED_SELECTOR},{LABEL_COMPONENT} in ({','.join(PLAN_COMPONENTS)})"


@dataclass
class Workload:
    """One model on one server group: the Deployment (and Service) that serves it. A shared group's
    Deployment appears once per hosted model."""

    name: str
    model: str
    pool: str
    config_id: str
    replicas: int
    service: str
    server: str = ""


@dataclass
class ServerWorkload:
    """One server group of the plan: its Deployment, Service and ConfigMap (all named ``name``)."""

    name: str
    server: str
    pool: str
    replicas: int
    shared: bool
    standby: bool
    models: list[str]
    runtime: str
    image: str
    service: str
    configmap: str


@dataclass
class ManifestSet:
    plan_id: str
    objects: list[Any] = field(default_factory=list)  # typed kubernetes client models
    workloads: list[Workload] = field(default_factory=list)
    servers: list[ServerWorkload] = field(default_factory=list)
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
                if d["kind"] == "RoleBinding":  # a ServiceAccount subject names its namespace
                    for sub in d.get("subjects") or []:
                        if sub.get("kind") == "ServiceAccount":
                            sub["namespace"] = namespace
        return out

    def server_for(self, group: str) -> Optional[ServerWorkload]:
        return next((s for s in self.servers if s.server == group), None)

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
        raise InputError(
            f"pool {pool.name!r}: label {LABEL_ARCH}={labels[LABEL_ARCH]!r} contradicts its "
            f"architecture {pool.architecture!r}",
            field="pools.labels",
        )
    sel.update(labels)
    return sel


# ------------------------------------------------------------------------------------------ server groups

RUNTIME_TRITON = "triton"
RUNTIME_SERVE = "synergai-serve"
SERVER_CONFIG_DIR = "/etc/synergai"
SERVER_CONFIG_KEY = "server.json"
SERVER_CONFIG_SCHEMA = "synergai.server/v1"
MODEL_STORE_DIR = "/models"
_SAFE_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")

#: KServe's storage initializer (an init container that downloads ``SRC_URI`` into ``DEST_DIR``); an image
#: map entry ``storage-initializer`` (per architecture) overrides it
STORAGE_INITIALIZER_KEY = "storage-initializer"
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.16.0"
STORAGE_INITIALIZER_NAME = "storage-initializer"
#: the URI schemes the storage initializer downloads (KServe's ClusterStorageContainer ``default``); Azure
#: Blob / File Share are ``https://<account>.blob|file.core.windows.net/...``
OBJECT_SCHEMES = ("s3", "gs", "https", "http", "hdfs", "webhdfs", "hf")
#: schemes whose URI is a prefix (a directory): a store ``<uri>`` holds ``<uri>/<model>/1/...``; the others
#: name one archive (http/https: a .tar.gz / .tgz / .zip, unpacked) or one repository (hf)
PREFIX_SCHEMES = ("s3", "gs", "hdfs", "webhdfs")
#: KServe's GCS convention: the service account key file in the Secret, mounted at /var/secrets/
GCS_CREDENTIALS_KEY = "gcloud-application-credentials.json"
GCS_CREDENTIALS_DIR = "/var/secrets"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_STORE_FORMS = (
    "pvc:CLAIM, hostpath:/DIR, none, or an object storage URI (" + ", ".join(f"{s}://" for s in OBJECT_SCHEMES) + ")"
)


def _object_uri_error(uri: str) -> Optional[str]:
    """Why ``uri`` is not a URI the storage initializer can download, or None."""
    from urllib.parse import urlsplit

    scheme, sep, rest = uri.partition("://")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme.lower()):
        return f"not a URI (expected {', '.join(f'{s}://' for s in OBJECT_SCHEMES)})"
    if scheme.lower() not in OBJECT_SCHEMES:
        return f"unknown scheme {scheme!r} (known: {', '.join(OBJECT_SCHEMES)})"
    if scheme != scheme.lower():
        return f"write the scheme in lower case ({scheme.lower()}://)"
    if _BAD_CHARS.search(uri):
        return "contains whitespace or control characters"
    if "@" in rest.split("/", 1)[0]:
        return "credentials in the URI: put them in a Secret (--model-store-secret)"
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket):
            return f"bucket {bucket!r} is not a valid bucket name (3-222 characters: a-z 0-9 . _ -)"
        if any(seg in (".", "..") for seg in key.split("/")):
            return "'.' or '..' in the object path"
        return None
    if scheme == "hf":
        repo = rest.split(":", 1)[0].split("/")
        if len(repo) != 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in repo):
            return "expected hf://OWNER/REPO[:REVISION]"
        return None
    parts = urlsplit(uri)
    if not parts.netloc or not _HOST.match(parts.netloc):
        return f"host {parts.netloc!r} is not a host name"
    if parts.path.strip("/") == "":
        return "no path after the host"
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        return "'.' or '..' in the path"
    return None


@dataclass(frozen=True)
class ModelStore:
    """Where model files live.

    As ``--model-store`` (a store: ``<store>/<model>/1/model.onnx|model.plan|model.pt``): ``pvc:CLAIM`` (a
    PersistentVolumeClaim in the namespace), ``hostpath:/DIR`` (a directory on every node of the pool, e.g. on
    edge boards), ``none`` (no volume: the image carries the models), or an object storage URI that KServe's
    storage initializer downloads in an init container (``s3://BUCKET/PREFIX``, ``gs://``, ``hdfs://``,
    ``webhdfs://``: ``<prefix>/<model>`` per hosted model; ``https://``, ``http://``: one archive of the whole
    store; ``hf://``: one repository holding the whole store).

    As a ``--model-stores`` entry (one model's directory, holding ``1/model.*``): ``pvc:CLAIM``,
    ``hostpath:/DIR`` or any object storage URI (for ``https://`` an archive of the directory)."""

    kind: str = "hostpath"  # hostpath | pvc | none | object
    target: str = "/var/lib/synergai/models"  # host directory, claim name or URI

    @classmethod
    def parse(cls, spec: Any, field: str = "--model-store", file: Optional[str] = None) -> ModelStore:
        where = {"field": field, "file": file}
        if not isinstance(spec, str):
            raise InputError(f"expected a string ({_STORE_FORMS}), got {type(spec).__name__}", **where)
        text = spec.strip()
        if "://" in text:
            err = _object_uri_error(text)
            if err:
                raise InputError(f"model store {spec!r}: {err}", **where)
            return cls("object", text)
        kind, sep, target = text.partition(":")
        kind = kind.lower()
        if kind == "none" and not sep:
            return cls("none", "")
        if kind == "pvc" and target and is_dns1123_subdomain(target):
            return cls("pvc", target)
        if kind == "hostpath" and target.startswith("/") and ".." not in target.split("/"):
            return cls("hostpath", target)
        raise InputError(f"model store {spec!r}: expected {_STORE_FORMS}", **where)

    @property
    def scheme(self) -> str:
        return self.target.partition("://")[0] if self.kind == "object" else ""

    def volume(self, name: str = "model-store") -> Any:
        if self.kind == "pvc":
            return k.V1Volume(
                name=name,
                persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(claim_name=self.target, read_only=True),
            )
        if self.kind == "hostpath":
            return k.V1Volume(name=name, host_path=k.V1HostPathVolumeSource(path=self.target, type="Directory"))
        if self.kind == "object":  # the storage initializer downloads into it; no size limit (models are large)
            return k.V1Volume(name=name, empty_dir=k.V1EmptyDirVolumeSource())
        return None


DEFAULT_MODEL_STORE = ModelStore()


@dataclass(frozen=True)
class ModelStoreMap:
    """``--model-stores FILE``: model -> the :class:`ModelStore` of that model's own directory (YAML or JSON
    ``{model: URI}``); models not in it come from ``--model-store``."""

    entries: dict[str, ModelStore] = field(default_factory=dict)
    source: str = "--model-stores"

    @classmethod
    def load(cls, path: Any) -> ModelStoreMap:
        from synergai.models.cluster import load_structured

        name = str(path)
        data = load_structured(path)
        if not isinstance(data, dict):
            raise InputError(
                f"expected a mapping model: URI, got {type(data).__name__}", file=name, field="--model-stores"
            )
        return cls.of(data, source=name)

    @classmethod
    def of(cls, data: dict, source: str = "--model-stores") -> ModelStoreMap:
        out = {}
        for model, spec in data.items():
            if not isinstance(model, str) or not model.strip():
                raise InputError(f"model name {model!r} is not a non-empty string", file=source, field=str(model))
            st = ModelStore.parse(spec, field=model, file=source)
            if st.kind == "none":
                raise InputError(
                    "'none' is not a model's directory: leave the model out to use --model-store",
                    file=source,
                    field=model,
                )
            out[model] = st
        return cls(out, source)


@dataclass(frozen=True)
class _Source:
    """Where one hosted model's directory is: ``sub_path`` inside volume ``volume`` ('' = the volume's root);
    ``fetch``: the (URI, destination) the storage initializer downloads it with."""

    volume: str
    sub_path: str
    fetch: Optional[tuple[str, str]] = None


DOWNLOAD_VOLUME = "model-download"


def _is_safe_relpath(p: str) -> bool:
    return bool(p) and not p.startswith("/") and all(s not in ("", ".", "..") for s in p.split("/"))


def model_sources(
    assigns: list[Assignment], store: ModelStore, stores: Optional[ModelStoreMap]
) -> tuple[dict[str, Optional[_Source]], dict[str, ModelStore]]:
    """Per hosted model its :class:`_Source` (None: the image carries it), and the volumes they need
    (name -> store; an object store's volume is the download ``emptyDir``)."""
    entries = stores.entries if stores else {}
    dl = "model-store" if store.kind == "object" else DOWNLOAD_VOLUME
    out: dict[str, Optional[_Source]] = {}
    volumes: dict[str, ModelStore] = {}
    for a in assigns:
        m = a.model
        st = entries.get(m)
        if st is None and store.kind == "none":
            out[m] = None
            continue
        if (st is not None or store.kind == "object") and not _is_safe_relpath(m):
            raise InputError(
                f"model {m!r}: its name is not a directory name in the model store ('', '.' or '..' in it)",
                file=stores.source if st is not None and stores else None,
                field=m if st is not None else "--model-store",
            )
        if st is None:  # the store named by --model-store: <store>/<model>
            if store.kind == "object":
                if store.scheme in PREFIX_SCHEMES:
                    fetch = (f"{store.target.rstrip('/')}/{m}", f"{MODEL_STORE_DIR}/{m}")
                else:  # one archive / repository holding the whole store
                    fetch = (store.target, MODEL_STORE_DIR)
                out[m] = _Source(dl, m, fetch)
                volumes[dl] = store
            else:
                out[m] = _Source("model-store", m)
                volumes["model-store"] = store
        elif st.kind == "object":  # the model's own directory, downloaded into <store>/<model>
            out[m] = _Source(dl, m, (st.target, f"{MODEL_STORE_DIR}/{m}"))
            volumes[dl] = ModelStore("object", "")
        else:  # a claim / host directory that is the model's directory
            vol = "model-src-" + hashlib.sha256(f"{st.kind}:{st.target}".encode()).hexdigest()[:10]
            out[m] = _Source(vol, "")
            volumes[vol] = st
    if None in out.values() and any(out.values()):
        m = next(m for m, s in out.items() if s is None)
        raise InputError(
            f"model {m!r} has no model store (--model-store none: the image carries it) but shares its server "
            f"with models from --model-stores, which hide the image's {MODEL_STORE_DIR}; give it an entry",
            file=stores.source if stores else None,
            field=m,
        )
    return out, volumes


def storage_initializers(
    sources: dict[str, Optional[_Source]], image: str, secret: Optional[str], mounts_tmp: Any
) -> tuple[list[Any], list[Any]]:
    """The init containers that download a pod's models (one per (URI, destination), KServe's
    ``[SRC_URI, DEST_DIR]`` convention, which every version of its entrypoint takes) and the extra volumes
    they need (the Secret of GCS credentials)."""
    fetches = sorted({(s.volume, *s.fetch) for s in sources.values() if s is not None and s.fetch})
    fetches.sort(key=lambda f: (f[2], f[1]))  # a whole-store archive into /models before per-model directories
    inits, volumes = [], []
    for i, (vol, uri, dest) in enumerate(fetches):
        env = [k.V1EnvVar(name="HOME", value="/tmp")]  # read-only root filesystem: caches go to /tmp
        mounts = [k.V1VolumeMount(name=vol, mount_path=MODEL_STORE_DIR), mounts_tmp]
        if secret and uri.startswith("gs://"):  # KServe's convention: the key file from the Secret
            env.append(
                k.V1EnvVar(name="GOOGLE_APPLICATION_CREDENTIALS", value=f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}")
            )
            mounts.append(
                k.V1VolumeMount(name="model-store-credentials", mount_path=GCS_CREDENTIALS_DIR, read_only=True)
            )
            if not volumes:
                volumes.append(
                    k.V1Volume(name="model-store-credentials", secret=k.V1SecretVolumeSource(secret_name=secret))
                )
        inits.append(
            k.V1Container(
                name=STORAGE_INITIALIZER_NAME if len(fetches) == 1 else f"{STORAGE_INITIALIZER_NAME}-{i}",
                image=image,
                image_pull_policy="IfNotPresent",
                args=[uri, dest],
                env=env,
                env_from=[k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name=secret))] if secret else None,
                # KServe's defaults for its storage initializer
                resources=k.V1ResourceRequirements(
                    requests={"cpu": "100m", "memory": "100Mi"}, limits={"cpu": "1", "memory": "1Gi"}
                ),
                security_context=_container_security(),
                volume_mounts=mounts,
                termination_message_policy="FallbackToLogsOnError",
            )
        )
    return inits, volumes


def storage_initializer_image(images: ImageMap, architecture: str) -> str:
    """The storage initializer's image: the image map's ``storage-initializer`` entry, else KServe's."""
    if STORAGE_INITIALIZER_KEY in images.engines():
        return images.resolve(STORAGE_INITIALIZER_KEY, architecture).image
    return STORAGE_INITIALIZER_IMAGE


def is_triton_config(cfg: Any) -> bool:
    """True when NVIDIA Triton serves this configuration (GPU and Jetson engines: TensorRT, PyTorch,
    ONNX Runtime on a GPU)."""
    from .gateway_objects import triton_platform

    return triton_platform(cfg.engine, cfg.accelerator) is not None


def runtime_engine(cfg: Any) -> str:
    """The image map key of a configuration: its engine, ``onnxruntime-gpu`` for ONNX Runtime on a GPU."""
    e = cfg.engine.strip().lower()
    if e == "onnxruntime" and cfg.accelerator not in ("none", "cpu", ""):
        return "onnxruntime-gpu"
    return e


def triton_model_name(model: str) -> str:
    """Triton's model (directory) name for a plan model: the name itself when it is a safe path segment,
    else a readable slug with a hash (``server.json`` records it as ``runtime_name``)."""
    return model if _SAFE_DIR.match(model) and model not in (".", "..") else dns_name(model, kind="triton-model")


def runtime_model_name(model: str, runtime: str) -> str:
    """The name a server of a group with ``runtime`` serves ``model`` under (``server.json``'s
    ``runtime_name``, what the gateway forwards to): :func:`triton_model_name` on Triton, else the model."""
    return triton_model_name(model) if runtime == RUNTIME_TRITON else model


def server_runtime(assigns: list[Assignment]) -> str:
    """The runtime of a server group (one process, so one runtime for every hosted model):

    * every hosted configuration on a Triton engine (GPU / Jetson) -> Triton;
    * none -> ``synergai serve`` (CPU engines);
    * mixed -> Triton: it serves the CPU configurations with its ONNX Runtime backend on the CPU
      (``KIND_CPU``, the configuration's threads) from the model's ONNX export, like ``synergai/serve``
      serves TFLite / Arm NN profiles; their profile is then an approximation of what runs.
    """
    return RUNTIME_TRITON if any(is_triton_config(a.config) for a in assigns) else RUNTIME_SERVE


def server_config(group: Server, assigns: list[Assignment], runtime: str) -> dict:
    """The ``server.json`` of a server group: what every server of the group loads and how.

    Only what the runtime needs: a new plan that leaves a group's models and configurations alone
    leaves this document (and so the pods) unchanged."""
    from synergai.planner.service import ServiceModel, batch_wait_ms

    from .gateway_objects import model_file, triton_platform

    models = []
    for a in assigns:
        c = a.config
        plat = triton_platform(c.engine, c.accelerator) if runtime == RUNTIME_TRITON else None
        if runtime == RUNTIME_TRITON and plat is None:
            plat = "onnxruntime_onnx"  # a CPU engine in a Triton group: ONNX Runtime backend, KIND_CPU
        name = runtime_model_name(a.model, runtime)
        models.append(
            {
                "model": a.model,
                "runtime_name": name,
                "config_id": c.config_id,
                "engine": c.engine,
                "precision": c.precision,
                "batch_size": c.batch_size,
                "threads": c.threads,
                "batch_wait_ms": round(batch_wait_ms(c), 6),
                "slots": ServiceModel.of(c).slots,
                "accelerator": c.accelerator,
                "accelerators": c.accelerators,
                "power_mode": c.power_mode,
                "file": f"{a.model}/1/{model_file(c.engine, c.accelerator) if plat is None else _file_of(plat)}",
                **({"triton_platform": plat} if plat else {}),
                "config": c.model_dump(mode="json"),
            }
        )
    return {
        "schema_version": SERVER_CONFIG_SCHEMA,
        "server": group.name,
        "pool": group.pool,
        "shared": group.shared,
        "power_mode": group.power_mode,
        "runtime": runtime,
        "model_store": MODEL_STORE_DIR,
        "models": models,
    }


def _file_of(platform: str) -> str:
    from .gateway_objects import MODEL_FILES

    return MODEL_FILES.get(platform, "model.onnx")


def _resources(group: Server, assigns: list[Assignment], pool: NodePool) -> Any:
    cpu_req = group.cpu_cores
    cpu_lim = max([cpu_req] + [float(a.config.threads or 0) for a in assigns])
    requests = {"cpu": cpu_quantity(cpu_req), "memory": memory_quantity(group.memory_mb)}
    limits = {"cpu": cpu_quantity(cpu_lim), "memory": memory_quantity(group.memory_mb)}
    if group.accelerators > 0:
        res = pool.accelerator_resource
        err = label_key_error(res)
        if err or "/" not in res:
            raise InputError(
                f"pool {pool.name!r}: accelerator_resource {res!r} is not an extended resource "
                f"name like nvidia.com/gpu",
                field="pools.accelerator_resource",
            )
        # extended resources: requests must equal limits
        requests[res] = str(group.accelerators)
        limits[res] = str(group.accelerators)
    return k.V1ResourceRequirements(requests=requests, limits=limits)


def _env(group: Server, assigns: list[Assignment], img: ResolvedImage, runtime: str) -> list[Any]:
    from synergai.planner.service import batch_wait_ms

    env = {
        "SYNERGAI_SERVER": group.name,
        "SYNERGAI_SERVER_CONFIG": f"{SERVER_CONFIG_DIR}/{SERVER_CONFIG_KEY}",
        "SYNERGAI_MODEL_STORE": MODEL_STORE_DIR,
        "PORT": str(img.port),
    }
    if len(assigns) == 1:  # a dedicated server: the single model's configuration as environment too
        a = assigns[0]
        c = a.config
        env.update(
            {
                "MODEL": a.model,
                "ENGINE": c.engine,
                "PRECISION": c.precision,
                "BATCH_SIZE": str(c.batch_size),
                "THREADS": "auto" if c.threads is None else str(c.threads),
                "POWER_MODE": c.power_mode,
                "ACCELERATOR": c.accelerator,
                "CONFIG_ID": c.config_id,
            }
        )
        if c.batch_size > 1:  # the batch-formation wait the planner assumed (planner.service.batch_wait_ms)
            env["MAX_BATCH_DELAY_MS"] = f"{batch_wait_ms(c):.3f}"
        if c.threads:
            env["OMP_NUM_THREADS"] = str(c.threads)
    for name, value in img.env:
        env.setdefault(name, value)
    return [k.V1EnvVar(name=n, value=v) for n, v in env.items()]


def _container_security() -> Any:
    return k.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=k.V1Capabilities(drop=["ALL"]),
    )


def _container(
    group: Server, assigns: list[Assignment], pool: NodePool, img: ResolvedImage, runtime: str, mounts: list[Any]
) -> Any:
    http = k.V1HTTPGetAction(path=img.readiness_path, port="http", scheme="HTTP")
    live = k.V1HTTPGetAction(path=img.liveness_path, port="http", scheme="HTTP")
    return k.V1Container(
        name=CONTAINER_NAME,
        image=img.image,
        image_pull_policy="IfNotPresent",
        args=list(img.args) or None,
        env=_env(group, assigns, img, runtime),
        ports=[k.V1ContainerPort(name="http", container_port=img.port, protocol="TCP")],
        resources=_resources(group, assigns, pool),
        # model loading can take minutes on an edge board: the startup probe covers it
        startup_probe=k.V1Probe(http_get=http, period_seconds=5, failure_threshold=60, timeout_seconds=2),
        readiness_probe=k.V1Probe(http_get=http, period_seconds=5, failure_threshold=3, timeout_seconds=2),
        liveness_probe=k.V1Probe(http_get=live, period_seconds=10, failure_threshold=3, timeout_seconds=2),
        security_context=_container_security(),
        volume_mounts=mounts,
        termination_message_policy="FallbackToLogsOnError",
    )


def _groups(plan: Plan) -> list[tuple[Server, list[Assignment]]]:
    """(group, hosted assignments) for every group with servers, checked; InputError on a bad plan."""
    pools = {p.name for p in plan.pools}
    groups = plan.server_groups()
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise InputError(f"duplicate server group {dup!r}", field="servers")
    known = set(names)
    out = []
    for g in groups:
        assigns = plan.assignments_of(g.name)
        if g.replicas <= 0:
            continue
        if g.pool not in pools:
            raise InputError(f"server group {g.name!r}: pool {g.pool!r} is not in plan.pools", field="servers.pool")
        if not assigns:
            raise InputError(f"server group {g.name!r} hosts no assignment", field="servers")
        seen: set[str] = set()
        for a in assigns:
            if a.pool != g.pool:
                raise InputError(
                    f"assignment {a.model}/{a.pool}: pool {a.pool!r} is not the pool {g.pool!r} of "
                    f"its server group {g.name!r}",
                    field="assignments.pool",
                )
            if a.model in seen:
                raise InputError(
                    f"duplicate assignment for model {a.model!r} on pool {a.pool!r} in server group "
                    f"{g.name!r} (configuration {a.config.config_id})",
                    field="assignments",
                )
            seen.add(a.model)
        out.append((g, sorted(assigns, key=lambda a: (a.model, a.config.config_id))))
    if plan.servers:
        for a in plan.assignments:
            if a.replicas > 0 and a.server not in known:
                raise InputError(
                    f"assignment {a.model}/{a.pool}: server group {a.server!r} is not in plan.servers",
                    field="assignments.server",
                )
    for a in plan.assignments:
        if a.pool not in pools:
            raise InputError(
                f"assignment {a.model}/{a.pool}: pool {a.pool!r} is not in plan.pools", field="assignments.pool"
            )
    return sorted(out, key=lambda x: x[0].name)


def server_names(plan: Plan) -> dict[str, str]:
    """Server group -> the name of its Deployment, Service and ConfigMap (what :func:`build` makes).

    A dedicated group is named after (model, pool) -- so a new configuration for the same model and
    pool rolls its pods in place, and names stay what earlier synergai versions made -- or (model,
    pool, configuration) when a hand-made plan has several dedicated groups for one (model, pool);
    a shared group after its group name."""
    groups = _groups(plan)
    per_mp: dict[tuple, int] = {}
    for g, assigns in groups:
        if not g.shared and len(assigns) == 1:
            per_mp[(assigns[0].model, g.pool)] = per_mp.get((assigns[0].model, g.pool), 0) + 1
    namer = Namer()
    out = {}
    for g, assigns in groups:
        if not g.shared and len(assigns) == 1:
            a = assigns[0]
            parts = (a.model, g.pool) if per_mp[(a.model, g.pool)] == 1 else (a.model, g.pool, a.config.config_id)
            out[g.name] = namer.name(*parts, kind="deployment")
        else:
            out[g.name] = namer.name(g.name, kind="server")
    return out


def model_label_key(model_label: str) -> str:
    """Pod label ``model.synergai.io/<model label>: serving``, one per hosted model: what the per-model
    Service selects (a shared server's pod carries one per model)."""
    return f"{MODEL_LABEL_PREFIX}/{model_label}"


def build(
    plan: Plan,
    images: Optional[ImageMap] = None,
    *,
    gateway: bool = False,
    model_store: Optional[ModelStore] = None,
    gateway_options: Optional[dict] = None,
    model_stores: Optional[ModelStoreMap] = None,
    model_store_secret: Optional[str] = None,
) -> ManifestSet:
    """All objects for ``plan``; raises :class:`models.InputError` (nothing half-built) on bad input.

    ``gateway``: add the gateway's objects and the plan ConfigMap it reads (see
    :mod:`executor.gateway_objects`); ``model_store``: where the model files come from; ``model_stores``:
    per-model directories overriding it; ``model_store_secret``: a Secret whose keys the storage initializer
    gets as environment (object storage credentials)."""
    k = _client()
    images = images or ImageMap.default()
    store = model_store or DEFAULT_MODEL_STORE
    if model_store_secret is not None and not is_dns1123_subdomain(model_store_secret):
        raise InputError(f"{model_store_secret!r} is not a valid Secret name", field="--model-store-secret")
    if model_stores:
        known = {x.model for sec in (plan.assignments, plan.demands, plan.unserved, plan.candidates) for x in sec}
        for m in model_stores.entries:
            if m not in known:
                raise InputError(
                    f"{m!r} is not a model of the plan (its models: {', '.join(sorted(known))})",
                    file=model_stores.source,
                    field=m,
                )
    plan_id = plan.plan_id or plan.compute_id()
    pools = {p.name: p for p in plan.pools}
    groups = _groups(plan)
    names = server_names(plan)

    namer = Namer()
    out = ManifestSet(plan_id=plan_id)
    selectors = {g.pool: pool_node_selector(pools[g.pool]) for g, _ in groups}
    models = sorted({a.model for _, assigns in groups for a in assigns})
    model_label = {m: namer.name(m, kind="model") for m in models}

    deployments, services, configmaps = [], [], []
    for g, assigns in groups:
        pool = pools[g.pool]
        runtime = server_runtime(assigns)
        imgs = {}
        for a in assigns:
            if runtime == RUNTIME_TRITON and not is_triton_config(a.config):
                continue  # a CPU model in a Triton group: Triton's image serves it
            key = runtime_engine(a.config)
            try:
                try:
                    img = images.resolve(key, pool.architecture)
                except InputError:
                    if key == a.config.engine.strip().lower():
                        raise
                    img = images.resolve(a.config.engine, pool.architecture)
            except InputError as e:
                raise InputError(
                    f"model {a.model!r} on pool {g.pool!r}: {e.message} (image map {images.source})",
                    field="assignments.config.engine",
                ) from None
            imgs[img] = a
        if len(imgs) > 1:
            raise InputError(
                f"server group {g.name!r} on pool {g.pool!r}: its models need different images ("
                + ", ".join(f"{a.model}: {i.image}" for i, a in imgs.items())
                + "); one server runs one image",
                field="servers",
            )
        (img,) = imgs
        name = names[g.name]
        srv_label = g.name if label_value_error(g.name) is None and g.name else dns_name(g.name, kind="server")
        selector = {LABEL_MANAGED_BY: MANAGER, LABEL_INSTANCE: name}
        labels = {
            LABEL_MANAGED_BY: MANAGER,
            LABEL_PART_OF: MANAGER,
            LABEL_COMPONENT: "inference",
            LABEL_INSTANCE: name,
            LABEL_POOL: pool_label_value(g.pool),
            LABEL_TIER: pool.tier,
            LABEL_SERVER: srv_label,
            LABEL_SHARED: "true" if g.shared else "false",
        }
        if len(assigns) == 1:
            labels[LABEL_NAME] = model_label[assigns[0].model]
        pod_labels = {**labels, **{model_label_key(model_label[a.model]): "serving" for a in assigns}}
        ident = {
            ANN_SERVER: g.name,
            ANN_POOL: g.pool,
            ANN_MODELS: json.dumps([a.model for a in assigns]),
            ANN_RUNTIME: runtime,
        }
        if len(assigns) == 1:
            ident.update(
                {
                    ANN_MODEL: assigns[0].model,
                    ANN_CONFIG: assigns[0].config.config_id,
                    ANN_ENGINE: assigns[0].config.engine,
                }
            )
        else:
            ident[ANN_CONFIG] = json.dumps({a.model: a.config.config_id for a in assigns})

        # the server configuration, mounted from a ConfigMap of the same name
        doc = server_config(g, assigns, runtime)
        data = {SERVER_CONFIG_KEY: json.dumps(doc, indent=2, sort_keys=True) + "\n"}
        mounts = [
            k.V1VolumeMount(name="tmp", mount_path="/tmp"),
            k.V1VolumeMount(name="server-config", mount_path=SERVER_CONFIG_DIR, read_only=True),
        ]
        volumes = [
            k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource(size_limit="1Gi")),
            k.V1Volume(name="server-config", config_map=k.V1ConfigMapVolumeSource(name=name)),
        ]
        sources, src_volumes = model_sources(assigns, store, model_stores)
        if runtime == RUNTIME_TRITON:
            # Triton's model repository: an emptyDir at /models holding, per model, config.pbtxt (from the
            # ConfigMap) and the version directory 1/ (from the model store), both mounted read-only
            from .gateway_objects import triton_group_configs

            pbtxt = triton_group_configs(assigns)
            volumes.append(k.V1Volume(name="model-repository", empty_dir=k.V1EmptyDirVolumeSource(size_limit="64Mi")))
            mounts.append(k.V1VolumeMount(name="model-repository", mount_path=MODEL_STORE_DIR))
            for m in doc["models"]:
                key = f"{m['runtime_name']}.config.pbtxt"  # runtime_name is a valid ConfigMap key
                data[key] = pbtxt[m["model"]]
                mounts.append(
                    k.V1VolumeMount(
                        name="server-config",
                        read_only=True,
                        sub_path=key,
                        mount_path=f"{MODEL_STORE_DIR}/{m['runtime_name']}/config.pbtxt",
                    )
                )
                src = sources[m["model"]]
                if src is not None:
                    mounts.append(
                        k.V1VolumeMount(
                            name=src.volume,
                            read_only=True,
                            sub_path=f"{src.sub_path}/1" if src.sub_path else "1",
                            mount_path=f"{MODEL_STORE_DIR}/{m['runtime_name']}/1",
                        )
                    )
        elif len(src_volumes) == 1 and all(s is not None and s.sub_path == m for m, s in sources.items()):
            # every model at <volume>/<model>: the volume is the store, read-only at /models
            mounts.append(k.V1VolumeMount(name=next(iter(src_volumes)), mount_path=MODEL_STORE_DIR, read_only=True))
        elif src_volumes:
            # models from several volumes: /models holds a mount point per model, each model's directory
            # mounted read-only on it
            volumes.append(k.V1Volume(name="model-repository", empty_dir=k.V1EmptyDirVolumeSource(size_limit="64Mi")))
            mounts.append(k.V1VolumeMount(name="model-repository", mount_path=MODEL_STORE_DIR))
            for m, src in sources.items():
                mounts.append(
                    k.V1VolumeMount(
                        name=src.volume,
                        read_only=True,
                        sub_path=src.sub_path or None,
                        mount_path=f"{MODEL_STORE_DIR}/{m}",
                    )
                )
        volumes += [st.volume(vname) for vname, st in src_volumes.items()]
        inits, init_volumes = storage_initializers(
            sources,
            storage_initializer_image(images, pool.architecture),
            model_store_secret,
            k.V1VolumeMount(name="tmp", mount_path="/tmp"),
        )
        volumes += init_volumes
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        cm_labels = {
            LABEL_MANAGED_BY: MANAGER,
            LABEL_PART_OF: MANAGER,
            LABEL_COMPONENT: "server-config",
            LABEL_INSTANCE: name,
            LABEL_POOL: labels[LABEL_POOL],
            LABEL_SERVER: srv_label,
        }
        configmaps.append(
            k.V1ConfigMap(
                api_version="v1",
                kind="ConfigMap",
                data=data,
                metadata=k.V1ObjectMeta(
                    name=name,
                    labels=cm_labels,
                    annotations={ANN_PLAN_ID: plan_id, ANN_SERVER: g.name, ANN_CONFIG_HASH: digest},
                ),
            )
        )

        accel = g.accelerators > 0
        strategy = k.V1DeploymentStrategy(
            type="RollingUpdate",
            # accelerators are usually all allocated: surge pods could never schedule
            rolling_update=k.V1RollingUpdateDeployment(max_surge=0 if accel else 1, max_unavailable=1 if accel else 0),
        )
        pod = k.V1PodSpec(
            init_containers=inits or None,
            containers=[_container(g, assigns, pool, img, runtime, mounts)],
            node_selector=dict(selectors[g.pool]),
            automount_service_account_token=False,
            enable_service_links=False,
            # hostNetwork/hostPID/hostIPC are left unset: false is their default and the API server
            # drops a false value, so writing it would make every kubectl re-apply a change
            security_context=k.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=RUN_AS_USER,
                run_as_group=RUN_AS_USER,
                fs_group=RUN_AS_USER,
                seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
            ),
            termination_grace_period_seconds=30,
            restart_policy="Always",
            volumes=volumes,
            topology_spread_constraints=[
                k.V1TopologySpreadConstraint(
                    max_skew=1,
                    topology_key="kubernetes.io/hostname",
                    when_unsatisfiable="ScheduleAnyway",
                    label_selector=k.V1LabelSelector(match_labels=dict(selector)),
                )
            ],
        )
        # the configuration's hash in the pod template: a changed server.json / config.pbtxt rolls the pods
        # (subPath mounts never see ConfigMap updates)
        dep = k.V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=k.V1ObjectMeta(name=name, labels=dict(labels), annotations={ANN_PLAN_ID: plan_id, **ident}),
            spec=k.V1DeploymentSpec(
                replicas=g.replicas,
                selector=k.V1LabelSelector(match_labels=dict(selector)),
                strategy=strategy,
                revision_history_limit=3,
                progress_deadline_seconds=600,
                template=k.V1PodTemplateSpec(
                    metadata=k.V1ObjectMeta(labels=pod_labels, annotations={**ident, ANN_CONFIG_HASH: digest}), spec=pod
                ),
            ),
        )
        svc = k.V1Service(
            api_version="v1",
            kind="Service",
            metadata=k.V1ObjectMeta(name=name, labels=dict(labels), annotations={ANN_PLAN_ID: plan_id, **ident}),
            spec=k.V1ServiceSpec(
                type="ClusterIP",
                selector=dict(selector),
                session_affinity="None",
                ports=[k.V1ServicePort(name="http", port=SERVICE_PORT, target_port="http", protocol="TCP")],
            ),
        )
        deployments.append(dep)
        services.append(svc)
        out.servers.append(
            ServerWorkload(
                name=name,
                server=g.name,
                pool=g.pool,
                replicas=g.replicas,
                shared=g.shared,
                standby=g.standby,
                models=[a.model for a in assigns],
                runtime=runtime,
                image=img.image,
                service=name,
                configmap=name,
            )
        )
        for a in assigns:
            out.workloads.append(
                Workload(
                    name=name,
                    model=a.model,
                    pool=g.pool,
                    config_id=a.config.config_id,
                    replicas=g.replicas,
                    service=name,
                    server=g.name,
                )
            )

    for m in models:
        name = namer.name(m, kind="model-service")
        labels = {
            LABEL_MANAGED_BY: MANAGER,
            LABEL_PART_OF: MANAGER,
            LABEL_COMPONENT: "model-endpoint",
            LABEL_NAME: model_label[m],
        }
        services.append(
            k.V1Service(
                api_version="v1",
                kind="Service",
                metadata=k.V1ObjectMeta(name=name, labels=labels, annotations={ANN_PLAN_ID: plan_id, ANN_MODEL: m}),
                spec=k.V1ServiceSpec(
                    type="ClusterIP",
                    session_affinity="None",
                    selector={LABEL_MANAGED_BY: MANAGER, model_label_key(model_label[m]): "serving"},
                    ports=[k.V1ServicePort(name="http", port=SERVICE_PORT, target_port="http", protocol="TCP")],
                ),
            )
        )
        out.model_services[m] = name

    out.objects = configmaps + deployments + services
    if gateway:
        from .gateway_objects import GATEWAY_PLAN_CONFIGMAP, gateway_objects, plan_configmap

        opts = {"plan_configmap": GATEWAY_PLAN_CONFIGMAP, **(gateway_options or {})}
        out.objects += [plan_configmap(plan, opts["plan_configmap"])] + gateway_objects(plan, images=images, **opts)
    return out


def build_manifests(
    plan: Plan, images: Optional[ImageMap] = None, namespace: Optional[str] = None, **kw: Any
) -> list[dict]:
    """Plain dict manifests for ``plan`` (ConfigMaps, Deployments, Services[, the gateway's objects])."""
    return build(plan, images, **kw).dicts(namespace)


def object_key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]
