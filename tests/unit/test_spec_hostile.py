"""Hostile specs (tests/specs/hostile/): each is refused at the schema with its field named,
in a short message that echoes no secret; the values real specs use still pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpurig import spec
from gpurig.spec import SpecErrors
from gpurig.spec_types import ca_bundle_problem

REPO = Path(__file__).resolve().parents[2]
HOSTILE = sorted((REPO / "tests/specs/hostile").glob("*.yml"))
SECRET = "s3cret"  # the password every credential case plants
MAX_LINE = 250
BASE = 'python: ["3.11"]\ntorch: {version: "2.13.0", variants: [cpu]}\n'


def expectation(path: Path) -> tuple[str, str]:
    """First line: `# expect: FIELD :: SUBSTRING`, read as bytes: some cases are not UTF-8."""
    header = path.read_bytes().split(b"\n", 1)[0].decode()
    field, _, text = header.removeprefix("# expect: ").partition(" :: ")
    return field, text


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # network.ca_bundle is read from the current folder, as the front ends that push it do.
    monkeypatch.chdir(REPO)


def test_corpus_covers_the_issue() -> None:
    assert len(HOSTILE) >= 20


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.stem)
def test_hostile_spec_is_refused_on_its_field(path: Path) -> None:
    field, text = expectation(path)
    with pytest.raises(SpecErrors) as caught:
        spec.load(path)
    problems = caught.value.problems
    if field != "stack":  # whole-file problems have no field
        assert any(p.startswith(field) and text in p for p in problems), problems
    else:
        assert any(p.startswith(text) for p in problems), problems
    for problem in problems:
        assert "\n" not in problem
        assert len(problem) <= MAX_LINE, problem
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "name", ["binary", "credentials_in_index", "jinja_in_hf_home", "ten_kilobyte_value"]
)
def test_cli_check_refuses_with_exit_2_and_no_traceback(name: str) -> None:
    path = REPO / "tests/specs/hostile" / f"{name}.yml"
    run = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "check", "--stack", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert expectation(path)[1] in run.stderr
    assert all(len(line) <= MAX_LINE + len(str(path)) + 4 for line in run.stderr.splitlines())
    assert SECRET not in run.stdout + run.stderr


def test_cli_check_never_shows_proxy_credentials(tmp_path: Path) -> None:
    stack = (REPO / "stack.yml").read_text()
    assert "  proxy: null\n" in stack
    stack = stack.replace("  proxy: null\n", f"  proxy: http://bob:{SECRET}@proxy.example:3128\n")
    (tmp_path / "stack.yml").write_text(stack)
    run = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "check", "--stack", str(tmp_path / "stack.yml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout + run.stderr


@pytest.mark.parametrize(
    "snippet",
    [
        'apt_packages: [git, "g++", python3.11, "libc6:amd64", "nvidia-driver=580.95.05-1"]',
        'apt_packages: ["cuda-keyring=1:1.1-1"]',
        'extra_packages: ["numpy>=2,<3; python_version < \'3.13\'", "accelerate[deepspeed]"]',
        "packages: {Flash_Attn: '2.8.3', sentencepiece: '0.2.1'}",
        "host: {venv: /srv/ml-env/venv, hf_home: /data/hf_cache, report: /var/lib/x/r.json}",
        "network: {proxy: 'http://bob:pa%40ss@proxy.corp:3128', no_proxy: ['*.corp', '10/8']}",
        "network: {no_proxy: [localhost, 127.0.0.1, '::1', .internal, '*']}",
        "sources: {index: 'file:///srv/mirror/simple', find_links: [wheels, /opt/wheels]}",
        "sources: {allow_insecure_http: true, index: 'http://mirror.lan/simple'}",
        "sources: {allow_insecure_http: true, torch_index: {cpu: 'http://mirror.lan/cpu'}}",
        "smoke: {model: bigscience/bloom-560m}",
        "smoke: {model: /srv/models/bloom-560m}",
    ],
)
def test_real_values_pass(snippet: str) -> None:
    spec.parse(BASE + snippet + "\n")


def test_the_http_opt_in_changes_no_digest_and_survives_a_dump() -> None:
    plain = spec.parse(BASE)
    opted = spec.parse(BASE + "sources: {allow_insecure_http: true}\n")
    assert opted.digest() == plain.digest()
    assert "allow_insecure_http" not in plain.model_dump()["sources"]
    assert spec.Stack.model_validate(opted.model_dump()) == opted


def test_a_ca_bundle_with_a_private_key_is_refused(tmp_path: Path) -> None:
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system.is_file():
        pytest.skip("no system CA bundle on this controller")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(system.read_bytes() + b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END P")
    assert ca_bundle_problem(str(system)) is None
    assert "private key" in str(ca_bundle_problem(str(bundle)))
