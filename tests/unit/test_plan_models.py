"""The models step (gpurig.plan.models): its scripts run here, on a local folder standing in
for a host's HF cache, with a tiny BLOOM laid out in a controller-side cache (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gpurig import digests, hfcache, spec
from gpurig.errors import UsageError
from gpurig.hostlayout import model_dir
from gpurig.plan import models
from gpurig.plan.models import Models
from gpurig.sandbox.hubcache import lay_out

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hfcache's table of verified blobs goes to the test's folder, not the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    digests.forget()


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the scripts run as the service user")


def _stack(hf_home: Path, entries: list[dict[str, str]], offline: bool = False) -> spec.Stack:
    data = spec.load(REPO_ROOT / "stack.yml").model_dump()
    data["host"] = {**data["host"], "hf_home": str(hf_home), "user": "root"}
    data["models"] = entries
    if offline:
        data["install"] = {"offline": True, "wheelhouse": "/srv/w"}
    return spec.Stack.model_validate(data)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder standing in for the host: its HF_HOME and the incoming folder."""
    monkeypatch.setattr(models, "MODELS_INCOMING", str(tmp_path / "incoming"))
    return tmp_path


def _run(script: str) -> list[str]:
    done = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return (
        models.missing(done.stdout.splitlines())
        if "checked" in done.stdout
        else done.stdout.splitlines()
    )


def _push(step: Models, needed: list[str]) -> None:
    """What a front end does between the check and the script: the needed uploads."""
    incoming = Path(step.incoming)
    incoming.mkdir(mode=0o700, exist_ok=True)
    names = {line.split()[1] for line in needed if line.startswith("need ")}
    for upload in step.uploads:
        if upload.name in names:
            shutil.copyfile(upload.src, incoming / upload.name)


def _step(host: Path, hub: Path, repo: str, rev: str) -> Models:
    stack = _stack(host / "hf", [{"repo": repo, "revision": rev}], offline=True)
    pushed = [hfcache.snapshot(m.repo, m.revision, hub) for m in models.pushed(stack)]
    (step,) = models.steps(stack, pushed)
    assert isinstance(step, Models)
    return step


def test_push_places_checks_and_converges(host: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    needed = _run(step.check)
    assert sorted(n.split("@")[1] for n in needed if n.startswith("need")) == sorted(
        {f.blob for f in hfcache.snapshot(repo, rev, hub).files}
    )
    _push(step, needed)
    changed = _run(step.script)
    assert any("model.safetensors" in line for line in changed), changed
    assert not Path(step.incoming).exists()  # the pushed files moved into the cache
    placed = host / "hf/hub" / model_dir(repo)
    assert (placed / "refs/main").read_text() == rev
    assert os.readlink(placed / "snapshots" / rev / "config.json").startswith("../../blobs/")
    assert not list((placed / "snapshots").glob(".gpurig-*"))
    assert _run(step.check) == []  # converged: nothing to push
    assert _run(step.script) == []  # and nothing changes
    # huggingface_hub itself reads it offline
    from transformers import AutoConfig

    env = {"HF_HUB_OFFLINE": "1"}
    config = subprocess.run(
        [
            str(REPO_ROOT / ".venv/bin/python"),
            "-c",
            "import sys; from transformers import AutoConfig; "
            f"print(AutoConfig.from_pretrained({repo!r}, cache_dir=sys.argv[1]).model_type)",
            str(host / "hf/hub"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert config.stdout.strip() == "bloom", config.stderr[-2000:]
    assert AutoConfig  # imported above only to prove the venv has transformers


def test_a_corrupted_blob_is_pushed_again(host: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    _push(step, _run(step.check))
    _run(step.script)
    weights = next(u for u in step.uploads if u.label.endswith("model.safetensors"))
    blob = host / "hf/hub" / model_dir(repo) / "blobs" / weights.name.split("@")[1]
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, wrong bytes
    blob.write_bytes(bytes(data))
    small = next(u for u in step.uploads if u.label.endswith("config.json"))
    (blob.parent / small.name.split("@")[1]).write_text("{}")  # a git-sha1 blob
    needed = _run(step.check)
    assert sorted(needed) == sorted([f"need {weights.name}", f"need {small.name}"])
    _push(step, needed)
    changed = _run(step.script)
    assert len(changed) == 2, changed
    assert _run(step.check) == []
    assert hfcache.blob_matches(blob, blob.name)


def test_a_corrupt_transfer_fails_and_changes_nothing(host: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    needed = _run(step.check)
    _push(step, needed)
    weights = next(u for u in step.uploads if u.label.endswith("model.safetensors"))
    (Path(step.incoming) / weights.name).write_bytes(b"truncated")
    done = subprocess.run(
        ["/bin/sh", "-c", step.script], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert f"{repo}: model.safetensors" in done.stderr
    assert "does not match its hash" in done.stderr
    assert not (host / "hf/hub" / model_dir(repo) / "snapshots" / rev).exists()  # no half snapshot
    assert len(_run(step.check)) > 1  # the next run pushes again


def test_dry_run_changes_nothing(host: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    done = subprocess.run(
        ["/bin/sh", "-c", step.script],
        capture_output=True,
        text=True,
        env={**os.environ, "GPURIG_DRY_RUN": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "gpurig: changed: " in done.stdout
    assert not (host / "hf").exists()


def test_fetch_is_downloaded_by_the_venv_python_and_checked(host: Path, tiny_bloom_hub) -> None:
    """A stand-in for snapshot_download copies the controller's snapshot: the script checks
    every blob it left and builds the snapshot itself."""
    hub, repo, rev = tiny_bloom_hub
    stack = _stack(host / "hf", [{"repo": repo, "revision": rev, "source": "hub"}])
    venv = Path(stack.host.venv)
    (step,) = models.steps(stack, [])
    assert step.uploads == []
    assert str(venv / "bin/python") in step.script
    fake = host / "python"
    fake.write_text(
        "#!/bin/sh\n# -c CODE REPO REV CACHE_DIR\n"
        f'mkdir -p "$5" && cp -a {hub}/{model_dir(repo)} "$5/"\n'
    )
    fake.chmod(0o755)
    script = step.script.replace(str(venv / "bin/python"), str(fake))
    assert _run(step.check) == [f"fetch {repo}"]
    assert any("download" in line for line in _run(script))
    assert _run(step.check) == []
    assert _run(script) == []


def test_controller_snapshot_missing_or_corrupt_is_named(tmp_path: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    with pytest.raises(UsageError, match="hf download gpurig-test/tiny-bloom --revision"):
        hfcache.snapshot(repo, "0" * 40, hub)
    copy = tmp_path / "hub"
    shutil.copytree(hub, copy, symlinks=True)
    blob = next((copy / model_dir(repo) / "blobs").glob("?" * 64))
    blob.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"model\.safetensors does not match its hash"):
        hfcache.snapshot(repo, rev, copy)


def test_source_follows_offline_unless_set(tmp_path: Path) -> None:
    entry = {"repo": "org/m", "revision": "a" * 40}
    online = _stack(tmp_path, [entry])
    offline = _stack(tmp_path, [entry], offline=True)
    assert models.pushed(online) == []
    assert len(models.pushed(offline)) == 1
    forced = _stack(tmp_path, [{**entry, "source": "controller"}])
    assert len(models.pushed(forced)) == 1
    assert models.steps(_stack(tmp_path, []), []) == []


def test_odd_file_names_and_folders_stay_literal(host: Path, tmp_path: Path) -> None:
    """A repo's file names are the repo owner's: spaces, quotes and `$(...)` stay names."""
    work = tmp_path / "files"
    work.mkdir()
    names = ["sub dir/it's $(touch x).json", "a/b/c.bin", "top.txt"]
    files = {}
    for i, name in enumerate(names):
        path = work / f"f{i}"
        path.write_bytes(f"content {i}\n".encode())
        files[name] = path
    hub = tmp_path / "controller" / "hub"
    rev = lay_out(hub, "org/odd", files)
    step = _step(host, hub, "org/odd", rev)
    _push(step, _run(step.check))
    _run(step.script)
    assert _run(step.check) == []
    snapshot = host / "hf/hub/models--org--odd/snapshots" / rev
    for i, name in enumerate(names):
        assert (snapshot / name).read_text() == f"content {i}\n"
    assert not (Path("/") / "x").exists()
    assert not list(host.rglob("x"))


def _receive(upload: models.ModelUpload, incoming: Path, data: bytes) -> tuple[int, str]:
    done = subprocess.run(
        ["/bin/sh", "-c", models.receive(upload, str(incoming))],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode().strip()


def test_a_streamed_push_is_hashed_as_it_is_written(host: Path, tiny_bloom_hub) -> None:
    """`receive` writes and hashes in one pass (sha256 and git's sha1); the placing script
    takes a file with its marker without reading it again, and places the same snapshot."""
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    incoming = Path(step.incoming)
    incoming.mkdir(mode=0o700)
    for upload in step.uploads:
        code, said = _receive(upload, incoming, Path(upload.src).read_bytes())
        assert (code, said) == (0, upload.blob)
        assert (incoming / f"{upload.name}{models.HASHED}").exists()
        assert (incoming / upload.name).stat().st_mode & 0o777 == 0o600
    assert sorted({len(u.blob) for u in step.uploads}) == [40, 64]  # both kinds of blob
    assert any("model.safetensors" in line for line in _run(step.script))
    assert _run(step.check) == []


def test_a_streamed_push_with_wrong_bytes_gets_no_marker(host: Path, tiny_bloom_hub) -> None:
    hub, repo, rev = tiny_bloom_hub
    step = _step(host, hub, repo, rev)
    incoming = Path(step.incoming)
    incoming.mkdir(mode=0o700)
    weights = next(u for u in step.uploads if u.label.endswith("model.safetensors"))
    data = bytearray(Path(weights.src).read_bytes())
    data[100] ^= 0xFF
    code, said = _receive(weights, incoming, bytes(data))
    assert code != 0
    assert said != weights.blob
    assert len(said) == 64
    assert not (incoming / f"{weights.name}{models.HASHED}").exists()
    # The script finds the wrong bytes itself, marker or not; a marker beside a link is no proof.
    (incoming / f"{weights.name}{models.HASHED}").touch()
    (incoming / weights.name).unlink()
    (incoming / weights.name).symlink_to(weights.src)
    _push(step, [f"need {u.name}" for u in step.uploads if u is not weights])
    done = subprocess.run(
        ["/bin/sh", "-c", step.script], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "model.safetensors" in done.stderr
    assert "does not match its hash" in done.stderr


def test_a_controller_blob_is_hashed_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs after the first read the verified digest, not the file; any write to the file
    (a new ctime) makes the next run hash it again."""

    def no_hashing(*args: object) -> None:
        raise AssertionError("hashed again")

    digests.forget()
    blob = tmp_path / "blob"
    blob.write_bytes(b"weights" * 1000)
    name = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert hfcache.blob_matches(blob, name)
    assert not digests.verified_file().exists()  # written a moment ago: not remembered yet
    with monkeypatch.context() as patch:  # the same run asks again: not hashed again
        patch.setattr(digests.hashlib, "sha256", no_hashing)
        assert hfcache.blob_matches(blob, name)
    assert not digests.verified_file().exists()
    digests.forget()  # a later run, past the racy window
    monkeypatch.setattr(digests, "RACY_S", -1.0)
    assert hfcache.blob_matches(blob, name)
    assert digests.verified_file().stat().st_mode & 0o777 == 0o600
    digests.forget()  # a later run: only the table on disk is known
    with monkeypatch.context() as patch:
        patch.setattr(digests.hashlib, "sha256", no_hashing)
        assert hfcache.blob_matches(blob, name)
    time.sleep(0.05)  # past the clock tick of the first write
    blob.write_bytes(b"weightz" * 1000)  # same size, new bytes
    digests.forget()
    assert not hfcache.blob_matches(blob, name)
    digests.forget()
