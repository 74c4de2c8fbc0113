"""Bench: a model pushed to a host by the deploy (stack.yml's `models:`, the controller source
offline hosts get) against plain scp of the same files, in the same run.

    python bench/bench_models.py [--mb 256] [--rounds 3] [--json FILE]

One sandbox host over 127.0.0.1 (strict host keys). A model of one `--mb` MB weights file (random
bytes: transfer and hashing do not care what they are) and two small JSON files is laid out in
a controller-side HF cache. The host is provisioned once (`gpurig deploy --skip-smoke`, not
timed); then per round, interleaved, the pyinfra deploy of the models step alone
(bench/deploy_models.py: connect, preflight, the step):
  - with no models listed (the fixed cost: connection and preflight);
  - with the model removed from the host first: the push (the check, the SFTP transfer, the
    host's hash check of every file, the snapshot's rename). Its seconds minus the fixed cost
    give the step's MB/s; the transfer's own MB/s is what the operation logs;
  - again with the model in place: the no-change cost (the check reads every file);
  - `scp` of the same blob files to a folder on the host, then removed.
With `--baseline SRC` (another checkout's `src/`, e.g. from `git archive`), each round also
pushes with that code, right after this tree's push: before/after under the same load.
Medians over the rounds; MB is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from fleetbench import BIN, REPO, bench_fleet, gpurig_deploy, timed

from gpurig.hostlayout import model_dir
from gpurig.sandbox.hubcache import lay_out

REPO_ID = "bench-org/bench-model"
TRANSFER = re.compile(r"model push: \d+ file\(s\), [\d,.]+ MB in [\d.]+ s \((\d+) MB/s\)")


def run(label: str, command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds and output of `command`; a failure ends the run."""
    began = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{label}: exit {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds, done.stdout + done.stderr


def make_model(hub: Path, mb: int) -> tuple[str, int, list[Path]]:
    """(revision, total bytes, the blob files) of a model laid out in the hub cache `hub`."""
    work = Path(tempfile.mkdtemp(dir=hub.parent))
    weights = work / "model.safetensors"
    with weights.open("wb") as out:
        for _ in range(mb):
            out.write(os.urandom(1_000_000))
    (work / "config.json").write_text('{"model_type": "bloom"}\n')
    (work / "tokenizer_config.json").write_text("{}\n")
    files = {p.name: p for p in work.iterdir()}
    revision = lay_out(hub, REPO_ID, files)
    blobs = sorted((hub / model_dir(REPO_ID) / "blobs").iterdir())
    return revision, sum(b.stat().st_size for b in blobs), blobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the weights file, MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "bench-models.json")
    parser.add_argument("--keep", action="store_true", help="keep the fleet (debugging)")
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ to compare")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    with bench_fleet("models", keep=args.keep) as bench:
        host = bench.fleet.up(1)[0]
        hub = bench.state_dir / "controller-hf" / "hub"
        hub.mkdir(parents=True)
        revision, size, blobs = make_model(hub, args.mb)
        stock = (REPO / "stack.yml").read_text()
        entry = f"\nmodels:\n  - {{repo: {REPO_ID}, revision: {revision}, source: controller}}\n"
        without, with_model = bench.state_dir / "stack.yml", bench.state_dir / "stack-models.yml"
        without.write_text(stock)
        with_model.write_text(stock.replace("\nmodels: []\n", entry))
        env = {**bench.env, "HF_HUB_CACHE": str(hub)}
        deploy = gpurig_deploy([host.name], "--skip-smoke")
        timed("provision (not counted)", deploy, {**env, "GPURIG_STACK": str(without)})

        state = bench.fleet.state
        scp = [
            "scp", "-q", "-P", str(host.port), "-i", str(state.key_file),
            "-o", f"UserKnownHostsFile={state.known_hosts_file}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            *map(str, blobs), f"{host.user}@{host.hostname}:/tmp/scp-bench/",
        ]  # fmt: skip
        cached = f"/var/cache/gpurig/huggingface/hub/{model_dir(REPO_ID)}"
        step_only = [str(BIN / "pyinfra"), "-y", "inventory.py", "bench/deploy_models.py"]
        step_only += ["--limit", host.name]
        empty_env = {**env, "GPURIG_STACK": str(without)}
        models_env = {**env, "GPURIG_STACK": str(with_model)}
        rounds: dict[str, list[float]] = {
            "fixed_s": [], "push_s": [], "again_s": [], "scp_s": [], "transfer_mb_s": []
        }  # fmt: skip
        for n in range(1, args.rounds + 1):
            print(f"round {n}", flush=True)
            rounds["fixed_s"].append(run("models step, none listed", step_only, empty_env)[0])
            code, out = bench.fleet.ssh(host, f"sudo -n rm -rf {cached}")
            assert code == 0, out
            seconds, output = run("models step, model pushed", step_only, models_env)
            rounds["push_s"].append(seconds)
            logged = TRANSFER.findall(output)
            assert logged, output[-2000:]
            rounds["transfer_mb_s"].append(float(logged[-1]))
            rounds["again_s"].append(run("models step, model in place", step_only, models_env)[0])
            if args.baseline:
                code, out = bench.fleet.ssh(host, f"sudo -n rm -rf {cached}")
                assert code == 0, out
                base_env = {**models_env, "PYTHONPATH": str(args.baseline.resolve())}
                seconds, output = run("models step, pushed by --baseline", step_only, base_env)
                rounds.setdefault("baseline_push_s", []).append(seconds)
                rounds.setdefault("baseline_transfer_mb_s", []).append(
                    float(TRANSFER.findall(output)[-1])
                )
            code, out = bench.fleet.ssh(host, "rm -rf /tmp/scp-bench && mkdir /tmp/scp-bench")
            assert code == 0, out
            rounds["scp_s"].append(timed("scp of the same files", scp, env))
            bench.fleet.ssh(host, "rm -rf /tmp/scp-bench")

        med = {k: statistics.median(v) for k, v in rounds.items()}
        push_only = med["push_s"] - med["fixed_s"]
        mb = size / 1e6
        bench.figures.update(
            {
                "model_mb": round(mb, 1),
                "rounds": {k: [round(x, 2) for x in v] for k, v in rounds.items()},
                "median": {k: round(v, 2) for k, v in med.items()},
                "push_only_s": round(push_only, 2),
                "push_mb_s": round(mb / push_only, 1),
                "scp_mb_s": round(mb / med["scp_s"], 1),
                "push_vs_scp": round(med["scp_s"] / push_only, 2),
                "no_change_extra_s": round(med["again_s"] - med["fixed_s"], 2),
                **(
                    {
                        "baseline_push_mb_s": round(
                            mb / (med["baseline_push_s"] - med["fixed_s"]), 1
                        ),
                        "baseline_vs_scp": round(
                            med["scp_s"] / (med["baseline_push_s"] - med["fixed_s"]), 2
                        ),
                    }
                    if args.baseline
                    else {}
                ),
                "load_at_start": round(load, 2),
            }
        )
        bench.write(args.json)


if __name__ == "__main__":
    main()
