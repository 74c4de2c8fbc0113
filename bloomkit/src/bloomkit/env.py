"""`bloomkit env`: what a bug report needs, as a dict (the smoke report's `env`).

Reads the driver from /proc (or nvidia-smi), the CUDA version the driver supports from libcuda,
and every GPU torch sees; when torch sees none but the driver does, the GPUs come from
nvidia-smi and torch's reason is kept: that is the "driver too old for this wheel" case.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

PACKAGES = (
    "bloomkit",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "numpy",
    "datasets",
)
ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "LD_LIBRARY_PATH",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "TORCH_CUDA_ARCH_LIST",
    "PYTORCH_CUDA_ALLOC_CONF",
    "OMP_NUM_THREADS",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def os_pretty_name() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, flags=re.MULTILINE)
        if match:
            return match.group(1)
    return f"{platform.system()} {platform.release()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _nvidia_smi(*query: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-gpu=...`, or [] when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def driver_version() -> str | None:
    """The loaded kernel module's version (e.g. 550.54.15)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
        if match:
            return match.group(1)
    except OSError:
        pass
    rows = _nvidia_smi("driver_version")
    return rows[0][0] if rows else None


def cuda_driver_version() -> str | None:
    """The newest CUDA the installed driver supports (cuDriverGetVersion), e.g. '12.4'."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def cuda_status() -> tuple[bool, str | None]:
    """(usable, why not): torch's own warning when it refuses the device, e.g. old driver."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, None
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    messages = [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
    if messages:
        return False, messages[0]
    if driver_version() is None:
        return False, "no NVIDIA driver loaded"
    return False, "torch.cuda.is_available() is False"


def _torch_gpus() -> list[dict[str, Any]]:
    import torch

    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_gb": round(props.total_memory / 1024**3, 1),
                "multiprocessors": props.multi_processor_count,
                "uuid": str(getattr(props, "uuid", "")) or None,
                "visible_to_torch": True,
            }
        )
    return gpus


def _smi_gpus() -> list[dict[str, Any]]:
    gpus = []
    for row in _nvidia_smi("index", "name", "memory.total", "compute_cap", "uuid"):
        if len(row) < 5:
            continue
        index, name, memory_mib, capability, uuid = row[:5]
        gpus.append(
            {
                "index": int(index) if index.isdigit() else index,
                "name": name,
                "compute_capability": capability if re.fullmatch(r"\d+\.\d+", capability) else None,
                "memory_gb": round(float(memory_mib) / 1024, 1) if memory_mib.isdigit() else None,
                "multiprocessors": None,
                "uuid": uuid,
                "visible_to_torch": False,
            }
        )
    return gpus


def _torch_info(usable: bool, why_not: str | None) -> dict[str, Any]:
    import torch

    nccl = None
    if torch.version.cuda is not None:
        try:
            version = torch.cuda.nccl.version()
            if isinstance(version, int):  # older torch: 2.18.1 as 21801
                version = (version // 10000, version // 100 % 100, version % 100)
            nccl = ".".join(map(str, version))
        except (AttributeError, RuntimeError, TypeError):
            nccl = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,  # what the wheel was built for; None on CPU builds
        "hip": torch.version.hip,
        "cudnn": cudnn,
        "nccl": nccl,
        "arch_list": torch.cuda.get_arch_list() if torch.version.cuda else [],
        "cuda_available": usable,
        "cuda_unavailable_reason": why_not,
        "threads": torch.get_num_threads(),
    }


def collect_env() -> dict[str, Any]:
    """Everything `bloomkit env` prints; cheap enough to run first in every smoke."""
    usable, why_not = cuda_status()
    gpus = _torch_gpus() if usable else _smi_gpus()
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus_usable = os.cpu_count()
    libc, libc_version = platform.libc_ver()
    return {
        "hostname": socket.gethostname(),
        "os": os_pretty_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "libc": f"{libc} {libc_version}".strip() or None,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "cpu": {"model": _cpu_model(), "count": os.cpu_count(), "usable": cpus_usable},
        "memory_gb": _memory_gb(),
        "torch": _torch_info(usable, why_not),
        "driver_version": driver_version(),
        "cuda_driver": cuda_driver_version(),
        "gpus": gpus,
        "packages": package_versions(),
        "env_vars": {k: os.environ[k] for k in ENV_VARS if k in os.environ}
        | {k: v for k, v in os.environ.items() if k.startswith("NCCL_")},
    }


def format_env(env: dict[str, Any]) -> str:
    """The human table."""
    torch_info = env["torch"]
    build = f"CUDA {torch_info['cuda']}" if torch_info["cuda"] else "CPU-only build"
    lines = [
        f"host          {env['hostname']} ({env['os']}, kernel {env['kernel']}, {env['arch']})",
        f"python        {env['python']['version']} ({env['python']['executable']})",
        f"cpu           {env['cpu']['model']} x{env['cpu']['usable']}, {env['memory_gb']} GB",
        f"torch         {torch_info['version']} ({build})",
        f"cuDNN / NCCL  {torch_info['cudnn'] or '-'} / {torch_info['nccl'] or '-'}",
        f"driver        {env['driver_version'] or '-'} (supports CUDA {env['cuda_driver'] or '-'})",
    ]
    if not torch_info["cuda_available"]:
        lines.append(f"cuda          unusable: {torch_info['cuda_unavailable_reason']}")
    for gpu in env["gpus"]:
        lines.append(
            f"gpu {gpu['index']:<9} {gpu['name']}, sm {gpu['compute_capability']}, "
            f"{gpu['memory_gb']} GB" + ("" if gpu["visible_to_torch"] else " (torch cannot use it)")
        )
    if not env["gpus"]:
        lines.append("gpus          none")
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    lines.append(f"packages      {packages}")
    return "\n".join(lines)
