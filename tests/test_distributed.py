"""Data-parallel training (CPU, gloo, 2 processes) against one process with the same global batch:
DDP and FSDP2 weights after 10 AdamW steps, the ranks' share of the batches, checkpoints that move
between world sizes, and a job that loses a rank."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import dist_jobs  # noqa: E402  (the jobs must be importable by the spawned processes)
from transformer_nb.checkpoint import read_checkpoint  # noqa: E402
from transformer_nb.distributed import run_local  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch has no torch.distributed")
TOLERANCE = 1e-6  # float64: the differences are reduction order, ~1e-14


def max_weight_gap(a, b) -> float:
    A, B = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert A.keys() == B.keys()
    return max((A[k] - B[k]).abs().max().item() for k in A)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process in this one (checkpoints at steps 5 and 10, batches recorded); then DDP and
    FSDP in 2 processes each, which also resume the single process's step-5 checkpoint."""
    out = tmp_path_factory.mktemp("dist")
    single = dist_jobs.make_trainer("none")
    seen = dist_jobs.record_batches(single)
    single.fit(until=5)
    single.save(out / "single-mid.pt")
    single.fit()
    single.save(out / "single-final.pt")
    torch.save(seen, out / "single-batches.pt")
    torch.save(dist_jobs.classifier_weights("none"), out / "single-classifier.pt")
    for kind in ("ddp", "fsdp"):
        run_local(dist_jobs.equality_job, 2, str(out), kind, str(out / "single-mid.pt"))
    return out


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_processes_train_as_one(runs, kind):
    gap = max_weight_gap(runs / f"{kind}-final.pt", runs / "single-final.pt")
    print(f"{kind}: largest weight difference after 10 steps {gap:.1e}")
    assert gap < TOLERANCE
    two, one = (read_checkpoint(runs / f).get("history") for f in (f"{kind}-final.pt", "single-final.pt"))
    assert two["step"] == one["step"] == list(range(1, 11))
    for key in ("loss", "val_loss"):  # the logged losses are over the global batch
        assert max(abs(a - b) for a, b in zip(two[key], one[key])) < 1e-10


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_the_ranks_split_the_global_batches(runs, kind):
    single = torch.load(runs / "single-batches.pt")
    ranks = [torch.load(runs / f"{kind}-batches-{r}.pt") for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 10 * 2  # steps x grad_accum
    for whole, part0, part1 in zip(single, *ranks):
        assert len(part0) == len(part1) == dist_jobs.GLOBAL_BATCH // 2
        assert torch.equal(torch.cat([part0, part1]), whole)  # each window once, by one rank
        assert not torch.equal(part0, part1)


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_checkpoints_move_between_world_sizes(runs, kind):
    one_to_two = max_weight_gap(runs / f"{kind}-resumed.pt", runs / "single-final.pt")
    back = dist_jobs.make_trainer("none")
    back.load(runs / f"{kind}-mid.pt")
    assert back.step == 5
    back.fit()
    back.save(runs / f"{kind}-back.pt")
    two_to_one = max_weight_gap(runs / f"{kind}-back.pt", runs / "single-final.pt")
    print(f"{kind}: 1 -> 2 processes {one_to_two:.1e}, 2 -> 1 process {two_to_one:.1e}")
    assert one_to_two < TOLERANCE and two_to_one < TOLERANCE
    # in the same number of processes the sums are added in the same order: bit for bit
    assert max_weight_gap(runs / f"{kind}-again.pt", runs / f"{kind}-final.pt") == 0
    mid = read_checkpoint(runs / f"{kind}-mid.pt")["history"]
    assert back.history["loss"][:5] == mid["loss"]  # the resumed run continues the record


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_a_classifier_with_unused_parameters_trains_as_one(runs, kind):
    one, two = (torch.load(runs / f"{r}-classifier.pt") for r in ("single", kind))
    assert max((one[k] - two[k]).abs().max().item() for k in one) < TOLERANCE


def torchrun(*args, env=None, timeout=120):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_a_lost_rank_stops_the_job_and_a_relaunch_resumes(tmp_path):
    job = [str(Path(dist_jobs.__file__)), "kill", str(tmp_path)]
    start = time.perf_counter()
    failed = torchrun(*job)
    elapsed = time.perf_counter() - start
    print(f"job with a dead rank exited {failed.returncode} after {elapsed:.1f} s")
    assert failed.returncode != 0
    root_cause = failed.stderr.split("Root Cause")[-1]  # torchrun's report names the rank
    assert re.search(r"rank\s*:\s*1\b", root_cause) and re.search(r"exitcode\s*:\s*7", root_cause)
    assert elapsed < 20 + 60  # the collective timeout (20 s) plus the launch
    assert read_checkpoint(tmp_path / "job.pt")["step"] == 4
    resumed = torchrun(*job, env={"RESUME": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at step 4" in resumed.stdout
    final = tmp_path / "job.pt"
    assert read_checkpoint(final)["step"] == 12
    uninterrupted = dist_jobs.make_trainer("none", max_steps=12)
    uninterrupted.fit()
    uninterrupted.save(tmp_path / "uninterrupted.pt")
    assert max_weight_gap(final, tmp_path / "uninterrupted.pt") < TOLERANCE
