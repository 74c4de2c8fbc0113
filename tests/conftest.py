"""Fixtures every test folder shares: the repository's spec and lock, and a model checkpoint
laid out in a Hugging Face cache."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# ansible-core patches sys.intern when some unit tests import it in-process, and torch (its
# dynamo) cannot be imported after that: dynamo comes first, whatever the tests' order.
import torch._dynamo  # noqa: F401

from gpurig import lock, spec
from gpurig.sandbox.hubcache import lay_out

REPO = Path(__file__).resolve().parents[1]
TINY_REPO = "gpurig-test/tiny-bloom"


def make_tiny_bloom(hub: Path, repo: str = TINY_REPO) -> str:
    """A 2-layer BLOOM made from a config (no download) with a byte-level tokenizer, saved and
    laid out as `repo`'s snapshot in the hub cache folder `hub`; returns its revision."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BloomConfig, BloomForCausalLM, PreTrainedTokenizerFast

    out = hub.parent / "tiny-bloom-save"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        ["the quick brown fox jumps over the lazy dog"] * 4,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>"]),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)
    BloomForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    return lay_out(hub, repo, files)


@pytest.fixture(scope="session")
def tiny_bloom_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(hub cache folder, repo id, revision) of a tiny BLOOM in a controller-side HF cache."""
    hub = tmp_path_factory.mktemp("controller-hf") / "hub"
    return hub, TINY_REPO, make_tiny_bloom(hub)


@pytest.fixture(scope="module")
def stack() -> spec.Stack:
    """stack.yml as committed (a test file may define its own `stack` instead)."""
    return spec.load(REPO / "stack.yml")


@pytest.fixture(scope="module")
def locked() -> lock.Lock:
    """The committed lock."""
    return lock.load(REPO / "lock")


@pytest.fixture
def gnupg_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a throwaway gpg keyring (GNUPGHOME in tmp_path). gpg starts an agent
    for it that outlives the test unless told to go: this fixture ends it."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    yield {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
