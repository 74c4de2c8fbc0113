"""Chat data and chat templates: `{"messages": [...]}` rows, which template renders them, and
which of the rendered tokens are learned (the assistant turns, nothing else).

A conversation goes through the tokenizer's own chat template (the one the model will see at
generation time), or through bloomkit's default template when the user asks for it with
`--chat-template default`. A tokenizer without a template is an error that names both fixes:
bloomkit never picks a format silently, since a model fine-tuned in one format and prompted in
another answers badly and nothing says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloomkit.errors import BloomkitError, UsageError

ROLES = ("system", "user", "assistant", "tool")
LEARNED_ROLE = "assistant"
DEFAULT = "default"

# Zephyr's layout: `<|role|>`, a newline, the content, then the tokenizer's own EOS token.
# Ending each turn with EOS (not a new `<|im_end|>` token) means any tokenizer can use it
# without new embeddings, and generation stops at the end of the assistant's turn through the
# model's usual EOS.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_SAMPLE = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Chat:
    """One conversation: (role, content) turns, at least one of them the assistant's."""

    messages: tuple[tuple[str, str], ...]
    where: str = ""  # file:line (or dataset row) it came from, for errors found later

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def _kind(value: Any) -> str:
    return f"a JSON {type(value).__name__}" if value is not None else "null"


def parse_messages(value: Any, where: str) -> Chat:
    """The `messages` of one row, checked key by key; the error names the line and the key."""
    if not isinstance(value, list) or not value:
        found = "an empty list" if value == [] else _kind(value)
        raise BloomkitError(
            f'{where}: "messages" must be a non-empty list of {{"role": ..., "content": ...}} '
            f"objects; found {found}"
        )
    turns = []
    for index, message in enumerate(value):
        at = f"{where}: messages[{index}]"
        if not isinstance(message, dict):
            raise BloomkitError(
                f'{at}: expected {{"role": ..., "content": ...}}; found {_kind(message)}'
            )
        for key in ("role", "content"):
            if key not in message:
                found = ", ".join(sorted(map(str, message))) or "none"
                raise BloomkitError(f'{at}: missing key "{key}" (found keys: {found})')
        role, content = message["role"], message["content"]
        if role not in ROLES:
            shown = json.dumps(role) if isinstance(role, str) else _kind(role)
            raise BloomkitError(f"{at}.role: expected one of {', '.join(ROLES)}; found {shown}")
        if not isinstance(content, str):
            raise BloomkitError(f"{at}.content: expected a string; found {_kind(content)}")
        turns.append((role, content))
    if not any(role == LEARNED_ROLE for role, _ in turns):
        # Only assistant turns are learned: a row without one would train nothing.
        raise BloomkitError(f'{where}: no "assistant" message, so nothing to learn')
    return Chat(tuple(turns), where)


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja2.TemplateError, or a template's own raise_exception()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BloomkitError(f"the chat template cannot render this conversation: {first}") from exc


def use_template(tokenizer: Any, choice: str | None, model: str) -> None:
    """Give `tokenizer` the template to use: `choice` ('default' or a Jinja file), else its own.

    Checked by rendering a one-message conversation, so a broken template fails here, before
    any training or generation."""
    if choice == DEFAULT:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    elif choice is not None:
        path = Path(choice).expanduser()
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise UsageError(
                f"--chat-template '{choice}' not found (a Jinja file, or 'default')"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --chat-template '{choice}': {exc}") from exc
    elif not getattr(tokenizer, "chat_template", None):
        raise BloomkitError(
            f"model '{model}' has no chat template: set chat_template in its tokenizer_config.json "
            f"or pass --chat-template default (bloomkit's Zephyr-style template) or "
            f"--chat-template FILE.jinja"
        )
    _render(tokenizer, _SAMPLE, add_generation_prompt=True)


def prompt_text(tokenizer: Any, prompt: str, system: str | None) -> str:
    """`prompt` as a user turn (after `system`, if any), ready for the assistant's answer."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return _render(tokenizer, messages, add_generation_prompt=True)


def tokenize_chat(tokenizer: Any, chat: Chat) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation, and for each whether it is learned.

    An assistant turn spans from the end of the conversation before it, rendered with the
    generation prompt (the `<|assistant|>` header is the prompt, not learned), to the end of the
    conversation including it. The whole text is tokenized once and tokens are assigned by
    their character offsets: tokenizing the pieces apart could split words differently."""
    messages = chat.as_dicts()
    where = chat.where or "a conversation"
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != LEARNED_ROLE:
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
        upto = _render(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (text.startswith(upto) and upto.startswith(before)):
            raise BloomkitError(
                f"{where}: the chat template does not render a conversation as the sum of its "
                "turns, so the assistant's tokens cannot be told apart"
            )
        # Whitespace after the end-of-turn token is the template's layout, not the answer.
        spans.append((len(before), len(upto.rstrip())))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    learned = [
        any(start <= first < end for start, end in spans) for first, _ in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), learned
