"""Data in every format `datasets` reads: CSV, Parquet, JSON documents, text, folders of them,
and a dataset by name; streamed, with errors that name the file and the row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bloomkit.chat import Chat
from bloomkit.data import iter_examples, read_examples
from bloomkit.errors import BloomkitError
from bloomkit.examples import Example

CHAT = [{"role": "user", "content": "Is the host ready?"}, {"role": "assistant", "content": "Yes."}]


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_text_and_prompt_response_columns(tmp_path) -> None:
    texts = _csv(tmp_path / "t.csv", "text", "first text", '"second, with a comma"')
    assert read_examples(str(texts)) == [
        Example("", "first text"),
        Example("", "second, with a comma"),
    ]
    pairs = _csv(tmp_path / "p.csv", "prompt,response,source", "What is it?,A host.,docs")
    assert read_examples(str(pairs)) == [Example("What is it?", "A host.")]


def test_csv_without_the_columns_names_the_file_and_row(tmp_path) -> None:
    bad = _csv(tmp_path / "bad.csv", "question,answer", "q,a")
    with pytest.raises(BloomkitError, match=r"bad\.csv: row 1: expected .*found keys: answer, q"):
        read_examples(str(bad))


def test_parquet_text_and_chat_columns(tmp_path) -> None:
    pq.write_table(pa.table({"text": ["one", "two", "three"]}), tmp_path / "t.parquet")
    assert [e.text for e in read_examples(str(tmp_path / "t.parquet"))] == ["one", "two", "three"]
    pq.write_table(pa.table({"messages": [CHAT, CHAT]}), tmp_path / "c.parquet")
    chats = read_examples(str(tmp_path / "c.parquet"))
    assert all(isinstance(c, Chat) for c in chats)
    assert chats[1].messages == (("user", "Is the host ready?"), ("assistant", "Yes."))
    assert chats[1].where.endswith("c.parquet: row 2")


def test_a_file_that_is_not_parquet(tmp_path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really\n")
    with pytest.raises(
        BloomkitError, match=r"cannot read '.*broken\.parquet' as parquet: "
    ) as caught:
        read_examples(str(path))
    assert "\n" not in str(caught.value)


def test_json_document_with_a_list_of_rows(tmp_path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"text": "a"}, {"prompt": "p", "response": "r"}], indent=2))
    assert read_examples(str(path)) == [Example("", "a"), Example("p", "r")]
    path.write_text('[\n  {"text": "a"},\n  {"text": \n]\n')
    with pytest.raises(BloomkitError, match=r"rows\.json:4: not valid JSON"):
        read_examples(str(path))


def test_jsonl_rows_keep_their_line_numbers_across_blank_lines(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    row = json.dumps({"messages": CHAT})
    path.write_text(f"\n{row}\n\n\n{row}\n")
    assert [c.where.rsplit(":", 1)[1] for c in read_examples(str(path))] == ["2", "5"]


def test_text_file_paragraphs(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsame paragraph\n\n\n\nsecond\n\nthird\n")
    assert [e.text for e in read_examples(str(path))] == [
        "first line\nsame paragraph",
        "second",
        "third",
    ]


def test_a_folder_reads_its_data_files_in_order(tmp_path) -> None:
    folder = tmp_path / "data"
    (folder / "nested").mkdir(parents=True)
    (folder / ".cache").mkdir()
    _csv(folder / "a.csv", "text", "from csv")
    pq.write_table(pa.table({"text": ["from parquet"]}), folder / "b.parquet")
    (folder / "c.jsonl").write_text(json.dumps({"prompt": "p", "response": "from jsonl"}) + "\n")
    (folder / "nested" / "d.txt").write_text("from text\n")
    (folder / "README").write_text("not data: no data suffix\n")
    (folder / "README.md").write_text("# A dataset card, not training text\n")
    (folder / ".cache" / "e.jsonl").write_text('{"text": "hidden: skipped"}\n')
    examples = read_examples(str(folder))
    assert [e.text for e in examples] == ["from csv", "from parquet", "from jsonl", "from text"]
    assert examples[2].prompt == "p"


def test_a_bad_file_in_a_folder_is_named(tmp_path) -> None:
    _csv(tmp_path / "a.csv", "text", "fine")
    (tmp_path / "b.jsonl").write_text('{"text": "fine"}\n{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(BloomkitError, match=r"b\.jsonl:3: expected .*found keys: txt"):
        read_examples(str(tmp_path))


def test_a_bad_line_at_the_start_of_a_big_file_is_found_without_reading_it_all(
    tmp_path, monkeypatch
) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "fine"}\n{oops\n' + '{"text": "fine"}\n' * 1000)
    import datasets

    def never(*_, **__):
        raise AssertionError("datasets was asked to read a file with a bad first chunk")

    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(BloomkitError, match=r"big\.jsonl:2: not valid JSON"):
        read_examples(str(path))


def test_examples_stream_before_the_file_is_read(tmp_path) -> None:
    """The first example arrives before the reader reaches a bad line near the end (`datasets`
    reads 10 MB at a time)."""
    path = tmp_path / "big.jsonl"
    good = json.dumps({"text": "a line of training text " * 4}) + "\n"
    path.write_text(good * 200_000 + "{oops\n")  # 22 MB; the bad line is the 200,001st
    stream = iter_examples(str(path))
    assert next(stream).text.startswith("a line")
    with pytest.raises(BloomkitError, match=r"big\.jsonl:200001: not valid JSON"):
        for _ in stream:
            pass


def test_a_dataset_name_is_streamed_from_datasets(monkeypatch) -> None:
    import datasets

    calls = []
    rows = [{"text": "hub row one"}, {"text": "hub row two"}]

    def load_dataset(name, **kwargs):
        calls.append((name, kwargs))
        return datasets.Dataset.from_list(rows).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    examples = read_examples("someone/some-dataset", split="validation")
    assert [e.text for e in examples] == ["hub row one", "hub row two"]
    assert calls == [("someone/some-dataset", {"split": "validation", "streaming": True})]


def test_a_dataset_name_without_usable_columns(monkeypatch) -> None:
    import datasets

    def load_dataset(name, **kwargs):
        return datasets.Dataset.from_list([{"question": "q", "answer": "a"}]).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(BloomkitError, match=r"needs a 'text' column.*it has: answer, question"):
        read_examples("someone/some-dataset")


def test_an_unreachable_hub_is_one_line(cli, tmp_path) -> None:
    # No hub here (and the tests' HF_HUB_OFFLINE=1 makes sure of it).
    result = cli(
        "finetune", "--model", "tiny", "--data", "someone/some-dataset", "--output", tmp_path / "o"
    )
    assert result.code == 1
    assert result.err.startswith(
        "bloomkit finetune: error: cannot load dataset 'someone/some-dataset' (split train): "
    )
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "o.partial").exists()


def test_finetune_on_a_folder_of_mixed_formats(cli, tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _csv(folder / "a.csv", "prompt,response", *[f"Question {i}?,Answer {i}." for i in range(20)])
    pq.write_table(
        pa.table({"text": [f"Parquet text {i}." for i in range(20)]}), folder / "b.parquet"
    )
    (folder / "c.txt").write_text("\n\n".join(f"Paragraph {i}." for i in range(20)) + "\n")
    out = tmp_path / "out"
    result = cli(
        "finetune", "--model", "tiny", "--data", folder, "--output", out,
        "--max-steps", "2", "--seq-len", "32", "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads((out / "bloomkit_config.json").read_text())
    assert record["data"]["examples"] == 60
    assert record["result"]["global_step"] == 2


def test_help_does_not_import_datasets() -> None:
    code = (
        "import sys\n"
        "from bloomkit.cli import main\n"
        "main(['finetune', '--help'])\n"
        "print('datasets' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip().splitlines()[-1] == "False False"
