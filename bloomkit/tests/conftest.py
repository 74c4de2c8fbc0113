"""Shared fixtures: the data files, the CLI run in-process, one tiny fine-tune per session."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


def _restore_the_real_bloomkit() -> None:
    """Under --import-mode=importlib pytest names this file `bloomkit.tests.conftest` and, before
    running it, registers the repository folder bloomkit/ (no __init__.py) as a namespace
    package called `bloomkit`, hiding the installed one. Put the installed package back; the
    test modules keep their `bloomkit.tests.*` names."""
    module = sys.modules.get("bloomkit")
    if module is not None and getattr(module, "__file__", None) is None:
        del sys.modules["bloomkit"]
        importlib.import_module("bloomkit")


_restore_the_real_bloomkit()

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the Hub, and none may use the user's HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`bloomkit ARGS...` in this process (imports are paid once): exit code, stdout, stderr."""

    from bloomkit.cli import main

    def run(*argv: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


TINY_STEPS = 8


@pytest.fixture(scope="session")
def tiny_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A fine-tune of the tiny model on train.jsonl, shared by the tests that only read it."""
    from bloomkit.config import FinetuneArgs
    from bloomkit.finetune import finetune

    out = tmp_path_factory.mktemp("finetune") / "tiny-out"
    summary = finetune(
        FinetuneArgs(
            data=str(DATA / "train.jsonl"),
            output=out,
            model="tiny",
            max_steps=TINY_STEPS,
            batch_size=4,
            seq_len=32,
            lr=1e-2,
            logging_steps=1,
            save_steps=4,
            progress=False,
        )
    )
    return out, summary
