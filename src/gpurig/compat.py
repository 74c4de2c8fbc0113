"""The compatibility table (data/compat.yaml) and the checks that use it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from packaging.version import Version

from gpurig.spec import Stack

PYPI_SIMPLE = "https://pypi.org/simple"


@dataclass(frozen=True)
class Table:
    cuda: dict[str, dict[str, str]]
    indexes: dict[str, str]
    torch: dict[str, dict[str, Any]]
    os_python: dict[str, str]


@cache
def table() -> Table:
    text = resources.files("gpurig.data").joinpath("compat.yaml").read_text()
    raw = yaml.safe_load(text)
    return Table(raw["cuda"], raw["indexes"], raw["torch"], raw["os_python"])


def cuda_version(variant: str) -> str | None:
    """'cu130' -> '13.0'; None for cpu."""
    return None if variant == "cpu" else table().cuda[variant]["cuda"]


def min_driver(variant: str) -> Version | None:
    return None if variant == "cpu" else Version(min_driver_text(variant))


def min_driver_text(variant: str) -> str:
    """As NVIDIA writes it (580.65.06); Version() would drop the zero."""
    return table().cuda[variant]["min_driver"]


def arches(torch_version: str, variant: str) -> list[str]:
    """Compute capabilities the build ships kernels for ([] for cpu)."""
    return list(table().torch[torch_version]["variants"][variant])


def driver_runs(branch_or_version: str | int, variant: str) -> bool:
    """Does a driver (a full version, or a branch like 535) run this variant's CUDA runtime?"""
    floor = min_driver(variant)
    if floor is None:
        return True
    text = str(branch_or_version)
    if "." not in text:  # a branch: its newest release is what gets installed
        return int(text) >= floor.major
    return Version(text) >= floor


def variants_for_driver(stack: Stack, driver: str | int) -> list[str]:
    return [v for v in stack.torch.variants if v != "cpu" and driver_runs(driver, v)]


def torch_index(stack: Stack, variant: str) -> str | None:
    """Index that serves this variant's torch, or None when the main index / find_links do."""
    override = stack.sources.torch_index.get(variant)
    if override is False:
        return None
    if override:
        return str(override)
    row = table().torch.get(stack.torch.version_of(variant), {})
    if row.get("pypi") == variant and stack.sources.index.rstrip("/") == PYPI_SIMPLE:
        return None
    return table().indexes.get(variant)


def _unknown(version: str, field: str) -> str:
    known = ", ".join(sorted(table().torch, key=Version))
    return f"{field}: no compatibility data for torch {version}; known: {known}"


def _pypi_build_problem(stack: Stack, variant: str) -> str | None:
    """A CUDA variant that would install PyPI's torch although PyPI builds that release for
    another CUDA: the lock would hold the wrong build under the variant's name."""
    version = stack.torch.version_of(variant)
    pypi = table().torch[version].get("pypi")
    only_pypi = stack.sources.torch_index.get(variant) is False
    if variant == "cpu" or not only_pypi or pypi == variant:
        return None
    if stack.sources.index.rstrip("/") != PYPI_SIMPLE:
        return None  # a mirror of PyTorch's own index may carry it
    field = f"torch.versions.{variant}" if variant in stack.torch.versions else "torch.version"
    builds = [v for v, row in table().torch.items() if row.get("pypi") == variant]
    hint = (
        f"set torch.versions.{variant}: {max(builds, key=Version)} (PyPI's), or " if builds else ""
    )
    return (
        f"{field}: PyPI builds torch {version} for {pypi}, not {variant}, and "
        f"sources.torch_index.{variant} is off: {hint}name PyTorch's {variant} index there"
    )


def problems(stack: Stack) -> list[str]:
    """Impossible combinations, each as 'field.path: what is wrong; what would be valid'."""
    rows = table().torch
    version = stack.torch.version
    if version not in rows:
        return [_unknown(version, "torch.version")]
    found = [
        _unknown(v, f"torch.versions.{variant}")
        for variant, v in stack.torch.versions.items()
        if v not in rows
    ]
    if found:
        return found
    for i, python in enumerate(stack.python):
        for release in dict.fromkeys(stack.torch.version_of(v) for v in stack.torch.variants):
            supported = rows[release]["python"]
            if python not in supported:
                found.append(
                    f"python[{i}]: torch {release} has no wheels for Python {python}; "
                    f"it supports {', '.join(supported)}"
                )
    cuda_variants = []
    for i, variant in enumerate(stack.torch.variants):
        release = stack.torch.version_of(variant)
        offered = rows[release]["variants"]
        if variant not in offered:
            found.append(
                f"torch.variants[{i}]: torch {release} has no {variant} build; "
                f"it offers {', '.join(offered)}"
            )
            continue
        pypi_problem = _pypi_build_problem(stack, variant)
        if pypi_problem:
            found.append(pypi_problem)
        if variant != "cpu":
            cuda_variants.append(variant)
    branch = stack.nvidia.driver_branch
    runnable = [v for v in cuda_variants if driver_runs(branch, v)]
    for variant in cuda_variants:
        if variant in runnable:
            continue
        floor = min_driver(variant)
        assert floor is not None
        release = stack.torch.version_of(variant)
        offered = rows[release]["variants"]
        older = [v for v in offered if v != "cpu" and driver_runs(branch, v)]
        hint = f"choose the {older[-1]} variant, or " if older else ""
        found.append(
            f"nvidia.driver_branch: {branch} cannot run torch {release} {variant} "
            f"(CUDA {cuda_version(variant)} needs driver {min_driver_text(variant)} or newer): "
            f"{hint}set driver branch {floor.major}"
        )
    if stack.nvidia.require_gpu and not cuda_variants:
        found.append("nvidia.require_gpu: true, but torch.variants has no CUDA variant to install")
    return found
