"""gpurig.atomic: files and folders replaced whole, never seen half-written or missing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gpurig import atomic


def test_write_text_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.json"
    atomic.write_text(path, "first\n")
    inode = path.stat().st_ino
    atomic.write_text(path, "second\n", mode=0o600)
    assert path.read_text() == "second\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old, not rewritten
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    atomic.write_text(path, "old\n")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_swaps_the_folder_and_a_reader_always_finds_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # the two-rename fallback, where renameat2 is missing
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    directory = tmp_path / "lock"
    directory.mkdir()
    (directory / "manifest.json").write_text("old")
    missing: list[bool] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            missing.append(not (directory / "manifest.json").exists())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for generation in range(20):
            staging = tmp_path / f".lock.{generation}"
            staging.mkdir()
            (staging / "manifest.json").write_text(str(generation))
            atomic.replace_dir(staging, directory)
            assert not staging.exists()
    finally:
        stop.set()
        thread.join()
    assert (directory / "manifest.json").read_text() == "19"
    assert sorted(os.listdir(tmp_path)) == ["lock"]
    if exchange:
        assert not any(missing)  # renameat2 swapped them: never a moment without the folder


def test_linux_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").touch()
    assert atomic._exchange(a, b)
    assert [p.name for p in b.iterdir()] == ["from-a"]
    assert list(a.iterdir()) == []
