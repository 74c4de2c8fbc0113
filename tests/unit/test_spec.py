"""stack.yml validation: the default passes, every spec in the bad corpus fails on its field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpurig import compat, spec
from gpurig.loading import checked_stack
from gpurig.spec import SpecErrors

REPO = Path(__file__).resolve().parents[2]
BAD = sorted((REPO / "tests/specs/bad").glob("*.yml"))


def expectation(path: Path) -> tuple[str, str]:
    """First line of each corpus file: `# expect: FIELD :: SUBSTRING`."""
    field, _, text = path.read_text().splitlines()[0].removeprefix("# expect: ").partition(" :: ")
    return field, text


def test_default_stack_is_valid() -> None:
    stack = checked_stack(REPO / "stack.yml")
    assert stack.torch.version in compat.table().torch
    assert "cpu" in stack.torch.variants


def test_corpus_is_not_empty() -> None:
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_names_its_field(path: Path) -> None:
    field, text = expectation(path)
    with pytest.raises(SpecErrors) as caught:
        checked_stack(path)
    problems = caught.value.problems
    assert any(text in p for p in problems), problems
    if field != "stack":  # whole-file problems have no field
        assert any(p.startswith(field) and text in p for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    text = 'python: ["3.8"]\ntorch: {version: "2.13.0", variants: [cu118, cu130]}\n'
    text += "nvidia: {driver_branch: 535}\n"
    with pytest.raises(SpecErrors) as caught:
        load_checked_text(text)
    fields = [p.split(":")[0] for p in caught.value.problems]
    assert fields == ["python[0]", "torch.variants[0]", "nvidia.driver_branch"]


def load_checked_text(text: str) -> spec.Stack:
    stack = spec.parse(text)
    problems = compat.problems(stack)
    if problems:
        raise SpecErrors("stack.yml", problems)
    return stack


def test_cuda_dotted_variants_normalise() -> None:
    stack = spec.parse('python: ["3.11"]\ntorch: {version: "2.13.0", variants: ["12.6", cpu]}\n')
    assert stack.torch.variants == ["cu126", "cpu"]


def test_digest_ignores_host_layout_but_not_pins() -> None:
    base = 'python: ["3.11"]\ntorch: {version: "2.13.0", variants: [cpu]}\n'
    digest = spec.parse(base).digest()
    assert spec.parse(base + "host: {user: ml}\n").digest() == digest
    assert spec.parse(base + "packages: {peft: '0.1.0'}\n").digest() != digest


@pytest.mark.parametrize("path", [BAD[0], REPO / "tests/specs/bad/cuda13_on_driver_535.yml"])
def test_cli_check_exits_2_with_one_line_per_problem_and_no_traceback(path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "check", "--stack", str(path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert expectation(path)[1] in run.stderr


def test_cli_check_missing_file() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "check", "--stack", "/nonexistent/stack.yml"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    message = "/nonexistent/stack.yml not found: pass --stack FILE or run from the repo root"
    assert run.stderr.strip() == f"gpurig check: {message}"


def test_cli_check_default_stack_summarises() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "check"], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    assert "stack.yml is valid" in run.stdout
    assert "lock" in run.stdout
    assert "fresh" in run.stdout


def test_reference_doc_matches_the_schema() -> None:
    doc = (REPO / "docs/stack.md").read_text()
    table = doc.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert table.strip() == spec.reference_table().strip(), "regenerate docs/stack.md's table"
