"""The guide's plain Hugging Face script, run by tests/integration/test_hf_guide.py on a
provisioned host as the service user: nothing of gpurig or bloomkit, only what a reader of the
guide types. No hub here: the tokenizer is trained on the data and the model made from a config.
Prints one JSON line of what it saw."""

import json
import math
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from datasets import load_dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    BloomForCausalLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    pipeline,
)

work = tempfile.mkdtemp(prefix="hf-guide-")
lines = [f"The driver loads, the GPU answers, and step {i} trains the model." for i in range(32)]
with open(f"{work}/train.jsonl", "w") as out:
    out.writelines(json.dumps({"text": line}) + "\n" for line in lines)

data = load_dataset("json", data_files=f"{work}/train.jsonl", split="train")

bpe = Tokenizer(models.BPE(unk_token="<unk>"))
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(
    data["text"],
    trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<unk>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ),
)
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
)
tokenized = data.map(
    lambda rows: tokenizer(rows["text"], truncation=True, max_length=32),
    batched=True,
    remove_columns=["text"],
)

torch.manual_seed(0)
config = BloomConfig(
    vocab_size=len(tokenizer),
    hidden_size=64,
    n_layer=2,
    n_head=4,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
    bos_token_id=tokenizer.eos_token_id,
)
model = BloomForCausalLM(config)
trainer = Trainer(
    model=model,
    args=TrainingArguments(
        output_dir=f"{work}/run",
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    ),
    train_dataset=tokenized,
    data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
)
trained = trainer.train()

model.save_pretrained(f"{work}/model")
tokenizer.save_pretrained(f"{work}/model")
reloaded = AutoModelForCausalLM.from_pretrained(f"{work}/model")
same = all(
    torch.equal(a, b)
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
)
generate = pipeline("text-generation", model=f"{work}/model", device="cpu")
text = generate("The driver", max_new_tokens=8, do_sample=False)[0]["generated_text"]

print(
    json.dumps(
        {
            "python": sys.executable,
            "rows": len(data),
            "steps": trained.global_step,
            "loss_finite": math.isfinite(trained.training_loss),
            "same_weights": same,
            "generated": text,
            "new_tokens": len(tokenizer(text)["input_ids"])
            - len(tokenizer("The driver").input_ids),
        }
    )
)
