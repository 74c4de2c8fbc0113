"""Models and tokenizers: the built-in tiny BLOOM, Hub ids, local directories, LoRA adapters.

Loading a Hub id looks in the local cache (HF_HOME) first and goes to the network only when the
cache lacks it, after a quick reachability check: an air-gapped host gets one clear line at
once instead of a minute of retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from bloomkit.config import TINY
from bloomkit.errors import BloomkitError, UsageError

log = logging.getLogger(__name__)

# Text the tiny tokenizer is trained on and the smoke test trains the tiny model on.
TINY_CORPUS = """\
A GPU host is ready when it can train a model, save it, load it again and generate text.
The driver talks to the kernel module, the CUDA runtime talks to the driver, and torch talks
to the CUDA runtime. Each layer can break on its own: a new kernel without a rebuilt module,
a wheel built for a newer CUDA than the driver, a card that falls back to a narrow PCIe link.
bloomkit checks each of them in turn and writes down what it measured.
The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.
Matrix multiplication is the heart of a transformer: attention, projections and the MLP.
Memory bandwidth feeds it, and the all-reduce keeps every replica of the weights the same.
0 1 2 3 4 5 6 7 8 9 10 100 1000; tokens per second, TFLOP/s, GB/s, seconds and bytes.
"""
TINY_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # BLOOM's order: unk 0, bos 1, eos 2, pad 3
TINY_VOCAB_SIZE = 512
TINY_SEED = 1234
HUB_PROBE_TIMEOUT_S = 3.0


def build_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on TINY_CORPUS: deterministic, a few milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS.splitlines(), trainer)
    unk, bos, eos, pad = TINY_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        model_max_length=1024,
    )


def build_tiny_model(tokenizer: Any) -> Any:
    """A 2-layer, 64-wide BLOOM with fixed initial weights (the same on every host)."""
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # The same weights everywhere, whatever the caller's RNG state: a LoRA adapter trained on
    # "tiny" finds its base again by name.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = BloomForCausalLM(config)
    model.name_or_path = TINY
    model.config.name_or_path = TINY
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@contextlib.contextmanager
def tiny_cpu_threads(device: torch.device, model_name: str) -> Iterator[None]:
    """One intra-op thread for the tiny model on a CPU: its 64-wide matmuls gain nothing from
    more, and on a busy host OpenMP threads that wait on each other cost 10x (a smoke step:
    25 ms with one thread, 200-400 ms with two, on 2 contended cores)."""
    if device.type != "cpu" or model_name != TINY:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Loaded:
    """A model ready to use, its tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    source: str  # "tiny", "hub", "local"
    base: str | None = None  # the base model, when `model` came from a LoRA adapter


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """Not a Hub id ('name' or 'org/name'): a directory the user meant."""
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection reach the Hub endpoint? (Behind a proxy, assume so.)"""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _unreachable(name: str, why: str) -> BloomkitError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return BloomkitError(
        f"model '{name}' not found locally and the Hub is unreachable: {why}; "
        f"set HF_HOME to a cache that has it (now {hf_home}) or pass a local directory"
    )


def explain_load_error(name: str, exc: BaseException) -> BloomkitError:
    """One line for why `name` could not be loaded."""
    kinds = {type(c).__name__ for c in _causes(exc)}
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if kinds & {"RepositoryNotFoundError", "GatedRepoError"}:
        return BloomkitError(
            f"model '{name}' not found on the Hub (private and gated models need HF_TOKEN)"
        )
    if "RevisionNotFoundError" in kinds:
        return BloomkitError(f"model '{name}': revision not found on the Hub")
    if kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "gaierror"}:
        return _unreachable(name, text)
    if "Unrecognized configuration class" in text:
        return BloomkitError(f"model '{name}' is not a causal language model: {text}")
    return BloomkitError(f"cannot load model '{name}': {text}")


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name)`: the cache first, then the Hub when it answers."""
    local = Path(name).expanduser()
    if local.is_dir():
        try:
            return loader.from_pretrained(str(local), **kwargs)
        except (OSError, ValueError) as exc:
            raise explain_load_error(name, exc) from exc
    if _looks_like_path(name):
        raise BloomkitError(f"model directory '{name}' does not exist")
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        if "LocalEntryNotFoundError" not in {type(c).__name__ for c in _causes(exc)}:
            raise explain_load_error(name, exc) from exc
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise _unreachable(name, "HF_HUB_OFFLINE is set")
    if not hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise _unreachable(name, f"no connection to {endpoint}")
    log.info("downloading %s from the Hub", name)
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise explain_load_error(name, exc) from exc


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> Any:
    if name == TINY:
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without one; padding positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str,
    *,
    dtype: torch.dtype | None = None,
    base: str | None = None,
    merge_adapter: bool = True,
    trust_remote_code: bool = False,
) -> Loaded:
    """'tiny', a Hub id, a model directory, or a LoRA adapter directory (base + adapter)."""
    if name == TINY:
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer)
        if dtype is not None:
            model = model.to(dtype)
        return Loaded(model, tokenizer, TINY)
    if is_adapter_dir(name):
        return _load_adapter(
            name, dtype=dtype, base=base, merge=merge_adapter, trust_remote_code=trust_remote_code
        )
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = _from_pretrained(AutoModelForCausalLM, name, **kwargs)
    source = "local" if Path(name).expanduser().is_dir() else "hub"
    return Loaded(model, tokenizer, source)


def _load_adapter(
    path: str, *, dtype: torch.dtype | None, base: str | None, merge: bool, trust_remote_code: bool
) -> Loaded:
    from peft import PeftModel

    try:
        adapter_config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BloomkitError(f"adapter '{path}': unreadable adapter_config.json ({exc})") from exc
    base_name = base or adapter_config.get("base_model_name_or_path")
    if not base_name:
        raise UsageError(f"adapter '{path}' does not name its base model: pass --base")
    loaded = load_model(base_name, dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        model = PeftModel.from_pretrained(loaded.model, path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BloomkitError(f"cannot apply adapter '{path}' to '{base_name}': {exc}") from exc
    if merge:
        # Merged weights generate at the base model's speed.
        model = model.merge_and_unload()
    tokenizer = loaded.tokenizer
    if (Path(path) / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return Loaded(model, tokenizer, "local", base=base_name)


def default_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes bf16 where the GPU has it, fp16 on older GPUs, fp32 on the CPU."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise UsageError("fp16 needs a CUDA device: use --precision bf16 or fp32 on a CPU")
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"{torch.cuda.get_device_name(device)} has no bf16: use fp16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
