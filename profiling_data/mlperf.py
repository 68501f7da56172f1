"""Import MLPerf Inference results (the `results.csv` + `systems.csv` extract) into a ``ProfileTable``.

The extract format is described in ``shared/data/mlperf-inference-v3.0/SOURCE.md``; every
normalisation below is table/regex driven so that another round in the same column format
imports without code changes (unknown devices, engines and models are skipped and counted,
odd rows never crash the import; a missing column or an empty file raises ``InputError``).

What becomes a profile record
-----------------------------
* **SingleStream** rows -> ``batch_size`` 1 records. ``latency_p50/p90/p99_ms`` = ``lat_p50/p90/p99_ns`` / 1e6;
  ``throughput_rps`` = ``qps_without_loadgen_overhead`` (else 1e9 / ``lat_mean_ns``).
* **Server** rows of systems whose replica is a GPU (TensorRT or another GPU engine) -> one record of
  the batched high-throughput configuration: latencies are per request *under the scheduled load*
  (queueing and batching included; bounded by MLPerf's latency constraint), ``throughput_rps`` =
  ``completed_samples_per_s`` (else ``result_value``) / ``accelerators_per_node`` (one accelerator per
  replica). The batch size is the run's own setting where the extract has it: a ``BATCH_COLUMNS`` column
  (``server_batch_size``, ``gpu_batch_size``, ...), the ``system_id`` (``batch_size.N`` / ``bsN``) or the
  system's notes (``batch size: N``); otherwise it comes from ``SERVER_BATCH`` (NVIDIA's v3.0
  ``gpu_batch_size`` for that GPU and model, else a per-model typical value), the record's ``source`` is
  marked with the suffix ``#batch-assumed`` and the import summary counts it as flagged. Server rows of CPU-only systems are skipped (the
  figure is for a whole multi-socket machine; there is no honest per-replica split).
* **Offline** rows are skipped: their latencies are completion times of one huge batch issued at t=0,
  not per-request service latencies. **MultiStream** rows (queries of 8 samples) are skipped too.
  (So, e.g., the Jetson AGX Orin 15 W (``max15``) result, which exists only as an Offline BERT run,
  is skipped.)
* Rows whose ``scenario_dir`` and ``scenario_logged`` differ (reused SingleStream runs, dropped in the
  v3.0 extract already) and ``network``-division rows (latency includes a NIC/network stack) are skipped.

Naming
------
* **model** (``MODEL_RULES``): ``resnet50``, ``retinanet``, ``bert`` (= closed ``bert-99``; the 99.9 %
  accuracy variant ``bert-99.9`` runs in fp16 and is dropped, as are the open-division BERT
  re-implementations), and from the Krai/cTuning open "zoo" only the canonical variants
  ``mobilenet-v1`` (1.0 width, 224 px), ``mobilenet-v2`` (1.0, 224), ``mobilenet-v3`` (large, 1.0, 224,
  not minimalistic) and ``efficientnet-lite0``; other widths/resolutions are skipped. rnnt, 3d-unet,
  dlrm and ssd-resnet34 are out of scope.
* **precision** (``PRECISION_ALIASES``): from ``weight_data_types`` (else ``input_data_types``) unless the
  zoo model name says ``-quantized``/``uint8``/``int8`` (-> ``int8``, i.e. 8-bit quantised, uint8 or int8
  TFLite) or ``-non-quantized``/``float``/``fp32`` (-> ``fp32``). ``PRECISION_OVERRIDES`` fixes one known
  metadata error: cTuning's *closed* runs of NVIDIA's TensorRT harness claim ``fp32`` although the
  identical *open* runs (same numbers) say ``int8``; NVIDIA's harness builds int8 engines.
* **engine** (``ENGINE_RULES``, matched on ``system_id`` + ``framework``): ``tensorrt`` (plain or behind
  Triton), ``tflite``, ``armnn-neon`` (ArmNN on the Arm CPU, accelerator ``none``), ``armnn-opencl``
  (ArmNN on the Mali GPU via OpenCL, accelerator ``gpu``; two engine names because ``accelerator`` is not
  part of the profile key), ``onnxruntime``, ``pytorch``, ``tensorflow``, ``deepsparse``, ``openvino``, ``tvm``.
* **device aliases** (``device_aliases.yaml`` beside this module, extended with ``--aliases FILE``): regex
  entries consulted before the built-in rules (``accelerators``: NVIDIA's Jetson names, MIG and vGPU slices
  skipped; ``hosts``: Graviton/Ampere by name or core), after them (``cpu_families``: cloud VMs that hide
  the CPU model -- Cascade Lake, Ice Lake, Sapphire Rapids, EPYC), and ``merge`` (spellings of one GPU
  -> one device name). See :func:`load_aliases`.
* **device** (``GPU_RULES`` / ``BOARD_RULES`` / ``CPU_RULES``): ``jetson-agx-orin`` (NVIDIA ``Orin_TRT*``,
  cTuning ``nvidia_orin*`` and Krai ``orin-*``; CPU engines on its 12 Cortex-A78AE cores are the same device
  with accelerator ``none``), ``jetson-orin-nx``, ``jetson-xavier`` (Jetson AGX Xavier), ``rpi4``
  (Raspberry Pi 4 Model B, BCM2711), ``rk3588s`` (Firefly board with RockChip RK3588S), ``amlogic-s922x``
  (Odroid N2+), ``amlogic-a311d2`` (Khadas VIM4), ``graviton3`` (AWS m7g), ``graviton1`` (AWS a1),
  ``x86-xeon-<model>`` (e.g. ``x86-xeon-8275cl`` = AWS c5.4xlarge / inf1 host), ``x86-gcp-n1`` (GCP n1,
  CPU model not disclosed), ``x86-ryzen-<model>``, ``x86-epyc-<model>``, and ``nvidia-<gpu>`` for data-centre
  GPUs (``nvidia-l4``, ``nvidia-t4``, ``nvidia-a2``, ``nvidia-a30``, ``nvidia-a40``, ``nvidia-l40``,
  ``nvidia-a100-pcie-80gb``, ``nvidia-a100-sxm-80gb``, ``nvidia-h100-pcie-80gb``, ``nvidia-h100-sxm-80gb``,
  ``nvidia-rtx-4090``, ``nvidia-k80``, ...). Skipped with a counted reason: exotic accelerators that are no
  Kubernetes device of the default cluster (Qualcomm Cloud AI 100 ``qaic``, RKNN NPU, SiMa MLSoC, Rebellions
  ATOM, Moffett, NEUCHIPS), A100 MIG slices and vSphere vGPUs, Apple laptops (macOS, not a node).
* **architecture**: ``arm64`` for Arm hosts (Jetson, boards, Graviton), ``amd64`` otherwise (GPU servers use
  their host CPU's architecture).
* **power_mode** (``POWER_MODE_RULES`` on ``system_id`` + ``hw_notes``): ``15w`` (``max15``/``15W``), ``maxq``
  (``MaxQ``; NVIDIA's power-capped submissions), ``maxn`` (Jetson ``power.0``/``MAXN``, and NVIDIA's own
  non-MaxQ Jetson submissions = MaxP = MAXN), else ``default`` (= not declared by the submitter; e.g. Krai's
  and cTuning's Orin runs).
* **threads**: parsed from ``system_id``/``sw_notes`` (``threads.N``/``tN``) where present, else empty.
* **power_w**: ``power_avg_W`` (mean wall power of the whole system under test; for a SingleStream run on a
  GPU server that is the whole server, e.g. ~640 W for Dell's 1x L4 box). For Server rows it is divided by
  ``accelerators_per_node`` (per-replica share of the node's power, host included).
* Open-division rows filed under a closed benchmark name (e.g. cTuning's DeepSparse ``bert-99``) are kept:
  same task and accuracy target, though the submitter may have modified the model.
* **source**: ``mlperf-<round>:<division>/<submitter>/<system_id>/<Scenario>`` (+ ``#batch-assumed``);
  **measured_at**: the round's publication date from its own metadata (:func:`round_date_from_metadata`:
  a date column of results.csv, else ``published: YYYY-MM-DD`` or "<Month> YYYY publication" in
  round.yaml/round.json/SOURCE.md/README.md beside it; ``--published`` overrides), else empty and flagged.

Footprint defaults (Kubernetes requests of one replica)
-------------------------------------------------------
==========================  =====================================  ==============================  ===========
replica kind                cpu_cores                              memory_request_mb               accelerators
==========================  =====================================  ==============================  ===========
GPU engine (TensorRT, ...)  2                                      MODEL_MEMORY_MB + 1024 (runtime)  1
armnn-opencl (Mali GPU)     1 (host thread)                        MODEL_MEMORY_MB + 256            1
CPU engine                  threads if known, else 90 % of the     MODEL_MEMORY_MB                  0
                            board's/instance's vCPUs (the
                            SingleStream run used the whole SoC;
                            90 % is what a node leaves allocatable)
==========================  =====================================  ==============================  ===========

``MODEL_MEMORY_MB`` (MiB): resnet50 1024, retinanet 2048, bert 3072, mobilenet-v1/v2/v3 and efficientnet-lite0
256, anything else 2048 -- so a TensorRT resnet50 replica asks 2048 MiB and a TensorRT bert replica 4096 MiB.
``memory_mb`` (measured peak RSS) is left empty: MLPerf does not report it.

Duplicates: where several runs map to the same profile key (Triton vs plain TensorRT, one GPU model from
several submitters/servers, the same run in the closed and open divisions), the runs are ordered by p99
latency (ties: higher throughput, then source name) and the *representative* one is kept: the median,
upper median for an even count (so of two runs the slower; a lightly loaded Server run flatters the
device). ``pick="lowest-p99"`` keeps the fastest instead (what the committed default table was built
with, see ``build_default``). The others are counted as merged.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional

from pydantic import ValidationError

from synergai.models.errors import InputError
from synergai.models.profiles import KEY_FIELDS, ProfileRecord, ProfileTable

#: Where the shared MLPerf v3.0 extract lives relative to this repository (override with an argument).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/mlperf-inference-v3.0"

RESULTS_REQUIRED = (
    "division",
    "submitter",
    "system_id",
    "model",
    "scenario_dir",
    "lat_mean_ns",
    "lat_p50_ns",
    "lat_p90_ns",
    "lat_p99_ns",
    "qps_without_loadgen_overhead",
    "completed_samples_per_s",
    "input_data_types",
    "weight_data_types",
)
SYSTEMS_REQUIRED = (
    "division",
    "submitter",
    "system_id",
    "system_name",
    "host_processor_model_name",
    "host_processor_core_count",
    "accelerator_model_name",
    "accelerators_per_node",
)

#: Columns of results.csv that may carry the round's publication date (first non-empty wins).
DATE_COLUMNS = ("published", "publication_date", "round_date", "date")
#: Metadata files beside results.csv searched for the publication date.
METADATA_FILES = ("round.yaml", "round.json", "SOURCE.md", "README.md")
#: Columns of results.csv that may carry the run's own Server batch size (first positive integer wins).
BATCH_COLUMNS = ("server_batch_size", "gpu_batch_size", "batch_size", "max_batch_size")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        )
    )
}


def round_date_from_metadata(data_dir: Path) -> tuple[Optional[datetime], str]:
    """The round's publication date from its own metadata beside results.csv: ``published: YYYY-MM-DD`` (or
    "publication date ..."/"published on ...") in round.yaml/round.json/SOURCE.md/README.md, else
    "<Month> YYYY publication" (day set to 1, flagged). Returns (date or None, where it came from)."""
    for name in METADATA_FILES:
        f = data_dir / name
        if not f.is_file():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"publi\w*(?:\s+on|\s+date)?[\s\"':=|]*(\d{4}-\d{2}-\d{2})", text, re.I)
        if m:
            try:
                return datetime.strptime(m.group(1), "%Y-%m-%d"), f"{f.name}: {m.group(0).strip()}"
            except ValueError:
                pass
        m = re.search(r"(" + "|".join(_MONTHS) + r")\s+(\d{4})\s+publication", text, re.I)
        if m:
            return datetime(
                int(m.group(2)), _MONTHS[m.group(1).lower()], 1
            ), f"{f.name}: {m.group(0)} (day unknown: 1st)"
    return None, ""


SCENARIOS = {"singlestream": "SingleStream", "server": "Server", "offline": "Offline", "multistream": "MultiStream"}

# --------------------------------------------------------------------------------------------- models
#: (regex on the benchmark directory name, canonical model or None to skip, skip reason).
#: Named groups: ``q`` quantisation word, ``w`` width multiplier, ``r`` resolution, ``size`` large/small,
#: ``min`` minimalistic, ``lite`` efficientnet-lite index.
_Q = r"(?P<q>quantized|non-quantized|float|uint8|int8|fp32)"
MODEL_RULES: list[tuple[str, Optional[str], str]] = [
    (r"^resnet50$", "resnet50", ""),
    (r"^retinanet$", "retinanet", ""),
    (r"^bert-99$", "bert", ""),
    (r"^bert-99\.9$", None, "bert-99.9 (99.9% accuracy fp16 variant) dropped"),
    (r"^mobilenet-v(?P<v>[12])-(?P<w>[\d.]+)-(?P<r>\d+)-" + _Q + r"$", "mobilenet-v{v}", ""),
    (r"^mobilenet-v(?P<v>[12])-precision_" + _Q + r"-(?P<w>[\d.]+)-(?P<r>\d+)$", "mobilenet-v{v}", ""),
    (
        r"^mobilenet-v3-(?P<size>large|small)(?P<min>-minimalistic)?_(?P<r>\d+)_(?P<w>[\d.]+)_" + _Q + r"$",
        "mobilenet-v3",
        "",
    ),
    (
        r"^mobilenet-v3-precision_" + _Q + r"-(?P<size>large|small)(?P<min>-minimalistic)?-(?P<r>\d+)$",
        "mobilenet-v3",
        "",
    ),
    (r"^efficientnet-(?P<lite>lite\d)-" + _Q + r"$", "efficientnet-{lite}", ""),
    (r"^efficientnet-" + _Q + r"-(?P<lite>lite\d)$", "efficientnet-{lite}", ""),
    (r"^(rnnt|3d-unet-99(\.9)?|dlrm-99(\.9)?|ssd-resnet34)$", None, "model out of scope"),
]
#: Canonical zoo variant kept per family; everything else in the zoo is skipped.
ZOO_CANONICAL = {
    "mobilenet-v1": {"w": "1.0", "r": "224"},
    "mobilenet-v2": {"w": "1.0", "r": "224"},
    "mobilenet-v3": {"w": "1.0", "r": "224", "size": "large", "min": None},
    "efficientnet-lite0": {},
}
_Q_PRECISION = {
    "quantized": "int8",
    "uint8": "int8",
    "int8": "int8",
    "non-quantized": "fp32",
    "float": "fp32",
    "fp32": "fp32",
}


def normalize_model(name: str) -> tuple[Optional[str], Optional[str], str]:
    """Benchmark directory name -> (canonical model or None, precision hint or None, skip reason)."""
    n = name.strip().lower()
    for pat, canon, reason in MODEL_RULES:
        m = re.match(pat, n)
        if not m:
            continue
        if canon is None:
            return None, None, reason
        g = m.groupdict()
        model = canon.format(**{k: (v or "") for k, v in g.items()})
        if model not in ZOO_CANONICAL and "{" in canon:
            return None, None, "non-canonical zoo variant"
        want = ZOO_CANONICAL.get(model)
        if want is not None:
            for k, v in want.items():
                if k in g and g[k] != v:
                    return None, None, "non-canonical zoo variant"
        return model, _Q_PRECISION.get(g.get("q") or ""), ""
    return None, None, "unknown model"


# -------------------------------------------------------------------------------------------- engines
#: (regex on "system_id | framework" lowercased, engine). First match wins.
ENGINE_RULES: list[tuple[str, str]] = [
    (r"qaic|qualcomm cloud ai", "qaic"),
    (r"rknn", "rknn"),
    (r"moffett", "moffett"),
    (r"rbln", "rbln"),
    (r"sima", "sima"),
    (r"armnn.*opencl|opencl.*armnn", "armnn-opencl"),
    (r"armnn", "armnn-neon"),
    (r"tensorflow_metal", "tensorflow-metal"),
    (r"tensorrt|(^|[^a-z])trt([^a-z]|$)|triton|nvidia_original|ngc mlperf", "tensorrt"),
    (r"tflite", "tflite"),
    (r"deepsparse", "deepsparse"),
    (r"openvino", "openvino"),
    (r"neural_engine", "neural-engine"),
    (r"tvm", "tvm"),
    (r"onnx\s*runtime|onnxruntime", "onnxruntime"),
    (r"pytorch", "pytorch"),
    (r"tensorflow", "tensorflow"),
    (r"(^|[^a-z])cuda([^a-z]|$)", "tensorrt"),  # NVIDIA rows whose framework only says "CUDA 12.0"
]
#: Engines that run on the host CPU (accelerator ``none``) unless the run id says "-gpu-".
CPU_ENGINES = {"tflite", "armnn-neon", "deepsparse", "openvino", "neural-engine", "tvm"}
#: Engines of exotic accelerators (skipped: not a device of the default Kubernetes cluster).
EXOTIC_ENGINES = {"qaic", "rknn", "moffett", "rbln", "sima", "tensorflow-metal"}


def normalize_engine(system_id: str, framework: str = "") -> Optional[str]:
    hay = f"{system_id} | {framework}".lower()
    for pat, eng in ENGINE_RULES:
        if re.search(pat, hay):
            return eng
    return None


# -------------------------------------------------------------------------------------------- devices
#: GPU accelerator name rules: (regex on accelerator_model_name lowercased, device or None, skip reason).
GPU_RULES: list[tuple[str, Optional[str], str]] = [
    (r"mig", None, "A100 MIG slice (fractional GPU)"),
    (r"-\d+c\b", None, "vSphere vGPU"),
    (r"jetson agx orin|agx orin", "jetson-agx-orin", ""),
    (r"orin nx", "jetson-orin-nx", ""),
    (r"xavier", "jetson-xavier", ""),
    (r"qualcomm|moffett|rbln|atom|mlsoc|recaccel|npu|metal", None, "exotic accelerator"),
    (r"nvidia|tesla|geforce|rtx", "nvidia-gpu", ""),  # generic NVIDIA name -> nvidia-<model>
]
#: Boards/instances recognised from "system_id | system_name | host_processor_model_name" (lowercased):
#: (regex, device, vCPUs, architecture). ``None`` device = skip with the given reason in the vCPU slot.
BOARD_RULES: list[tuple[str, Optional[str], object, str]] = [
    (r"macbook|apple m\d", None, "Apple laptop (macOS, not a Kubernetes node)", ""),
    (r"orin nx|orin_nx", "jetson-orin-nx", 8, "arm64"),
    (r"agx orin|nvidia_orin|(^|[^a-z])orin([^a-z]|$)", "jetson-agx-orin", 12, "arm64"),
    (r"xavier", "jetson-xavier", 8, "arm64"),
    (r"raspberry pi 4|(^|[^a-z])rpi4", "rpi4", 4, "arm64"),
    (r"rk3588s", "rk3588s", 8, "arm64"),
    (r"amlogic s922x", "amlogic-s922x", 6, "arm64"),
    (r"amlogic a311d2", "amlogic-a311d2", 8, "arm64"),
    (r"m7g\.(\d*)xlarge", "graviton3", None, "arm64"),
    (r"m6g\.(\d*)xlarge|c6g\.", "graviton2", None, "arm64"),
    (r"(^|[^a-z0-9])a1\.(\d*)xlarge", "graviton1", None, "arm64"),
    (r"gcp_n1|n1-standard|n1-highmem", "x86-gcp-n1", None, "amd64"),
]
#: Host CPU name -> device for x86 machines: (regex on host_processor_model_name lowercased, template).
CPU_RULES: list[tuple[str, str]] = [
    (r"xeon\(r\) (?:platinum|gold|silver|bronze|w|d)[- ]?(?P<m>[\w+]+)", "x86-xeon-{m}"),
    (r"xeon\(r\) cpu (?P<m>e\d-\d+\w*)(?: (?P<v>v\d))?", "x86-xeon-{m}{v}"),
    (r"xeon (?:platinum|gold) (?P<m>[\w+]+)", "x86-xeon-{m}"),
    (r"epyc (?P<m>\w+)", "x86-epyc-{m}"),
    (r"ryzen (?P<s>\d) (?P<m>\w+)", "x86-ryzen-{s}-{m}"),
]
#: Cloud instance vCPUs (what Kubernetes sees), matched on system_id lowercased.
INSTANCE_VCPUS: list[tuple[str, int]] = [
    (r"c5\.4xlarge", 16),
    (r"m7g\.2xlarge", 8),
    (r"a1\.2xlarge", 8),
    (r"t2\.medium", 2),
    (r"inf1\.2xlarge", 8),
    (r"g4dn\.xlarge", 4),
    (r"n1_standard_4|n1-standard-4", 4),
    (r"n1_highmem_4|n1-highmem-4", 4),
]
_ARM_HINT = re.compile(r"arm|cortex|carmel|graviton|aarch64|neoverse|snapdragon|rk3|amlogic|bcm")

#: The bundled alias table (``--aliases FILE`` adds entries consulted before it).
ALIASES_FILE = Path(__file__).resolve().parent / "device_aliases.yaml"


@dataclass(frozen=True)
class AliasRule:
    pattern: re.Pattern[str]
    device: Optional[str]
    skip: str = ""
    vcpus: Optional[int] = None
    architecture: str = ""


@dataclass(frozen=True)
class Aliases:
    """Device alias table: regex rules consulted before (``accelerators``, ``hosts``) or after
    (``cpu_families``) the built-in rules, and ``merge`` (spelling -> canonical device)."""

    accelerators: tuple[AliasRule, ...] = ()
    hosts: tuple[AliasRule, ...] = ()
    cpu_families: tuple[AliasRule, ...] = ()
    merge: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()

    def canonical(self, name: str) -> str:
        m = dict(self.merge)
        seen = set()
        while name in m and name not in seen:
            seen.add(name)
            name = m[name]
        return name


def _alias_rules(entries, file: str, section: str) -> list[AliasRule]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InputError("must be a list of {match, device|skip} entries", file=file, field=section)
    out = []
    for i, e in enumerate(entries):
        fld = f"{section}.{i}"
        if not isinstance(e, dict) or not isinstance(e.get("match"), str):
            raise InputError("an entry needs `match` (a regex) and `device` or `skip`", file=file, field=fld)
        unknown = set(e) - {"match", "device", "skip", "vcpus", "architecture"}
        if unknown:
            raise InputError(f"unknown key {sorted(unknown)[0]!r}", file=file, field=fld)
        if ("device" in e) == ("skip" in e):
            raise InputError("give exactly one of `device` and `skip`", file=file, field=fld)
        try:
            pat = re.compile(e["match"], re.I)
        except re.error as err:
            raise InputError(f"bad regex: {err}", file=file, field=f"{fld}.match") from None
        dev = e.get("device")
        if dev is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", str(dev)):
            raise InputError(f"device {dev!r} must be lower-case [a-z0-9.-]", file=file, field=f"{fld}.device")
        arch = e.get("architecture", "")
        if arch not in ("", "amd64", "arm64"):
            raise InputError(f"architecture {arch!r} must be amd64 or arm64", file=file, field=f"{fld}.architecture")
        vcpus = e.get("vcpus")
        if vcpus is not None and (not isinstance(vcpus, int) or vcpus < 1):
            raise InputError("vcpus must be a positive integer", file=file, field=f"{fld}.vcpus")
        out.append(AliasRule(pat, dev, str(e.get("skip", "")), vcpus, arch))
    return out


def load_aliases(extra: Iterable[str | Path] = (), *, bundled: bool = True) -> Aliases:
    """The alias table: ``extra`` files (first = highest priority), then the bundled ``device_aliases.yaml``."""
    from synergai.models.cluster import load_structured

    files = [Path(f) for f in extra] + ([ALIASES_FILE] if bundled else [])
    acc: list[AliasRule] = []
    hosts: list[AliasRule] = []
    fam: list[AliasRule] = []
    merge: dict[str, str] = {}
    for f in files:
        name = str(f)
        if not f.is_file():
            raise InputError("file not found", file=name, field="--aliases")
        doc = load_structured(f)
        if not isinstance(doc, dict):
            raise InputError("an alias file must be a mapping", file=name)
        unknown = set(doc) - {"accelerators", "hosts", "cpu_families", "merge"}
        if unknown:
            raise InputError(f"unknown section {sorted(unknown)[0]!r}", file=name, field=sorted(unknown)[0])
        acc += _alias_rules(doc.get("accelerators"), name, "accelerators")
        hosts += _alias_rules(doc.get("hosts"), name, "hosts")
        fam += _alias_rules(doc.get("cpu_families"), name, "cpu_families")
        mg = doc.get("merge") or {}
        if not isinstance(mg, dict):
            raise InputError("must be a mapping spelling -> device", file=name, field="merge")
        for k, v in mg.items():
            merge.setdefault(str(k).lower(), str(v).lower())  # earlier (user) files win
    return Aliases(tuple(acc), tuple(hosts), tuple(fam), tuple(merge.items()), tuple(str(f) for f in files))


_DEFAULT_ALIASES: list[Aliases] = []


def default_aliases() -> Aliases:
    if not _DEFAULT_ALIASES:
        _DEFAULT_ALIASES.append(load_aliases())
    return _DEFAULT_ALIASES[0]


def _apply_alias(rules: Iterable[AliasRule], hay: str, arch_default: str, vcpus: Optional[int]) -> Optional[Device]:
    for r in rules:
        if r.pattern.search(hay):
            if r.device is None:
                raise _Skip(r.skip)
            return Device(r.device, r.architecture or arch_default, r.vcpus if r.vcpus is not None else vcpus)
    return None


@dataclass(frozen=True)
class Device:
    name: str
    architecture: str
    vcpus: Optional[int]


class _Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _slug(s: str) -> str:
    s = s.replace("+", "plus")
    return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")


def _parse_cores(text: str) -> Optional[int]:
    """``"12"`` -> 12, ``"4 (big); 4 (LITTLE)"`` -> 8, ``"6 (4 big; 2 LITTLE)"`` -> 6."""
    t = (text or "").strip()
    if not t:
        return None
    m = re.match(r"^(\d+)\s*\(", t)
    if m and re.search(r"\d+\s*big", t):
        return int(m.group(1))
    nums = [int(x) for x in re.findall(r"\d+", t)]
    return sum(nums) if nums else None


def _arch(host: str) -> str:
    return "arm64" if _ARM_HINT.search(host.lower()) else "amd64"


def normalize_gpu(accelerator_model_name: str, host: str, aliases: Optional[Aliases] = None) -> Device:
    al = aliases or default_aliases()
    d = _normalize_gpu(accelerator_model_name, host, al)
    return Device(al.canonical(d.name), d.architecture, d.vcpus)


def _normalize_gpu(accelerator_model_name: str, host: str, al: Aliases) -> Device:
    acc = accelerator_model_name.strip().lower()
    hit = _apply_alias(al.accelerators, acc, "", None)
    if hit is not None:
        jetson = hit.name.startswith("jetson-")
        return Device(hit.name, hit.architecture or ("arm64" if jetson else _arch(host)), None)
    for pat, dev, reason in GPU_RULES:
        if re.search(pat, acc):
            if dev is None:
                raise _Skip(f"{reason}: {accelerator_model_name.strip()}")
            if dev == "nvidia-gpu":
                s = re.sub(r"\(.*?\)", "", acc)
                s = re.sub(r"\b(nvidia|tesla|geforce|cts)\b", " ", s)
                dev = "nvidia-" + _slug(s.strip())
                return Device(dev, _arch(host), None)
            return Device(dev, "arm64", None)
    raise _Skip(f"unknown accelerator: {accelerator_model_name.strip() or '<empty>'}")


def normalize_board(
    system_id: str, system_name: str, host: str, core_count: str = "", aliases: Optional[Aliases] = None
) -> Device:
    """The CPU/SoC a run executed on (CPU engines, or the board of an on-SoC GPU)."""
    al = aliases or default_aliases()
    d = _normalize_board(system_id, system_name, host, core_count, al)
    return Device(al.canonical(d.name), d.architecture, d.vcpus)


def _normalize_board(system_id: str, system_name: str, host: str, core_count: str, al: Aliases) -> Device:
    hay = f"{system_id} | {system_name} | {host}".lower()
    vcpus = None
    for pat, n in INSTANCE_VCPUS:
        if re.search(pat, system_id.lower()):
            vcpus = n
            break
    hit = _apply_alias(al.hosts, hay, _arch(host), vcpus if vcpus is not None else _parse_cores(core_count))
    if hit is not None:
        return hit
    for pat, dev, cores, arch in BOARD_RULES:
        if re.search(pat, hay):
            if dev is None:
                raise _Skip(str(cores))
            return Device(
                dev,
                arch,
                vcpus if vcpus is not None else (cores if isinstance(cores, int) else _parse_cores(core_count)),
            )
    h = host.lower()
    for pat, tmpl in CPU_RULES:
        m = re.search(pat, h)
        if m:
            g = {k: (v or "") for k, v in m.groupdict().items()}
            return Device(_slug(tmpl.format(**g)), "amd64", vcpus if vcpus is not None else _parse_cores(core_count))
    hit = _apply_alias(al.cpu_families, hay, _arch(host), vcpus if vcpus is not None else _parse_cores(core_count))
    if hit is not None:
        return hit
    raise _Skip(f"unknown device: {system_name.strip() or system_id} / {host.strip() or '<no cpu name>'}")


# ------------------------------------------------------------------------------------ power, precision
#: (regex on "system_id | hw_notes" lowercased, power mode). First match wins.
POWER_MODE_RULES: list[tuple[str, str]] = [
    (r"max15|(^|[^0-9])15\s*w([^a-z]|$)", "15w"),
    (r"max-?q", "maxq"),
    (r"power\.0|maxn", "maxn"),
]
PRECISION_ALIASES = {
    "int8": "int8",
    "in8": "int8",
    "uint8": "int8",
    "fp16": "fp16",
    "half": "fp16",
    "fp32": "fp32",
    "float": "fp32",
    "float32": "fp32",
    "bf16": "bf16",
    "fp8": "fp8",
}
#: Known metadata errors: (submitter regex, system_id regex, model regex, precision).
PRECISION_OVERRIDES: list[tuple[str, str, str, str]] = [
    (r"^ctuning$", r"nvidia_original-gpu-tensorrt", r"^(resnet50|retinanet|bert-99)$", "int8")
]


def normalize_power_mode(system_id: str, hw_notes: str, device: str, engine: str, submitter: str) -> str:
    hay = f"{system_id} | {hw_notes}".lower()
    for pat, mode in POWER_MODE_RULES:
        if re.search(pat, hay):
            return mode
    if device.startswith("jetson-") and engine == "tensorrt" and submitter.lower() == "nvidia":
        return "maxn"  # NVIDIA's non-MaxQ Jetson submissions are MaxP = MAXN
    return "default"


def normalize_precision(weight_types: str, input_types: str, hint: Optional[str] = None) -> Optional[str]:
    if hint:
        return hint
    for field_value in (weight_types, input_types):
        toks = re.findall(r"[a-z]+\d*", (field_value or "").lower())
        # weights like "int8,fp16": the lowest precision that carries the weights is the config's name
        for t in toks:
            if t in PRECISION_ALIASES and PRECISION_ALIASES[t] == "int8":
                return "int8"
        for t in toks:
            if t in PRECISION_ALIASES:
                return PRECISION_ALIASES[t]
    return None


def parse_threads(*texts: str) -> Optional[int]:
    for t in texts:
        m = re.search(r"(?:^|[^a-z])(?:threads?|thr|nthreads)[._-]?(\d+)", (t or "").lower())
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    return None


#: NVIDIA v3.0 Server ``gpu_batch_size`` (closed/NVIDIA/configs/<model>/Server) per (device, model),
#: then the per-model fallback used for GPUs/submitters without a published config value.
SERVER_BATCH: dict[tuple[str, str], int] = {
    ("nvidia-l4", "resnet50"): 16,
    ("nvidia-l40", "resnet50"): 64,
    ("nvidia-a100-pcie-80gb", "resnet50"): 64,
    ("nvidia-a100-sxm-80gb", "resnet50"): 128,
    ("nvidia-h100-pcie-80gb", "resnet50"): 128,
    ("nvidia-h100-sxm-80gb", "resnet50"): 256,
    ("nvidia-l4", "bert"): 16,
    ("nvidia-l40", "bert"): 64,
    ("nvidia-a100-pcie-80gb", "bert"): 64,
    ("nvidia-a100-sxm-80gb", "bert"): 48,
    ("nvidia-h100-pcie-80gb", "bert"): 64,
    ("nvidia-h100-sxm-80gb", "bert"): 128,
}
SERVER_BATCH_DEFAULT = {"resnet50": 64, "bert": 32, "retinanet": 8}
_BATCH_IN_ID = re.compile(r"(?:batch_size|batch|bs)[._-]?(\d+)", re.I)

MODEL_MEMORY_MB = {
    "resnet50": 1024,
    "retinanet": 2048,
    "bert": 3072,
    "mobilenet-v1": 256,
    "mobilenet-v2": 256,
    "mobilenet-v3": 256,
    "efficientnet-lite0": 256,
}
MODEL_MEMORY_DEFAULT_MB = 2048
GPU_RUNTIME_MB = 1024
MALI_RUNTIME_MB = 256
GPU_REPLICA_CORES = 2.0
CPU_ALLOCATABLE_FRACTION = 0.9


# ---------------------------------------------------------------------------------------------- import
@dataclass
class ImportReport:
    """What the import did: rows read, records kept, every skipped/merged row counted by reason, and
    flags on kept records (assumed batch sizes, missing dates)."""

    file: str = ""
    rows: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    merged: int = 0
    merged_pairs: list[tuple[str, str]] = field(default_factory=list)  # (kept source, dropped source)
    flagged: Counter = field(default_factory=Counter)
    published: Optional[datetime] = None
    published_from: str = ""
    pick: str = "representative"
    alias_files: tuple[str, ...] = ()

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def summary(self) -> str:
        how = {
            "representative": "merged into a representative run (median p99, upper median)",
            "lowest-p99": "merged into the lowest-p99 run",
        }[self.pick]
        lines = [
            f"{self.file}: {self.rows} rows -> {self.records} records; "
            f"{sum(self.skipped.values())} skipped, {self.merged} {how}"
        ]
        date = self.published.date().isoformat() if self.published else "none found (pass --published YYYY-MM-DD)"
        lines.append(
            f"  round date (measured_at): {date}" + (f"  [{self.published_from}]" if self.published_from else "")
        )
        if self.alias_files:
            lines.append(f"  device aliases: {', '.join(self.alias_files)}")
        for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  skipped {n:5d}  {reason}")
        for reason, n in sorted(self.flagged.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  flagged {n:5d}  {reason}")
        return "\n".join(lines)


def _read_csv(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    name = str(path)
    if not path.exists():
        raise InputError("file not found", file=name)
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        raise InputError("file is empty", file=name)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    for col in required:
        if col not in header:
            raise InputError(f"missing column {col!r}", file=name, row=1, field=col)
    rows = []
    for raw in reader:
        rows.append({(k or "").strip(): (v if isinstance(v, str) else "").strip() for k, v in raw.items()})
    if not rows:
        raise InputError("no data rows", file=name, row=2)
    return rows


def _num(v: str) -> Optional[float]:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _system_key(r: dict) -> tuple[str, str, str]:
    return (r.get("division", "").lower(), r.get("submitter", ""), r.get("system_id", ""))


def import_mlperf_with_report(
    results_csv: str | Path,
    systems_csv: str | Path,
    *,
    round_label: Optional[str] = None,
    published: Optional[datetime] = None,
    aliases: Optional[Aliases] = None,
    pick: str = "representative",
) -> tuple[ProfileTable, ImportReport]:
    """Like :func:`import_mlperf`, also returning the :class:`ImportReport`."""
    if pick not in ("representative", "lowest-p99"):
        raise InputError(f"unknown pick {pick!r}; choose representative or lowest-p99", field="--pick")
    results_csv, systems_csv = Path(results_csv), Path(systems_csv)
    al = aliases or default_aliases()
    systems = {_system_key(s): s for s in _read_csv(systems_csv, SYSTEMS_REQUIRED)}
    rows = _read_csv(results_csv, RESULTS_REQUIRED)
    rep = ImportReport(file=str(results_csv), rows=len(rows), pick=pick, alias_files=al.files)
    if published is not None:
        rep.published, rep.published_from = published, "given"
    else:
        col = next((r.get(c, "") for r in rows for c in DATE_COLUMNS if r.get(c, "").strip()), "")
        if col:
            try:
                rep.published, rep.published_from = datetime.fromisoformat(col.strip()[:10]), "results.csv column"
            except ValueError:
                raise InputError(
                    f"not a date (YYYY-MM-DD): {col!r}",
                    file=str(results_csv),
                    field=next(c for c in DATE_COLUMNS if c in rows[0]),
                ) from None
        else:
            rep.published, rep.published_from = round_date_from_metadata(results_csv.parent)
    groups: dict[tuple, list[ProfileRecord]] = {}
    for i, row in enumerate(rows):
        try:
            rec, flags = _convert(row, systems, round_label, rep.published, al)
        except _Skip as s:
            rep.skip(s.reason)
            continue
        except Exception as e:  # never crash on an odd row; count it
            rep.skip(f"unexpected row error ({type(e).__name__})")
            continue
        for f in flags:
            rep.flagged[f] += 1
        groups.setdefault(rec.key, []).append(rec)
    best: dict[tuple, ProfileRecord] = {}
    for key, runs in groups.items():
        runs.sort(key=_fastest)
        keep = runs[0] if pick == "lowest-p99" else runs[len(runs) // 2]
        best[key] = keep
        for r in runs:
            if r is not keep:
                rep.merged += 1
                rep.merged_pairs.append((keep.source, r.source))
    if rep.published is None:
        rep.flagged["no round date in the round's metadata (measured_at empty)"] += len(best)
    recs = sorted(best.values(), key=_sort_key)
    rep.records = len(recs)
    table = ProfileTable(recs, source=str(results_csv))
    table.import_report = rep  # type: ignore[attr-defined]
    return table, rep


def import_mlperf(
    results_csv: str | Path, systems_csv: str | Path, *, round_label: Optional[str] = None, **kw
) -> ProfileTable:
    """Import an MLPerf Inference results/systems extract as a validated ``ProfileTable``.

    ``round_label`` overrides the ``round`` column (e.g. ``"v3.1"``); ``published`` (a datetime) overrides the
    round date found in its metadata; ``aliases`` (:func:`load_aliases`) maps device names; ``pick`` chooses
    among runs of one profile key (``representative``: the median by p99, upper median; ``lowest-p99``).
    The returned table carries the :class:`ImportReport` as ``table.import_report``.
    Raises ``InputError`` for a missing/empty file or a missing required column.
    """
    return import_mlperf_with_report(results_csv, systems_csv, round_label=round_label, **kw)[0]


def _fastest(a: ProfileRecord) -> tuple:
    return (a.latency_p99_ms, -a.throughput_rps, a.source)


def _sort_key(r: ProfileRecord) -> tuple:
    return tuple(
        ""
        if getattr(r, f) is None
        else (f"{getattr(r, f):09d}" if isinstance(getattr(r, f), int) else str(getattr(r, f)))
        for f in KEY_FIELDS
    )


def _server_batch(row: dict, sysrow: dict, system_id: str) -> Optional[int]:
    """The Server run's own batch size: a results column, the system id, or the system's notes."""
    for c in BATCH_COLUMNS:
        v = _num(row.get(c, ""))
        if v and v >= 1 and float(v).is_integer():
            return int(v)
    m = _BATCH_IN_ID.search(system_id)
    if m:
        return int(m.group(1))
    for t in (sysrow.get("sw_notes", ""), sysrow.get("hw_notes", "")):
        m = re.search(r"(?:server|gpu)?[ _-]?batch[ _-]?size\s*[:=]?\s*(\d+)", t or "", re.I)
        if m and int(m.group(1)) >= 1:
            return int(m.group(1))
    return None


def _convert(
    row: dict, systems: dict, round_label: Optional[str], published: Optional[datetime], al: Aliases
) -> tuple[ProfileRecord, list[str]]:
    flags: list[str] = []
    division = row.get("division", "").lower()
    submitter, system_id = row.get("submitter", ""), row.get("system_id", "")
    scen = SCENARIOS.get(row.get("scenario_dir", "").lower())
    logged = row.get("scenario_logged", "")
    if scen is None:
        raise _Skip(f"unknown scenario {row.get('scenario_dir', '')!r}")
    if logged and logged.lower() != scen.lower():
        raise _Skip("scenario_dir != scenario_logged (reused run)")
    if scen == "Offline":
        raise _Skip("Offline scenario (completion times, not per-request latency)")
    if scen == "MultiStream":
        raise _Skip("MultiStream scenario (8-sample queries)")
    if division == "network":
        raise _Skip("network division (latency includes the network stack)")

    model, prec_hint, why = normalize_model(row.get("model", ""))
    if model is None:
        raise _Skip(why)

    sysrow = systems.get((division, submitter, system_id))
    if sysrow is None:
        raise _Skip("system not in systems.csv")
    framework = sysrow.get("framework", "")
    engine = normalize_engine(system_id, framework)
    if engine is None:
        raise _Skip("unknown engine")
    if engine in EXOTIC_ENGINES:
        raise _Skip(f"exotic accelerator/engine ({engine})")

    acc_name = sysrow.get("accelerator_model_name", "")
    host = sysrow.get("host_processor_model_name", "")
    sid = system_id.lower()
    if engine == "tensorrt" or "-gpu-" in sid or (engine not in CPU_ENGINES and "gpu support" in framework.lower()):
        accelerator = "gpu"
        dev = normalize_gpu(acc_name, host, al)
    elif engine == "armnn-opencl":
        accelerator = "gpu"  # the SoC's Mali GPU
        dev = normalize_board(
            system_id, sysrow.get("system_name", ""), host, sysrow.get("host_processor_core_count", ""), al
        )
    else:
        accelerator = "none"
        if (
            "-cpu-" not in sid
            and engine not in CPU_ENGINES
            and re.search(r"qualcomm|moffett|rbln|atom|mlsoc|recaccel|npu", acc_name.lower())
        ):
            raise _Skip(f"exotic accelerator: {acc_name}")
        dev = normalize_board(
            system_id, sysrow.get("system_name", ""), host, sysrow.get("host_processor_core_count", ""), al
        )

    precision = normalize_precision(row.get("weight_data_types", ""), row.get("input_data_types", ""), prec_hint)
    for sub_re, sys_re, mod_re, p in PRECISION_OVERRIDES:
        if re.search(sub_re, submitter.lower()) and re.search(sys_re, sid) and re.search(mod_re, row.get("model", "")):
            precision = p
    if precision is None:
        raise _Skip("unknown precision")

    power_mode = normalize_power_mode(system_id, sysrow.get("hw_notes", ""), dev.name, engine, submitter)
    threads = parse_threads(system_id, sysrow.get("sw_notes", ""))
    p50, p90, p99 = (_num(row.get(k, "")) for k in ("lat_p50_ns", "lat_p90_ns", "lat_p99_ns"))
    if not all(v is not None and v > 0 for v in (p50, p90, p99)):
        raise _Skip("missing/invalid latency percentiles")
    power = _num(row.get("power_avg_W", ""))
    rnd = (round_label or row.get("round", "") or "unknown").strip()
    source = f"mlperf-{rnd}:{division}/{submitter}/{system_id}/{scen}"

    if scen == "SingleStream":
        batch = 1
        tput = _num(row.get("qps_without_loadgen_overhead", ""))
        if not tput or tput <= 0:
            mean = _num(row.get("lat_mean_ns", ""))
            if not mean or mean <= 0:
                raise _Skip("no throughput (qps and mean latency missing)")
            tput = 1e9 / mean
        accs = 1
    else:  # Server
        if accelerator != "gpu" or engine == "armnn-opencl":
            raise _Skip("Server scenario on a CPU-only system (whole machine, no per-replica split)")
        accs = int(_num(sysrow.get("accelerators_per_node", "")) or 0)
        if accs < 1:
            raise _Skip("Server scenario without accelerators_per_node")
        total = _num(row.get("completed_samples_per_s", "")) or _num(row.get("result_value", ""))
        if not total or total <= 0:
            raise _Skip("Server scenario without throughput")
        tput = total / accs
        power = power / accs if power else None
        own = _server_batch(row, sysrow, system_id)
        if own is not None:
            batch = own
        else:
            batch = SERVER_BATCH.get((dev.name, model), SERVER_BATCH_DEFAULT.get(model, 32))
            source += "#batch-assumed"
            flags.append("Server batch size assumed (not in the run's own settings; source ends #batch-assumed)")

    mem = MODEL_MEMORY_MB.get(model, MODEL_MEMORY_DEFAULT_MB)
    if engine == "armnn-opencl":
        cores, mem_req, n_acc = 1.0, mem + MALI_RUNTIME_MB, 1
    elif accelerator == "gpu":
        cores, mem_req, n_acc = GPU_REPLICA_CORES, mem + GPU_RUNTIME_MB, 1
    else:
        if threads:
            cores = float(threads)
        elif dev.vcpus:
            cores = round(dev.vcpus * CPU_ALLOCATABLE_FRACTION, 1)
        else:
            raise _Skip("CPU run on a device with unknown core count")
        mem_req, n_acc = mem, 0

    try:
        return ProfileRecord(
            model=model,
            engine=engine,
            device=dev.name,
            architecture=dev.architecture,
            accelerator=accelerator,
            precision=precision,
            batch_size=batch,
            threads=threads,
            power_mode=power_mode,
            latency_p50_ms=p50 / 1e6,
            latency_p90_ms=p90 / 1e6,
            latency_p99_ms=p99 / 1e6,
            throughput_rps=tput,
            power_w=power if power and power > 0 else None,
            memory_mb=None,
            cpu_cores=cores,
            memory_request_mb=float(mem_req),
            accelerators=n_acc,
            source=source,
            measured_at=published,
        ), flags
    except ValidationError:
        raise _Skip("record fails validation (e.g. unordered percentiles)") from None


def coverage_matrix(table: ProfileTable) -> str:
    """Device x model record counts as a fixed-width text table."""
    df = table.df
    if df.empty:
        return "(empty)"
    pv = df.pivot_table(index="device", columns="model", values="engine", aggfunc="count", fill_value=0)
    return pv.to_string()


def power_modes(table: ProfileTable) -> dict[str, list[str]]:
    return {d: sorted(g["power_mode"].unique()) for d, g in table.df.groupby("device")}
