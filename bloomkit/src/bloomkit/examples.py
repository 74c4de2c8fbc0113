"""What one training example is, and how a row of data becomes one (or says why it cannot).

A row is `{"text": ...}`, `{"prompt": ..., "response": ...}` (only the response is learned: the
prompt's labels are masked) or `{"messages": [{"role": ..., "content": ...}]}` (a conversation
rendered by the chat template; only the assistant turns are learned, see chat.py). The same
names serve as JSON keys, CSV and Parquet columns, and a hub dataset's columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bloomkit.chat import Chat, parse_messages
from bloomkit.errors import BloomkitError


@dataclass(frozen=True)
class Example:
    """One training example: `prompt` (not learned, may be empty) then `text` (learned)."""

    prompt: str
    text: str


def example_from_row(row: Any, where: str) -> Example | Chat:
    """The example a row holds. Columnar sources (Arrow) give every row every column, absent
    values as None: a None counts as absent here."""
    if isinstance(row, dict):
        if row.get("messages") is not None:
            return parse_messages(row["messages"], where)
        if isinstance(row.get("text"), str):
            return Example("", row["text"])
        if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            return Example(row["prompt"], row["response"])
        found = ", ".join(sorted(str(k) for k, v in row.items() if v is not None)) or "none"
    else:
        found = f"a JSON {type(row).__name__}"
    raise BloomkitError(
        f'{where}: expected {{"text": ...}}, {{"prompt": ..., "response": ...}} with string '
        f'values, or {{"messages": [...]}}; found keys: {found}'
    )


def example_from_json(line: str, where: str) -> Example | Chat:
    """One JSON Lines line, parsed by the standard library: the reference for what a line means
    and for the precise error about it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BloomkitError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if isinstance(row, dict) and "messages" in row:
        return parse_messages(row["messages"], where)  # null messages: say so, not "no keys"
    return example_from_row(row, where)


def has_text(example: Example | Chat) -> bool:
    # A chat row always has an assistant turn (parse_messages checks it): something to learn.
    return isinstance(example, Chat) or bool(example.text.strip())
