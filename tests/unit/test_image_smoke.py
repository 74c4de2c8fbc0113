"""The image smoke run without an engine: its argv, report name, and output folder."""

from __future__ import annotations

import os

import pytest

from gpurig import spec
from gpurig.images import smoke


def test_smoke_argv_and_report_name(stack: spec.Stack) -> None:
    assert smoke.smoke_argv(stack, False, "/out/smoke.json") == [
        "smoke", "--json", "/out/smoke.json", "--model", "tiny",
    ]  # fmt: skip
    quick = stack.model_copy(update={"smoke": spec.Smoke(quick=True, model="m")})
    assert smoke.smoke_argv(quick, True, "/o.json")[-3:] == ["m", "--quick", "--require-gpu"]
    name = smoke.report_name("gpurig/bloomkit:cpu-cp311-0123456789ab")
    assert name == "gpurig-bloomkit-cpu-cp311-0123456789ab"
    assert smoke._owner({"Config": {"User": "10001:10001"}}) == (10001, 10001)
    assert smoke._owner({"Config": {"User": "gpurig"}}) is None


@pytest.mark.parametrize("euid", [0, 1000])
@pytest.mark.parametrize("user", ["10001:10001", "gpurig", ""])
def test_the_smoke_output_folder_is_never_world_writable(
    monkeypatch: pytest.MonkeyPatch, euid: int, user: str
) -> None:
    monkeypatch.setattr(smoke.os, "geteuid", lambda: euid)
    chowned: list[tuple[int, int]] = []
    monkeypatch.setattr(smoke.os, "chown", lambda path, uid, gid: chowned.append((uid, gid)))
    out, group_add = smoke.output_folder({"Config": {"User": user}})
    try:
        mode = out.stat().st_mode & 0o777
        assert not mode & 0o007, oct(mode)
        if euid == 0 and user == "10001:10001":
            assert chowned == [(10001, 10001)]
            assert group_add is None
        else:  # the container's user writes through the caller's group
            assert mode == 0o770
            assert group_add == [str(os.getgid())]
    finally:
        out.rmdir()
