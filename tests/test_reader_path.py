"""The reader's path: devices a reader's machine offers, the package's own checks, and GPU cells."""
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from transformer_nb import course
from transformer_nb.course import GPUCell, show_doc

# the package's checks, renamed so that pytest does not collect them as tests
check_eq, check_ne, check_close, check_fail = course.test_eq, course.test_ne, course.test_close, course.test_fail
from transformer_nb.training import MPS_WARNING, autocast_dtype, pick_device


# ---------------------------------------------------------------- device choice
def _machine(monkeypatch, cuda: bool, mps: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, False, "cuda"), (True, True, "cuda"), (False, True, "cpu"), (False, False, "cpu")])
def test_auto_device_is_cuda_else_cpu_never_mps(monkeypatch, cuda, mps, expected):
    _machine(monkeypatch, cuda, mps)
    assert pick_device("auto") == torch.device(expected)
    assert pick_device() == torch.device(expected)


def test_mps_only_when_asked_and_with_a_warning(monkeypatch):
    _machine(monkeypatch, cuda=False, mps=True)
    with pytest.warns(UserWarning, match="wrong losses"):
        assert pick_device("mps") == torch.device("mps")
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(ValueError, match="no MPS"):
        pick_device("mps")


@pytest.mark.parametrize("device, error, words", [
    ("cuda", ValueError, "no CUDA GPU"), ("cuda:0", ValueError, "no CUDA GPU"),
    ("gpu", ValueError, "not a device torch knows"), (3, TypeError, "device must be a name")])
def test_bad_device_names_are_refused_clearly(monkeypatch, device, error, words):
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(error, match=words):
        pick_device(device)


def test_bf16_only_on_ampere_or_newer(monkeypatch):
    cuda = torch.device("cuda")
    for capability, expected in [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        assert autocast_dtype(cuda, "auto") == expected


# ---------------------------------------------------------------- the checks chapters use
@pytest.mark.parametrize("a, b", [
    (torch.tensor([1, 2]), [1, 2]), ([1, (2, 3)], [1, [2, 3]]), ({"a": torch.ones(2)}, {"a": [1.0, 1.0]}),
    ("abc", "abc"), (torch.Size([2, 3]), (2, 3)), (None, None)])
def test_equal_values_pass(a, b):
    check_eq(a, b)
    with pytest.raises(AssertionError, match="equal, but should differ"):
        check_ne(a, b)


@pytest.mark.parametrize("a, b", [
    (torch.tensor([1, 2]), [1, 2, 3]), (torch.ones(2, 1), torch.ones(2)), ([1, 2], [1, 2, 3]),
    ({"a": 1}, {"b": 1}), ("abc", "abd"), (torch.tensor([1.0, float("nan")]), [1.0, float("nan")])])
def test_different_values_fail(a, b):
    with pytest.raises(AssertionError, match="not equal"):
        check_eq(a, b)
    check_ne(a, b)


def test_close_is_an_absolute_tolerance_that_broadcasts():
    check_close(torch.ones(2, 3), torch.ones(3) + 1e-7)
    check_close([1.0, 2.0], (1.0, 2.0 + 1e-6))
    for a, b, eps in [(1.0, 1.1, 0.01), (torch.zeros(2), torch.tensor([0.0, 1e-3]), 1e-4), ([1.0], [1.0, 2.0], 1)]:
        with pytest.raises(AssertionError, match="not within"):
            check_close(a, b, eps=eps)


def test_fail_needs_an_error_that_mentions_the_words():
    check_fail(lambda: int("x"), contains="invalid literal")
    with pytest.raises(AssertionError, match="no exception"):
        check_fail(lambda: 1)
    with pytest.raises(AssertionError, match="does not mention"):
        check_fail(lambda: int("x"), contains="something else")


def test_show_doc_gives_signature_and_docstring():
    text = show_doc(pick_device)._repr_markdown_()
    assert "pick_device(device: str | torch.device = 'auto') -> torch.device" in text
    assert "else the CPU" in text


# ---------------------------------------------------------------- GPU cells on a CPU
@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_smoke_switch(monkeypatch, value, on):
    monkeypatch.setenv(course.SMOKE_VARIABLE, value)
    assert course.smoke_mode() is on


def test_gpu_cell_without_a_gpu_runs_at_smoke_size_and_reports(monkeypatch, capsys):
    monkeypatch.delenv(course.SMOKE_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with GPUCell("demo", t4_minutes=3) as cell:
        assert cell.smoke and cell.device == torch.device("cpu") and not cell.compile
        assert cell.pick(real=1000, smoke=2) == 2 and cell.file("run.pt") == "run-smoke.pt"
        cell.result("loss", "1.50", expected="1.47")
    out = capsys.readouterr().out
    assert "no GPU visible" in out and "wall time" in out and "expected at full size: 1.47" in out
    assert "not comparable" in out and "an estimated 3 min on a Colab T4" in out


def test_gpu_cell_on_a_gpu_runs_at_full_size(monkeypatch):
    monkeypatch.delenv(course.SMOKE_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4
    cell = GPUCell("demo", t4_minutes=1)
    assert not cell.smoke and cell.pick(real=1000, smoke=2) == 1000 and cell.file("a.pt") == "a.pt"
    assert not cell.compile  # compiling pays on Ampere and newer only
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    assert GPUCell("demo", t4_minutes=1).compile
    monkeypatch.setenv(course.SMOKE_VARIABLE, "1")
    assert GPUCell("demo", t4_minutes=1).smoke


def test_gpu_cell_lets_errors_through(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KeyError):
        with GPUCell("demo", t4_minutes=1):
            raise KeyError("x")


def test_fail_catches_only_the_exception_asked_for():
    def interrupted():
        raise KeyboardInterrupt
    check_fail(interrupted, exc=KeyboardInterrupt)
    with pytest.raises(KeyError):
        check_fail(lambda: {}["x"], exc=ValueError)


# ---------------------------------------------------------------- the GPU cells and the CI that runs them
ROOT = Path(__file__).resolve().parents[1]


def gpu_runs(nb: Path) -> list[list[str]]:
    "The runs of consecutive `#| gpu` code cells of a notebook, as lists of their sources."
    runs, current = [], []
    for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if re.match(r"#\|\s*gpu\b", source):
            current.append(source)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


NOTEBOOKS_WITH_GPU_CELLS = [nb for nb in sorted((ROOT / "nbs").glob("*.ipynb")) if gpu_runs(nb)]


def test_there_are_gpu_cells():
    assert [nb.stem for nb in NOTEBOOKS_WITH_GPU_CELLS] == [
        "07b_inference", "08_practical", "09_layernorm_audit", "10_modern"]


@pytest.mark.parametrize("nb", NOTEBOOKS_WITH_GPU_CELLS, ids=lambda p: p.stem)
def test_every_gpu_cell_reports_device_time_and_expected_result(nb):
    for run in gpu_runs(nb):
        assert "GPUCell(" in run[0], f"{nb.name}: a GPU cell must open a GPUCell:\n{run[0][:200]}"
        assert "cell.result(" in "".join(run), f"{nb.name}: no result printed beside its expectation"
        for minutes in re.findall(r"t4_minutes=([\d.]+)", "".join(run)):
            assert 0 < float(minutes) <= 30, f"{nb.name}: a GPU cell over 30 minutes on a T4"
        assert "torch.cuda.is_available()" not in run[0].split("GPUCell(")[0], "GPUCell picks the device"


def test_github_workflows_run_ci_and_publish_the_book():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    steps = [s.get("run", "") for s in ci["jobs"]["ci"]["steps"]]
    assert "bash .ci/run" in steps and {"push", "pull_request"} <= set(ci[True])  # yaml reads on: as True
    pages = yaml.safe_load((ROOT / ".github/workflows/pages.yml").read_text())
    build = pages["jobs"]["build"]["steps"]
    assert any(s.get("with", {}).get("path") == "_build/html" for s in build)
    assert any("deploy-pages" in s.get("uses", "") for s in pages["jobs"]["deploy"]["steps"])


def test_ci_runs_every_chapter_as_a_reader():
    run = (ROOT / ".ci/run").read_text()
    assert 'stage "chapters as a reader runs them" reader_path' in run
    runner = (ROOT / ".ci/run_chapters.py").read_text()
    assert "TRANSFORMER_NB_SMOKE" in runner and "TRANSFORMER_NB_PACKAGE" in runner
    install_cells = [c for nb in sorted((ROOT / "nbs").glob("*.ipynb"))
                     for c in json.loads(nb.read_text())["cells"] if "google.colab" in "".join(c["source"])]
    assert install_cells and all("TRANSFORMER_NB_PACKAGE" in "".join(c["source"]) for c in install_cells)
