"""Training data: examples from datasource.py, tokenized and packed into blocks.

Everything is packed into `seq_len`-token blocks with an EOS between examples (run_clm's
`group_texts`), the last block padded. The examples arrive as a stream and are tokenized a
batch at a time; the token ids go to an unnamed temporary file that training reads
memory-mapped. So memory stays flat however big the data: the page cache holds what is in use
and gives it back under pressure, and the file vanishes with the process (even a killed one).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np
import torch

from bloomkit.chat import Chat, tokenize_chat
from bloomkit.datasource import local_files, stream_examples
from bloomkit.errors import BloomkitError
from bloomkit.examples import Example, has_text

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips
TOKENIZE_BATCH = 1000  # examples per tokenizer call: its speed, with bounded memory


def check_source(source: str) -> None:
    """The cheap checks (the file or folder is there and readable), before any heavy import."""
    local_files(source)


def iter_examples(source: str, split: str = "train") -> Iterator[Example | Chat]:
    """The examples of `source`, streamed; an error at the end when none has text to learn."""
    learnable = False
    for example in stream_examples(source, split):
        learnable = learnable or has_text(example)
        yield example
    if not learnable:
        raise BloomkitError(f"dataset '{source}' is empty: no example has any text to learn")


def read_examples(source: str, split: str = "train") -> list[Example | Chat]:
    """Every example of `source` in a list (small data: tests, inspection)."""
    return list(iter_examples(source, split))


class PackedDataset(torch.utils.data.Dataset):
    """Fixed-length blocks of input_ids / attention_mask / labels over int32 arrays (memory-
    mapped from pack()'s file). Only the last block has padding: the mask is a position test."""

    def __init__(
        self, input_ids: np.ndarray, labels: np.ndarray, num_tokens: int, num_examples: int
    ):
        self._ids = input_ids
        self._labels = labels
        self.num_tokens = num_tokens  # real (unpadded) tokens over one pass
        self.num_examples = num_examples
        self.seq_len = input_ids.shape[1]

    def __len__(self) -> int:
        return self._ids.shape[0]

    def _mask(self, first: int, count: int) -> torch.Tensor:
        positions = torch.arange(first, first + count)
        return (positions < self.num_tokens).long()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        return {
            "input_ids": torch.from_numpy(self._ids[i].astype(np.int64)),
            "attention_mask": self._mask(i * self.seq_len, self.seq_len),
            "labels": torch.from_numpy(self._labels[i].astype(np.int64)),
        }

    # Whole tensors, for small data (tests, inspection); training reads blocks.
    @property
    def input_ids(self) -> torch.Tensor:
        return torch.from_numpy(self._ids.astype(np.int64))

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self._labels.astype(np.int64))

    @property
    def attention_mask(self) -> torch.Tensor:
        return self._mask(0, self._ids.size).view(-1, self.seq_len)


class _TokenFile:
    """An unnamed temporary file of int32 values, written in pieces, then memory-mapped."""

    def __init__(self) -> None:
        # Closed by blocks(): the memory map it returns keeps the data alive after that.
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="bloomkit-tokens-")  # noqa: SIM115
        self.count = 0

    def write(self, values: list[int]) -> None:
        np.asarray(values, dtype=np.int32).tofile(self.file)
        self.count += len(values)

    def blocks(self, seq_len: int) -> np.ndarray:
        self.file.flush()
        # Copy-on-write: torch wants writable arrays, and nothing must change the file.
        return np.memmap(
            self.file, dtype=np.int32, mode="c", shape=(self.count // seq_len, seq_len)
        )


def _tokenized(
    examples: Iterable[Example | Chat], tokenizer: Any, on_chat: Callable[[], None] | None
) -> Iterator[tuple[list[int], list[int], int]]:
    """(ids, labels, how many examples) of each batch of examples, each example followed by
    EOS. The plain texts of a batch go through the tokenizer in one call (its fast path), and
    each batch is written to the token files at once."""
    eos = tokenizer.eos_token_id
    chat_seen = False
    iterator = iter(examples)
    while batch := list(itertools.islice(iterator, TOKENIZE_BATCH)):
        plain = [e for e in batch if isinstance(e, Example)]
        texts = iter(_token_ids(tokenizer, [e.text for e in plain]))
        # Most data has no prompts: only the non-empty ones are tokenized.
        prompted = iter(_token_ids(tokenizer, [e.prompt for e in plain if e.prompt]))
        ids: list[int] = []
        labels: list[int] = []
        for example in batch:
            if isinstance(example, Chat):
                if not chat_seen and on_chat is not None:
                    on_chat()  # the template is checked when the data first needs one
                chat_seen = True
                chat_ids, learned = tokenize_chat(tokenizer, example)
                ids += chat_ids
                ids.append(eos)
                # The template ends each assistant turn with its own end token, which is
                # learned; the separator after the conversation is not an assistant token.
                labels += [
                    t if keep else IGNORE_INDEX for t, keep in zip(chat_ids, learned, strict=True)
                ]
                labels.append(IGNORE_INDEX)
                continue
            prompt_ids = next(prompted) if example.prompt else []
            text_ids = next(texts)
            ids += prompt_ids
            ids += text_ids
            ids.append(eos)
            labels += [IGNORE_INDEX] * len(prompt_ids)
            labels += text_ids
            labels.append(eos)
        yield ids, labels, len(batch)


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def pack(
    examples: Iterable[Example | Chat],
    tokenizer: Any,
    seq_len: int,
    on_chat: Callable[[], None] | None = None,
) -> PackedDataset:
    """Tokenize, join with EOS, cut into `seq_len` blocks; pad the last one.

    `on_chat` runs once, before the first conversation is tokenized (finetune checks the chat
    template there)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if eos is None:
        raise BloomkitError("the tokenizer has no end-of-sequence token to separate examples")
    ids, labels = _TokenFile(), _TokenFile()
    count = 0
    learned = False
    for batch_ids, batch_labels, examples_in_batch in _tokenized(examples, tokenizer, on_chat):
        count += examples_in_batch
        ids.write(batch_ids)
        labels.write(batch_labels)
        learned = learned or any(label != IGNORE_INDEX for label in batch_labels)
    num_tokens = ids.count
    padding = (seq_len - num_tokens % seq_len) % seq_len
    ids.write([pad] * padding)
    labels.write([IGNORE_INDEX] * padding)
    if not learned:
        raise BloomkitError("dataset is empty after tokenization: nothing to learn")
    dataset = PackedDataset(ids.blocks(seq_len), labels.blocks(seq_len), num_tokens, count)
    log.info("%d examples, %d tokens, %d blocks of %d", count, num_tokens, len(dataset), seq_len)
    return dataset
