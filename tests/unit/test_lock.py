"""The lock: committed, fresh for stack.yml, reproducible, and honest about each target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpurig import compat, lock, spec
from gpurig.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def test_committed_lock_is_fresh(stack: spec.Stack, locked: lock.Lock) -> None:
    locked.assert_fresh(stack)


def test_every_pin_is_hashed(locked: lock.Lock) -> None:
    for target in locked.targets.values():
        pins = lock.parse_requirements(locked.requirements(target).read_text())
        assert pins.keys() == target.packages.keys()
        for name, (version, hashes) in pins.items():
            assert hashes, f"{target.name}: {name}=={version} has no hash"


def test_variants_carry_the_right_torch(locked: lock.Lock) -> None:
    for target in locked.targets.values():
        nvidia = [p for p in target.packages if p.startswith("nvidia-")]
        if target.variant == "cpu":
            assert target.torch.endswith("+cpu")
            assert not nvidia
        else:
            assert nvidia, f"{target.name} has no CUDA libraries"
            assert any(p.endswith("-cu13") for p in nvidia) == (target.variant == "cu130")


def test_unavailable_targets_say_why(locked: lock.Lock) -> None:
    assert "cpu-cp313" in locked.unavailable
    assert "sources.find_links" in locked.unavailable["cpu-cp313"]


def test_local_wheels_are_pinned_by_the_lock(locked: lock.Lock) -> None:
    target = locked.targets["cpu-cp311"]
    assert target.local_wheels, "torch's CPU wheel comes from a controller folder"
    hashes = lock.parse_requirements(locked.requirements(target).read_text())["torch"][1]
    for folder, digest in target.local_wheels.values():
        assert digest in hashes
        assert folder in target.find_links


def test_a_changed_pin_makes_the_lock_stale(locked: lock.Lock, stack: spec.Stack) -> None:
    changed = stack.model_copy(update={"packages": {**stack.packages, "peft": "0.1.0"}})
    with pytest.raises(UsageError, match="stale"):
        locked.assert_fresh(changed)


def test_hand_edits_are_caught(tmp_path: Path, stack: spec.Stack) -> None:
    copy = tmp_path / "lock"
    shutil.copytree(REPO / "lock", copy)
    (copy / "cpu-cp311.txt").write_text("torch==2.13.0\n")
    with pytest.raises(UsageError, match="edited by hand"):
        lock.load(copy).assert_fresh(stack)


def test_missing_and_corrupt_locks_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="gpurig resolve"):
        lock.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UsageError, match="gpurig resolve"):
        lock.load(tmp_path)


def test_parse_requirements_handles_continuations() -> None:
    text = (
        "a-b==1.0 \\\n    --hash=sha256:" + "0" * 64 + " \\\n    --hash=sha256:" + "1" * 64 + "\n"
    )
    assert lock.parse_requirements(text) == {"a-b": ("1.0", ["0" * 64, "1" * 64])}


def test_driver_floor_and_branches() -> None:
    assert not compat.driver_runs(535, "cu130")
    assert compat.driver_runs(580, "cu130")
    assert compat.driver_runs("535.261.03", "cu126")
    assert not compat.driver_runs("575.57.08", "cu130")
    assert compat.min_driver_text("cu130") == "580.65.06"


def test_pypi_variant_needs_no_torch_index(stack: spec.Stack) -> None:
    assert compat.torch_index(stack, "cu130") is None  # PyPI carries the cu130 build
    assert compat.torch_index(stack, "cpu") is None  # disabled in stack.yml: find_links only
    other = stack.model_copy(update={"sources": spec.Sources()})
    assert compat.torch_index(other, "cpu") == "https://download.pytorch.org/whl/cpu"
    assert compat.torch_index(other, "cu126") == "https://download.pytorch.org/whl/cu126"


@pytest.mark.slow
def test_resolve_reproduces_the_committed_lock(tmp_path: Path, stack: spec.Stack) -> None:
    """exclude_newer pins the resolution in time: a fresh resolve gives the same files."""
    fresh = lock.resolve(stack, tmp_path / "lock")
    committed = json.loads((REPO / "lock/manifest.json").read_text())
    rebuilt = json.loads((fresh.directory / "manifest.json").read_text())
    assert rebuilt == committed
    for target in fresh.targets.values():
        assert (fresh.directory / target.file).read_text() == (
            REPO / "lock" / target.file
        ).read_text()


def test_the_cuda_a_resolved_torch_is_built_for() -> None:
    def pins(*names: str, torch: str = "2.10.0") -> dict[str, tuple[str, list[str]]]:
        return {"torch": (torch, []), **{n: ("1", []) for n in names}}

    assert lock._built_cuda_major(pins("nvidia-cublas-cu12", "nvidia-nccl-cu12")) == "12"
    # PyPI's CUDA 13 wheels are partly unsuffixed (nvidia-cublas): a suffixed one tells.
    assert lock._built_cuda_major(pins("nvidia-cublas", "nvidia-cudnn-cu13")) == "13"
    assert lock._built_cuda_major(pins(torch="2.13.0+cu128")) == "12"
    assert lock._built_cuda_major(pins("numpy", torch="2.13.0+cpu")) is None


def test_each_variant_locks_its_own_torch(stack: spec.Stack) -> None:
    assert stack.torch.version_of("cu128") == "2.10.0"
    assert lock._requirements_in(stack, "cu128").startswith("torch==2.10.0\n")
    assert lock._requirements_in(stack, "cu130").startswith(f"torch=={stack.torch.version}\n")
    locked = lock.load(REPO / "lock")
    assert locked.targets["cu128-cp311"].torch == "2.10.0"
    assert any(n.endswith("-cu12") for n in locked.targets["cu128-cp313"].packages)
    assert not any(n.endswith("-cu12") for n in locked.targets["cu130-cp311"].packages)
