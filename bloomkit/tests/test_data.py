"""Reading and packing training data, and every way a data file can be wrong."""

from __future__ import annotations

import json

import pytest

from bloomkit.data import IGNORE_INDEX, pack, read_examples
from bloomkit.errors import BloomkitError
from bloomkit.models import build_tiny_tokenizer


def test_jsonl_text_and_prompt_response(data_dir) -> None:
    texts = read_examples(str(data_dir / "train.jsonl"))
    assert len(texts) == 24
    assert all(e.prompt == "" for e in texts)
    pairs = read_examples(str(data_dir / "sft.jsonl"))
    assert pairs[0].prompt == "What does bloomkit smoke check?"


def test_text_file_is_split_into_paragraphs(data_dir) -> None:
    examples = read_examples(str(data_dir / "notes.txt"))
    assert len(examples) == 8


def test_pack_masks_prompts_and_pads_the_last_block(data_dir) -> None:
    tokenizer = build_tiny_tokenizer()
    dataset = pack(read_examples(str(data_dir / "sft.jsonl")), tokenizer, seq_len=32)
    labels = dataset.labels.flatten()
    ids = dataset.input_ids.flatten()
    mask = dataset.attention_mask.flatten()
    prompt_ids = tokenizer("What does bloomkit smoke check?", add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)].tolist() == prompt_ids
    assert (labels[: len(prompt_ids)] == IGNORE_INDEX).all()  # the prompt is not learned
    assert labels[len(prompt_ids)] != IGNORE_INDEX  # the response is
    assert dataset.input_ids.shape[1] == 32
    assert (labels[mask == 0] == IGNORE_INDEX).all()
    assert dataset.num_tokens == int(mask.sum())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "fine"}\n{"text": "fine"\n', r"bad\.jsonl:2: not valid JSON"),
        ('{"text": "fine"}\n\n{"input": "x"}\n', r"bad\.jsonl:3: expected .*found keys: input"),
        ('{"text": "fine"}\n[1, 2]\n', r"bad\.jsonl:2: expected .*a JSON list"),
        ('{"prompt": "p", "response": 3}\n', r"bad\.jsonl:1: expected"),
        ('{"text": ""}\n{"text": "  "}\n', r"dataset '.*bad\.jsonl' is empty"),
        ("", r"dataset '.*bad\.jsonl' is empty"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BloomkitError, match=message):
        read_examples(str(path))


def test_missing_unreadable_and_binary_files(tmp_path) -> None:
    with pytest.raises(BloomkitError, match=r"data file '.*nope\.jsonl' not found"):
        read_examples(str(tmp_path / "nope.jsonl"))
    with pytest.raises(BloomkitError, match=r"data folder '.*' has no data files \(.csv, "):
        read_examples(str(tmp_path) + "/")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(BloomkitError, match=r"b\.txt:2: not UTF-8"):
        read_examples(str(binary))


def test_unreadable_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "locked.jsonl"
    path.write_text('{"text": "x"}\n')

    def denied(self, *_):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "open", denied)  # root ignores chmod 000
    with pytest.raises(BloomkitError, match=r"cannot read data file '.*locked\.jsonl': Permission"):
        read_examples(str(path))


def test_dataset_name_without_datasets_package(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(BloomkitError, match="needs the `datasets` package") as caught:
        read_examples("someone/some-dataset")
    # Hosts' venvs are hash-locked and read-only: the way to get a package is the stack.
    assert "pip install" not in str(caught.value)
    assert "in stack.yml, then `gpurig resolve` and deploy again" in str(caught.value)


def test_bad_data_through_the_cli_is_one_line(cli, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a"}) + "\n{oops\n")
    result = cli("finetune", "--model", "tiny", "--data", bad, "--output", tmp_path / "o")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "bad.jsonl:2: not valid JSON" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "o.partial").exists()
