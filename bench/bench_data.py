"""Bench: bloomkit's data path through `datasets`, per format, against the path before it.

    python bench/bench_data.py [--rounds 3] [--old REV] [--big-mb 50] [--json FILE]

For each data format (JSONL, a JSON document, CSV, Parquet, text, a folder of all four), the
same corpus (bench_bloomkit.corpus: 2,000 texts) is written in that format and
  - loaded and packed (tokenize, 128-token blocks) in a fresh process: seconds for that alone
    (imports excluded), and the process's peak RSS;
  - fine-tuned with the tiny model as bench_bloomkit.py does (30 steps of 8x128): tokens/s.
The bloomkit of git revision REV (default: the commit before data went through `datasets`),
taken with `git archive`, does the same for the formats it read (JSONL, text). Every variant
runs once per round, rounds interleaved, medians reported: the machine's load hits all alike.
Then peak RSS of load+pack for a small and a --big-mb JSONL file, old and new: memory that
stays flat as the file grows is the streaming at work.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from bench_bloomkit import REPO, SENTENCES, bench_finetune, child_env, run

OLD_REV = "d1ab02b"  # datasets in the stack; bloomkit still read JSONL and text itself
LOAD_AND_PACK = """
import json, sys, time
from bloomkit import data
from bloomkit.models import build_tiny_tokenizer
tokenizer = build_tiny_tokenizer()
began = time.perf_counter()
read = getattr(data, "iter_examples", None) or data.read_examples
packed = data.pack(read(sys.argv[1]), tokenizer, 128)
seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "tokens": packed.num_tokens, "blocks": len(packed)}))
"""


def texts(count: int) -> list[str]:
    return [
        f"{i}: " + " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(3))
        for i in range(count)
    ]


def write(fmt: str, rows: list[str], path: Path) -> Path:
    """`rows` as one data file (or a folder) of format `fmt`; the same examples every time."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    elif fmt == "json":
        path.write_text(json.dumps([{"text": t} for t in rows]))
    elif fmt == "csv":
        path.write_text("text\n" + "".join(json.dumps(t) + "\n" for t in rows))  # quoted
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": rows}), path)
    elif fmt == "txt":
        path.write_text("\n\n".join(rows) + "\n")
    elif fmt == "folder":
        path.mkdir()
        quarter = len(rows) // 4
        for i, part in enumerate(("jsonl", "csv", "parquet", "txt")):
            write(part, rows[i * quarter : (i + 1) * quarter], path / f"{i}.{part}")
    return path


def old_source(rev: str, workdir: Path) -> Path:
    """bloomkit/src as it was at `rev`."""
    target = workdir / f"bloomkit-{rev}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "bloomkit/src"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "bloomkit" / "src"


def with_source(src: Path | None) -> dict[str, str]:
    """The child environment, with `src` (a bloomkit/src) first on the path when given."""
    env = child_env()
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def load_and_pack(path: Path, src: Path | None) -> dict[str, object]:
    done = run([sys.executable, "-c", LOAD_AND_PACK, str(path)], env=with_source(src))
    if done["exit"] != 0:
        raise SystemExit(f"load+pack of {path} exited {done['exit']}:\n{done['output']}")
    figures = json.loads(str(done["output"]).strip().splitlines()[-1])
    return {**figures, "peak_rss_mb": done["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="0: only the memory figures")
    parser.add_argument("--old", default=OLD_REV, help="git revision of the old data path")
    parser.add_argument("--big-mb", type=int, default=50, help="size of the big JSONL file")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    figures: dict[str, object] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "old_rev": args.old,
    }
    rows = texts(2000)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        workdir = Path(tmp)
        old = old_source(args.old, workdir)
        variants: list[tuple[str, str, Path | None]] = [
            (f"new {fmt}", fmt, None)
            for fmt in ("jsonl", "json", "csv", "parquet", "txt", "folder")
        ] + [(f"old {fmt}", fmt, old) for fmt in ("jsonl", "txt")]
        files = {fmt: write(fmt, rows, workdir / f"corpus.{fmt}") for _, fmt, _ in variants}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in variants}
        tokens: dict[str, int] = {}
        for round_ in range(args.rounds):
            for name, fmt, src in variants:
                packed = load_and_pack(files[fmt], src)
                trained = bench_finetune(
                    "tiny", 30, 8, 128, workdir, 0, data=files[fmt], env=with_source(src)
                )
                if "error" in trained:
                    raise SystemExit(f"{name}: {trained['error']}")
                tokens[name] = int(packed["tokens"])
                for key, value in (
                    ("load_pack_s", packed["seconds"]),
                    ("load_pack_rss_mb", packed["peak_rss_mb"]),
                    ("tokens_per_s", trained["tokens_per_s"]),
                    ("finetune_wall_s", trained["wall_s"]),
                ):
                    samples[name].setdefault(key, []).append(float(value))  # type: ignore[arg-type]
                print(
                    f"round {round_ + 1} {name}: load+pack {packed['seconds']:.2f} s, "
                    f"{trained['tokens_per_s']:.0f} tokens/s",
                    flush=True,
                )
        figures["formats"] = {
            name: {
                "packed_tokens": tokens[name],
                **{k: round(statistics.median(v), 3) for k, v in values.items()},
                "tokens_per_s_all": values["tokens_per_s"],
            }
            for name, values in samples.items()
            if values
        }

        memory: dict[str, dict[str, object]] = {}
        line = json.dumps({"text": rows[0]}) + "\n"
        small = write("jsonl", rows, workdir / "small.jsonl")
        big = workdir / "big.jsonl"
        with big.open("w") as out:
            for _ in range(args.big_mb * 2**20 // (len(line) * 2000) + 1):
                out.write("".join(json.dumps({"text": t}) + "\n" for t in rows))
        for name, src in (("new", None), ("old", old)):
            for label, path in (("small", small), ("big", big)):
                packed = load_and_pack(path, src)
                memory[f"{name} {label}"] = {
                    "file_mb": round(path.stat().st_size / 2**20, 1),
                    **packed,
                }
                print(f"memory {name} {label}: {memory[f'{name} {label}']}", flush=True)
        figures["memory"] = memory
    figures["load_average_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
