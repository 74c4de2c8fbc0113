"""stack.yml as text: UTF-8, YAML without duplicate keys, and every problem on one short line.

spec.py holds the schema; this module reads a file's bytes up to the mapping the schema checks,
and words the schema's errors by field (`torch.variants[1]: ...`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from gpurig.errors import UsageError
from gpurig.spec_types import shown

PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")
MAX_PROBLEM_CHARS = 300


def field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif PLAIN_KEY.fullmatch(item):
            parts.append(("." if parts else "") + item)
        else:  # a key as the user typed it: maybe long, maybe holding a newline
            parts.append(f"[{shown(item)}]")
    return "".join(parts) or "(top level)"


def explain(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (remove it, or check its spelling against docs/stack.md)"
    if kind == "missing":
        return "is required"
    got = error.get("input")
    if kind == "string_type":
        return f"should be text, got {shown(got)}: quote it"
    if kind in ("int_parsing", "int_type"):
        return f"should be a whole number, got {shown(got)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"should be true or false, got {shown(got)}"
    if kind in ("list_type", "dict_type"):
        want = "a list" if kind == "list_type" else "a mapping"
        return f"should be {want}, got {type(got).__name__} {shown(got)}"
    return str(message).removeprefix("Value error, ")


class SpecErrors(UsageError):
    """Every problem in a spec at once, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        # Each value a problem echoes is already cut short; this bounds the rest too.
        self.problems = [p if len(p) <= MAX_PROBLEM_CHARS else p[:299] + "…" for p in problems]
        lines = "\n".join(f"  {source}: {p}" for p in self.problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{lines}")


class SpecLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice is an error: YAML keeps the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` keys may be overridden; that is what merging is for
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {shown(key)}, first on line {first_line[key] + 1}: keep one",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def decode(data: bytes, source: str) -> str:
    """The spec as text: UTF-8, and no NUL byte (a binary file is valid UTF-8 by luck)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start
    else:
        if "\0" not in text:
            return text.removeprefix("\ufeff")
        offset = data.index(b"\0")
    raise SpecErrors(source, [f"is not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset})"])


def read_mapping(text: str, source: str) -> dict[Any, Any]:
    """The YAML mapping of a spec, or SpecErrors saying why there is none."""
    try:
        data = yaml.load(text, Loader=SpecLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecErrors(source, [f"{where}not valid YAML ({problem[:120]})"]) from None
    if data is None:
        raise SpecErrors(source, ["is empty: it needs at least python and torch"])
    if not isinstance(data, dict):
        raise SpecErrors(source, [f"must be a mapping of keys, got {type(data).__name__}"])
    return data


def problem(error: Any) -> str:
    """One of pydantic's errors as `field: what is wrong`."""
    return f"{field_path(error['loc'])}: {explain(error)}"
