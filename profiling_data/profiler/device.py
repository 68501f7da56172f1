"""Facts about the machine the profiler runs on, read from the machine itself.

The device name follows the normalisation of the default (MLPerf-derived) data where the machine is
recognisable: the board model (``/proc/device-tree/model``), the DMI product name (cloud instance type) and
the CPU model string go through :func:`profiling_data.mlperf.normalize_board`, so a Jetson AGX Orin is
``jetson-agx-orin``, a Raspberry Pi 4 ``rpi4``, an AWS m7g ``graviton3`` and a Xeon Platinum 8275CL
``x86-xeon-8275cl`` -- the same names as the imported profiles and the default cluster's pools.  Anything
else becomes ``x86-<cpu model slug>`` / ``arm64-<core type>``.  ``--device NAME`` overrides it (e.g. to match a
``ClusterSpec`` pool's ``device``).
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: ARM "CPU part" codes (implementer 0x41) -> core name.
ARM_PARTS = {
    "0xd03": "cortex-a53",
    "0xd04": "cortex-a35",
    "0xd05": "cortex-a55",
    "0xd07": "cortex-a57",
    "0xd08": "cortex-a72",
    "0xd09": "cortex-a73",
    "0xd0a": "cortex-a75",
    "0xd0b": "cortex-a76",
    "0xd0c": "neoverse-n1",
    "0xd0d": "cortex-a77",
    "0xd41": "cortex-a78",
    "0xd42": "cortex-a78ae",
    "0xd44": "cortex-x1",
    "0xd40": "neoverse-v1",
    "0xd46": "cortex-a510",
    "0xd47": "cortex-a710",
    "0xd49": "neoverse-n2",
    "0xd4f": "neoverse-v2",
    "0xd4b": "cortex-a78c",
}


@dataclass
class DeviceFacts:
    hostname: str
    architecture: str  # amd64 | arm64 (Kubernetes names)
    machine: str  # platform.machine()
    cpu_model: str
    cores_online: int
    cores_usable: int  # what this process may use: CPU affinity, capped by a cgroup CPU quota
    cpu_quota: float | None  # cgroup CPU limit in cores, None = unlimited
    board: str  # device-tree model or DMI product name ('' when unknown)
    accelerator: str  # 'none' or what was detected (the CPU engines measured here never use it)
    power_mode: str  # nvpmodel mode on Jetson, else 'default'
    governor: str  # cpufreq governor of cpu0 ('' when not exposed)
    mem_total_mb: float
    kernel: str
    python: str
    device: str = ""  # normalised device name
    flags: list[str] = field(default_factory=list)  # SIMD features of interest

    def as_dict(self) -> dict:
        return asdict(self)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def k8s_arch(machine: str) -> str:
    m = machine.lower()
    if m in ("aarch64", "arm64", "armv8l", "armv8") or m.startswith("arm"):
        return "arm64"
    return "amd64"


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info.setdefault(k.strip().lower(), v.strip())
    return info


def cpu_model(info: dict[str, str] | None = None) -> str:
    info = _cpuinfo() if info is None else info
    for k in ("model name", "cpu model", "processor"):
        v = info.get(k, "")
        if v and not v.isdigit():
            return " ".join(v.split())
    part = info.get("cpu part", "").lower()
    if part:
        return ARM_PARTS.get(part, f"arm-part-{part}")
    return platform.processor() or platform.machine()


def cpu_quota() -> float | None:
    """cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when unlimited or unknown."""
    v2 = _read("/sys/fs/cgroup/cpu.max").split()
    if len(v2) == 2 and v2[0] != "max":
        try:
            return int(v2[0]) / int(v2[1])
        except ValueError:
            pass
    q, p = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    try:
        if q and p and int(q) > 0:
            return int(q) / int(p)
    except ValueError:
        pass
    return None


def usable_cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    q = cpu_quota()
    if q is not None:
        n = min(n, max(1, math.floor(q + 1e-9)))
    return max(1, n)


def power_mode() -> str:
    """Jetson: ``nvpmodel -q`` (e.g. ``NV Power Mode: MAXN`` -> ``maxn``, ``15W`` -> ``15w``); else ``default``."""
    exe = shutil.which("nvpmodel")
    if not exe:
        return "default"
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "default"
    m = re.search(r"NV Power Mode:\s*(\S+)", out)
    if not m:
        return "default"
    mode = m.group(1).strip().lower()
    if mode.startswith("maxn"):
        return "maxn"
    return re.sub(r"[^a-z0-9]+", "-", mode).strip("-") or "default"


def accelerator() -> str:
    if Path("/etc/nv_tegra_release").exists() or Path("/dev/nvhost-gpu").exists() or Path("/dev/nvgpu").exists():
        return "jetson-gpu"
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists():
        return "nvidia-gpu"
    if Path("/dev/mali0").exists():
        return "mali-gpu"
    return "none"


def board() -> str:
    dt = _read("/proc/device-tree/model")
    if dt:
        return dt
    return _read("/sys/class/dmi/id/product_name")


_SIMD = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",
)


def normalize_device(cpu: str, brd: str, arch: str) -> str:
    """Device name as the default data spells it (see module doc)."""
    try:
        from synergai.profiling_data.mlperf import normalize_board

        return normalize_board(brd, brd, cpu).name
    except Exception:  # unknown to the MLPerf rules (or that module unavailable)
        pass
    s = cpu.lower()
    s = re.sub(r"\((r|tm)\)", "", s)
    s = re.sub(r"\b(cpu|processor|core\s+processor|\d+-core)\b", " ", s)
    s = re.sub(r"@.*$", "", s)
    s = re.sub(r"\s+\d+(\.\d+)?\s*ghz.*$", "", s)
    s = s.replace("+", "plus")
    s = re.sub(r"[^a-z0-9.]+", "-", s).strip("-")
    if arch == "arm64":
        return f"arm64-{s or 'cpu'}"
    s = re.sub(r"^(genuineintel|authenticamd)-?", "", s)
    return f"x86-{s or 'cpu'}"


def read_facts(device: str | None = None) -> DeviceFacts:
    info = _cpuinfo()
    machine = platform.machine()
    arch = k8s_arch(machine)
    cpu = cpu_model(info)
    brd = board()
    flags_raw = set((info.get("flags") or info.get("features") or "").split())
    mem = 0.0
    m = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo"))
    if m:
        mem = int(m.group(1)) / 1024
    facts = DeviceFacts(
        hostname=socket.gethostname(),
        architecture=arch,
        machine=machine,
        cpu_model=cpu,
        cores_online=os.cpu_count() or 1,
        cores_usable=usable_cores(),
        cpu_quota=cpu_quota(),
        board=brd,
        accelerator=accelerator(),
        power_mode=power_mode(),
        governor=_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        mem_total_mb=round(mem, 1),
        kernel=platform.release(),
        python=platform.python_version(),
        flags=sorted(f for f in _SIMD if f in flags_raw),
    )
    facts.device = device.strip().lower() if device else normalize_device(cpu, brd, arch)
    return facts


# ------------------------------------------------------------------------------------------- memory / power
def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status (ru_maxrss as a fallback)."""
    cur = peak = 0.0
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    if peak == 0.0:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, max(cur, peak)


class Rapl:
    """Package energy counters (``/sys/class/powercap/intel-rapl:N``) when readable; else inactive."""

    def __init__(self):
        self.files = []
        base = Path("/sys/class/powercap")
        if base.exists():
            for d in sorted(base.glob("intel-rapl:*")):
                if d.name.count(":") == 1 and (d / "energy_uj").exists():
                    try:
                        int((d / "energy_uj").read_text())
                        rng = (
                            int((d / "max_energy_range_uj").read_text()) if (d / "max_energy_range_uj").exists() else 0
                        )
                        self.files.append((d / "energy_uj", rng))
                    except (OSError, ValueError):
                        continue

    @property
    def active(self) -> bool:
        return bool(self.files)

    def read(self) -> list[int]:
        return [int(f.read_text()) for f, _ in self.files]

    def joules(self, before: list[int], after: list[int]) -> float:
        tot = 0
        for (f, rng), a, b in zip(self.files, before, after):
            d = b - a
            if d < 0 and rng:
                d += rng
            tot += max(0, d)
        return tot / 1e6
