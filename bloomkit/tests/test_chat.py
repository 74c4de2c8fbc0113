"""Chat data and chat models: rows checked key by key, the loss on assistant turns only, the
template saved with the output, `generate --chat`, and the error for a model without one."""

from __future__ import annotations

import io
import json

import pytest

from bloomkit.chat import DEFAULT_CHAT_TEMPLATE, Chat, prompt_text, tokenize_chat, use_template
from bloomkit.config import GenerateArgs
from bloomkit.data import IGNORE_INDEX, pack, read_examples
from bloomkit.errors import BloomkitError
from bloomkit.generate import generate
from bloomkit.models import build_tiny_tokenizer

from .conftest import CHATML_TEMPLATE, make_checkpoint

CONVERSATION = Chat(
    (
        ("system", "Be brief."),
        ("user", "What does smoke check?"),
        ("assistant", "The CUDA stack."),
        ("user", "And the exit code?"),
        ("assistant", "Zero means pass."),
    )
)


def _tokenizer(template: str = DEFAULT_CHAT_TEMPLATE):
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def test_chat_rows_are_read(data_dir) -> None:
    examples = read_examples(str(data_dir / "chat.jsonl"))
    assert len(examples) == 16
    assert all(isinstance(e, Chat) for e in examples)
    assert examples[0].messages[0] == (
        "system",
        "You answer questions about GPU hosts in one sentence.",
    )
    assert examples[1].where.endswith("chat.jsonl:2")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": "hi"},
            r'bad\.jsonl:2: "messages" must be a non-empty list.*found a JSON str',
        ),
        ({"messages": []}, r"bad\.jsonl:2: .*found an empty list"),
        ({"messages": ["hi"]}, r"bad\.jsonl:2: messages\[0\]: expected .*found a JSON str"),
        (
            {"messages": [{"role": "user"}]},
            r'bad\.jsonl:2: messages\[0\]: missing key "content" \(found keys: role\)',
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"content": "a"}]},
            r'bad\.jsonl:2: messages\[1\]: missing key "role"',
        ),
        (
            {"messages": [{"role": "bot", "content": "x"}]},
            r"bad\.jsonl:2: messages\[0\]\.role: expected one of system, user, assistant, tool; "
            r'found "bot"',
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]},
            r"bad\.jsonl:2: messages\[1\]\.content: expected a string; found a JSON int",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            r'bad\.jsonl:2: no "assistant" message, so nothing to learn',
        ),
    ],
)
def test_malformed_chat_rows_name_the_line_and_the_key(tmp_path, row, message) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BloomkitError, match=message) as caught:
        read_examples(str(path))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "template", [DEFAULT_CHAT_TEMPLATE, CHATML_TEMPLATE], ids=["default", "chatml"]
)
def test_only_assistant_tokens_are_learned(template) -> None:
    tokenizer = _tokenizer(template)
    dataset = pack([CONVERSATION], tokenizer, seq_len=128)
    ids = dataset.input_ids.flatten()
    labels = dataset.labels.flatten()
    mask = dataset.attention_mask.flatten()
    learned = labels != IGNORE_INDEX
    assert (labels[learned] == ids[learned]).all()
    assert not learned[mask == 0].any()  # padding
    end = tokenizer.eos_token if template == DEFAULT_CHAT_TEMPLATE else "<|im_end|>"
    # Exactly the two answers, each with the template's end of turn: no header, no question.
    pieces = []
    run: list[int] = []
    for token, keep in zip(ids.tolist(), learned.tolist(), strict=True):
        if keep:
            run.append(token)
        elif run:
            pieces.append(tokenizer.decode(run))
            run = []
    assert pieces == [f"The CUDA stack.{end}", f"Zero means pass.{end}"]
    # The whole rendered conversation is the input, in order.
    rendered = tokenizer.apply_chat_template(CONVERSATION.as_dicts(), tokenize=False)
    assert tokenizer.decode(ids[mask == 1][:-1]) == rendered  # then the EOS separator


def test_a_template_that_is_not_the_sum_of_its_turns_is_refused() -> None:
    tokenizer = _tokenizer("{{ messages[-1]['content'] }}")
    with pytest.raises(BloomkitError, match="does not render a conversation as the sum"):
        tokenize_chat(tokenizer, CONVERSATION)


def test_the_default_template_and_a_template_file(tmp_path) -> None:
    tokenizer = build_tiny_tokenizer()
    use_template(tokenizer, "default", "tiny")
    assert prompt_text(tokenizer, "hi", "Be brief.") == (
        "<|system|>\nBe brief.</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    )
    path = tmp_path / "chatml.jinja"
    path.write_text(CHATML_TEMPLATE)
    use_template(tokenizer, str(path), "tiny")
    assert (
        prompt_text(tokenizer, "hi", None)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(BloomkitError, match="chat template cannot render"):
        use_template(tokenizer, str(broken), "tiny")


def test_no_template_is_one_line_naming_the_fix(cli, tmp_path, data_dir) -> None:
    result = cli("generate", "--chat", "--model", "tiny", "hello")
    assert result.code == 1
    assert result.err.splitlines() == [
        "bloomkit generate: error: model 'tiny' has no chat template: set chat_template in its "
        "tokenizer_config.json or pass --chat-template default (bloomkit's Zephyr-style "
        "template) or --chat-template FILE.jinja"
    ]
    out = tmp_path / "o"
    result = cli("finetune", "--model", "tiny", "--data", data_dir / "chat.jsonl", "--output", out)
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith(
        "bloomkit finetune: error: model 'tiny' has no chat template"
    )
    assert "Traceback" not in result.err
    assert not list(tmp_path.iterdir())  # nothing written


def test_chat_options_are_checked(cli, tmp_path) -> None:
    result = cli("generate", "--model", "tiny", "--system", "Be brief.", "hi")
    assert (result.code, result.err.strip()) == (
        2,
        "bloomkit generate: error: --system needs --chat",
    )
    result = cli(
        "generate", "--model", "tiny", "--chat", "--chat-template", tmp_path / "no.jinja", "hi"
    )
    assert result.code == 2
    assert "--chat-template '" in result.err
    assert "no.jinja' not found" in result.err


def _greedy(**kwargs) -> str:
    values = dict(model="tiny", max_new_tokens=8, temperature=0, json=True) | kwargs
    return generate(GenerateArgs(**values), out=io.StringIO())[0]["completion"]


def test_generate_chat_renders_the_prompt_through_the_template() -> None:
    rendered = "<|system|>\nBe brief.</s>\n<|user|>\nWhat is a GPU host?</s>\n<|assistant|>\n"
    chat = _greedy(
        prompts=["What is a GPU host?"], chat=True, chat_template="default", system="Be brief."
    )
    assert chat == _greedy(prompts=[rendered])  # the tiny tokenizer adds no special tokens
    assert chat != _greedy(prompts=["What is a GPU host?"])


def test_generate_chat_uses_the_models_own_template(tmp_path, monkeypatch) -> None:
    """The Llama checkpoint ships a ChatML template, and its tokenizer prepends a BOS to plain
    text: with --chat the model gets the template's text and no BOS the template did not ask
    for."""
    from bloomkit import generate as generate_module

    model = make_checkpoint("llama", tmp_path / "llama")
    seen: list[list[int]] = []
    real_load = generate_module.load_model

    def load_model(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        real_generate = loaded.model.generate

        def recording_generate(*gen_args, **gen_kwargs):
            seen.append(gen_kwargs["input_ids"][0].tolist())
            return real_generate(*gen_args, **gen_kwargs)

        loaded.model.generate = recording_generate
        return loaded

    monkeypatch.setattr(generate_module, "load_model", load_model)
    assert _greedy(model=str(model), prompts=["hi"], chat=True, system="Be brief.")
    tokenizer = build_tiny_tokenizer()
    rendered = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert seen == [tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    _greedy(model=str(model), prompts=["hi"])  # plain text: the BOS, no template
    assert seen[1] == [tokenizer.bos_token_id, *tokenizer("hi")["input_ids"]]


@pytest.mark.slow
def test_a_chat_finetune_learns_and_its_output_chats(cli, tmp_path, data_dir) -> None:
    out = tmp_path / "chat-out"
    result = cli(
        "finetune",
        "--model",
        "tiny",
        "--data",
        data_dir / "chat.jsonl",
        "--chat-template",
        "default",
        "--output",
        out,
        "--max-steps",
        "10",
        "--batch-size",
        "4",
        "--seq-len",
        "64",
        "--lr",
        "1e-2",
        "--logging-steps",
        "1",
        "--no-progress",
    )
    assert result.code == 0, result.err
    record = json.loads((out / "bloomkit_config.json").read_text())
    losses = [loss for _, loss in record["result"]["losses"]]
    assert losses[-1] < losses[0] * 0.8
    assert (out / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
    # The output carries its template: --chat needs no --chat-template now.
    answer = cli(
        "generate",
        "--model",
        out,
        "--chat",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--json",
        "What exit code means pass?",
    )
    assert answer.code == 0, answer.err
    assert json.loads(answer.out)["prompt"] == "What exit code means pass?"
    assert json.loads(answer.out)["completion"].strip()
