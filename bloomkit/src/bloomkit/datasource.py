"""Where training data comes from: local files, a folder of them, or a dataset by name, all read
through Hugging Face `datasets` as streams.

Streaming (`load_dataset(..., streaming=True)`), not Arrow memory-mapping: a stream reads a
file in ~10 MB chunks and keeps nothing, so a 50 GB JSONL file costs neither memory nor a
second 50 GB Arrow copy in the HF cache (a host's disk is sized for models); pack() then writes
the tokens to a memory-mapped file (data.py). The price is that a stream has no random access,
which packing does not need.

`datasets` parses (pyarrow: fast, and every format it knows); bloomkit keeps the errors precise.
A JSON Lines file is also scanned as bytes for the line number of each row, so a conversation
that fails later still names its line; when `datasets` cannot parse a file, or a row has the
wrong shape, the file is read again line by line with the standard library, which names the
first bad line and what is wrong with it. Nothing is written before every row has been read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bloomkit.chat import Chat
from bloomkit.errors import BloomkitError, UsageError
from bloomkit.examples import Example, example_from_json, example_from_row

log = logging.getLogger(__name__)

# suffix -> the `datasets` builder that reads it
BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
# A folder's Markdown is its README or dataset card, not training text (a file named alone is).
FOLDER_SUFFIXES = sorted(set(BUILDERS) - {".md"})
FIRST_CHUNK = 10 << 20  # bytes `datasets` parses at once in a JSON Lines file (its chunksize)
STACK_ADVICE = (
    "hosts' venvs are locked and read-only: add it under `packages:` (or `extra_packages:`) "
    "in stack.yml, then `gpurig resolve` and deploy again"
)


def _datasets() -> Any:
    try:
        import datasets  # heavy (pyarrow, pandas): imported when data is read, not at start-up
    except ImportError as exc:
        raise BloomkitError(
            f"reading training data needs the `datasets` package; {STACK_ADVICE}"
        ) from exc
    if not log.isEnabledFor(logging.DEBUG):
        # Its parse failures are logged as errors before they are raised: bloomkit says what is
        # wrong once, in one line (--debug shows them).
        datasets.utils.logging.set_verbosity(logging.CRITICAL)
    datasets.utils.logging.disable_progress_bar()
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def local_files(source: str) -> list[Path] | None:
    """The files `source` names (a folder: its data files, sorted), or None for a dataset name.

    Cheap (no `datasets`): a missing or unreadable file fails here, before any heavy import."""
    path = Path(source).expanduser()
    looks_like_path = path.suffix.lower() in BUILDERS or source.startswith((".", "/", "~"))
    if not path.exists():
        if looks_like_path:
            # The command line named a file that is not there: bad usage (exit 2), like argparse.
            raise UsageError(f"data file '{path}' not found")
        return None
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in FOLDER_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise UsageError(
                f"data folder '{path}' has no data files ({', '.join(FOLDER_SUFFIXES)})"
            )
    else:
        files = [path]
    for file in files:
        try:
            file.open("rb").close()
        except OSError as exc:
            raise BloomkitError(f"cannot read data file '{file}': {exc.strerror or exc}") from exc
    return files


def _first_byte(path: Path) -> bytes:
    """The first non-blank byte of a file (b'' when there is none)."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line.strip()[:1]
    return b""


def _builder(path: Path, first: bytes) -> str:
    # Files without a known suffix: JSON Lines when they start with an object, else text.
    return BUILDERS.get(path.suffix.lower()) or ("json" if first == b"{" else "text")


def _line_numbers(path: Path) -> Iterator[int]:
    """The numbers of the non-blank lines of a JSON Lines file: the line of each row."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number


def _precise_error(path: Path, builder: str, limit: float = float("inf")) -> BloomkitError | None:
    """The first bad line of a file (of its first `limit` bytes), read line by line with the
    standard library (one line in memory at a time); None when every line is good."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if f.tell() > limit:
                break
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return BloomkitError(f"{where}: not UTF-8 text")
            if builder == "json" and line.strip():
                if number == 1 and line.lstrip().startswith("["):
                    return _json_document_error(path)
                try:
                    example_from_json(line, where)
                except BloomkitError as exc:
                    return exc
    return None


def _json_document_error(path: Path) -> BloomkitError | None:
    """The first error in a whole-document JSON file (a list of rows)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return BloomkitError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})")
    rows = document if isinstance(document, list) else [document]
    for index, row in enumerate(rows):
        try:
            example_from_row(row, f"{path}: item {index}")
        except BloomkitError as exc:
            return exc
    return None


def _stream(path: Path, builder: str) -> Any:
    options = {"sample_by": "paragraph"} if builder == "text" else {}
    return _datasets().load_dataset(
        builder, data_files=str(path), split="train", streaming=True, **options
    )


def _file_examples(path: Path) -> Iterator[Example | Chat]:
    first = b"" if path.suffix.lower() == ".parquet" else _first_byte(path)
    builder = _builder(path, first)
    if builder != "parquet" and not first:
        return  # blank: no rows (`datasets` would fail on it without saying why)
    lines = _line_numbers(path) if builder == "json" and first == b"{" else None
    if lines is not None:
        # When the first chunk of a JSON Lines file does not parse, `datasets` retries by
        # reading the whole file into memory (as one JSON document); a bad line there is found
        # here instead, before it can.
        early = _precise_error(path, builder, limit=FIRST_CHUNK)
        if early is not None:
            raise early
    try:
        for index, row in enumerate(_stream(path, builder)):
            if builder == "text":
                # Paragraphs are split at blank lines; the blank lines around them are layout.
                text = row["text"].strip("\n")
                if text.strip():
                    yield Example("", text)
                continue
            where = f"{path}:{next(lines)}" if lines is not None else f"{path}: row {index + 1}"
            yield example_from_row(row, where)
    except BloomkitError as exc:
        raise (_precise_error(path, builder) if builder == "json" else None) or exc from None
    except Exception as exc:  # pyarrow, UnicodeDecodeError, datasets' own: all "cannot parse"
        precise = None if builder == "parquet" else _precise_error(path, builder)
        if precise is not None:
            raise precise from exc
        raise BloomkitError(f"cannot read '{path}' as {builder}: {_first_line(exc)}") from exc


def _named_examples(name: str, split: str) -> Iterator[Example | Chat]:
    datasets = _datasets()
    try:
        rows = datasets.load_dataset(name, split=split, streaming=True)
        rows = iter(rows)
        first = next(rows, None)
    except Exception as exc:  # datasets raises many types; all mean "cannot load it"
        raise BloomkitError(
            f"cannot load dataset '{name}' (split {split}): {_first_line(exc)}"
        ) from exc
    if first is None:
        return
    if not {"messages", "text"} & set(first) and not {"prompt", "response"} <= set(first):
        raise BloomkitError(
            f"dataset '{name}' needs a 'text' column, 'prompt' and 'response' columns, or a "
            f"'messages' column; it has: {', '.join(sorted(first))}"
        )
    where = f"dataset '{name}' ({split}) row"
    yield example_from_row(first, f"{where} 0")
    for index, row in enumerate(rows, start=1):
        yield example_from_row(row, f"{where} {index}")


def stream_examples(source: str, split: str = "train") -> Iterator[Example | Chat]:
    """The examples of a file, a folder of files or a dataset name, one at a time.

    Call local_files() first for its cheap checks; this generator fails on the first bad row."""
    files = local_files(source)
    if files is None:
        yield from _named_examples(source, split)
        return
    for path in files:
        log.debug("reading %s", path)
        yield from _file_examples(path)
