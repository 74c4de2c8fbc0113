"""Training data: JSONL, plain text or a `datasets` name, tokenized and packed into blocks.

JSONL lines are `{"text": ...}`, `{"prompt": ..., "response": ...}` (only the response is
learned: the prompt's labels are masked) or `{"messages": [{"role": ..., "content": ...}]}`
(a conversation rendered by the chat template; only the assistant turns are learned, see
chat.py). Plain text is split into paragraphs at blank lines. Everything is packed into
`seq_len`-token blocks with an EOS between examples (run_clm's `group_texts`), the last block
padded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bloomkit.chat import Chat, parse_messages, tokenize_chat
from bloomkit.errors import BloomkitError, UsageError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
FILE_SUFFIXES = (*JSON_SUFFIXES, ".txt", ".text", ".md")


@dataclass(frozen=True)
class Example:
    """One training example: `prompt` (not learned, may be empty) then `text` (learned)."""

    prompt: str
    text: str


def _parse_json_line(line: str, where: str) -> Example | Chat:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BloomkitError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if isinstance(obj, dict):
        if "messages" in obj:
            return parse_messages(obj["messages"], where)
        if isinstance(obj.get("text"), str):
            return Example("", obj["text"])
        if isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
            return Example(obj["prompt"], obj["response"])
        found = ", ".join(sorted(map(str, obj))) or "none"
    else:
        found = f"a JSON {type(obj).__name__}"
    raise BloomkitError(
        f'{where}: expected {{"text": ...}}, {{"prompt": ..., "response": ...}} with string '
        f'values, or {{"messages": [...]}}; found keys: {found}'
    )


def _read_file(path: Path) -> list[Example | Chat]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        # The command line named a file that is not there: bad usage (exit 2), like argparse.
        raise UsageError(f"data file '{path}' not found") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"data '{path}' is a directory, not a file") from exc
    except OSError as exc:
        raise BloomkitError(f"cannot read data file '{path}': {exc.strerror or exc}") from exc
    lines = raw.split(b"\n")
    text_lines = []
    for number, line in enumerate(lines, start=1):
        try:
            text_lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BloomkitError(f"{path}:{number}: not UTF-8 text") from exc
    first = next((line.strip() for line in text_lines if line.strip()), "")
    if path.suffix.lower() in JSON_SUFFIXES or first.startswith("{"):
        if first.startswith("["):
            raise BloomkitError(f"{path}: a JSON array; bloomkit reads JSONL (one object a line)")
        return [
            _parse_json_line(line, f"{path}:{number}")
            for number, line in enumerate(text_lines, start=1)
            if line.strip()
        ]
    paragraphs = "\n".join(text_lines).split("\n\n")
    return [Example("", p.strip("\n")) for p in paragraphs if p.strip()]


def _read_dataset(name: str, split: str) -> list[Example | Chat]:
    try:
        import datasets  # optional: only for --data NAME
    except ImportError as exc:
        raise BloomkitError(
            f"data '{name}' is not a file, and reading a Hugging Face dataset by name needs "
            "the `datasets` package (pip install datasets)"
        ) from exc
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types; all mean "cannot load it"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BloomkitError(f"cannot load dataset '{name}' (split {split}): {first}") from exc
    columns = set(rows.column_names)
    if "messages" in columns:
        where = f"dataset '{name}' ({split}) row"
        return [parse_messages(r["messages"], f"{where} {i}") for i, r in enumerate(rows)]
    if "text" in columns:
        return [Example("", r["text"]) for r in rows if r["text"]]
    if {"prompt", "response"} <= columns:
        return [Example(r["prompt"], r["response"]) for r in rows]
    raise BloomkitError(
        f"dataset '{name}' needs a 'text' column, 'prompt' and 'response' columns, or a "
        "'messages' column; "
        f"it has: {', '.join(sorted(columns))}"
    )


def read_examples(source: str, split: str = "train") -> list[Example | Chat]:
    """The examples in a file (or a dataset by name); an empty result is an error."""
    path = Path(source).expanduser()
    looks_like_file = path.suffix.lower() in FILE_SUFFIXES or source.startswith((".", "/", "~"))
    if path.exists() or looks_like_file:
        examples = _read_file(path)
    else:
        examples = _read_dataset(source, split)
    # A chat row always has an assistant turn (parse_messages checks it): something to learn.
    if not any(isinstance(e, Chat) or e.text.strip() for e in examples):
        raise BloomkitError(f"dataset '{source}' is empty: no example has any text to learn")
    return examples


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length blocks of input_ids / attention_mask / labels."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.labels = labels

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "labels": self.labels[i],
        }

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens over one pass."""
        return int(self.attention_mask.sum())


def has_chat(examples: list[Example | Chat]) -> bool:
    """Whether any example is a conversation (and so needs a chat template)."""
    return any(isinstance(e, Chat) for e in examples)


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def pack(examples: list[Example | Chat], tokenizer: Any, seq_len: int) -> PackedDataset:
    """Tokenize, join with EOS, cut into `seq_len` blocks; pad the last one."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if eos is None:
        raise BloomkitError("the tokenizer has no end-of-sequence token to separate examples")
    plain = [e for e in examples if isinstance(e, Example)]
    texts = iter(_token_ids(tokenizer, [e.text for e in plain]))
    prompts = iter(_token_ids(tokenizer, [e.prompt for e in plain]))
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        if isinstance(example, Chat):
            chat_ids, learned = tokenize_chat(tokenizer, example)
            ids += [*chat_ids, eos]
            # The template ends each assistant turn with its own end token, which is learned;
            # the separator after the conversation is not an assistant token.
            labels += [
                t if keep else IGNORE_INDEX for t, keep in zip(chat_ids, learned, strict=True)
            ]
            labels.append(IGNORE_INDEX)
            continue
        prompt_ids, text_ids = next(prompts), next(texts)
        ids += prompt_ids + text_ids + [eos]
        labels += [IGNORE_INDEX] * len(prompt_ids) + text_ids + [eos]
    remainder = len(ids) % seq_len
    padding = (seq_len - remainder) % seq_len
    mask = [1] * len(ids) + [0] * padding
    ids += [pad] * padding
    labels += [IGNORE_INDEX] * padding
    if all(label == IGNORE_INDEX for label in labels):
        raise BloomkitError("dataset is empty after tokenization: nothing to learn")

    def blocks(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).view(-1, seq_len)

    dataset = PackedDataset(blocks(ids), blocks(mask), blocks(labels))
    log.info(
        "%d examples, %d tokens, %d blocks of %d",
        len(examples),
        dataset.num_tokens,
        len(dataset),
        seq_len,
    )
    return dataset
