"""Training jobs that tests/test_distributed.py runs in one process, in several processes
(run_local), or under torchrun (python tests/dist_jobs.py KIND OUT)."""
import os
import sys
from pathlib import Path

import torch

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, ETransformer, ETransformerConfig, SequenceClassifier,
)
from transformer_nb.distributed import full_model_state
from transformer_nb.training import (
    ClassBatches, LMBatches, TrainConfig, Trainer, classification_loss, next_token_loss,
)

GLOBAL_BATCH = 8


def make_trainer(parallel: str = "auto", **train) -> Trainer:
    "A tiny float64 decoder on a random stream: the same on every rank and world size."
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=13, l_max=8, d_e=16, H=2, L=2)).double()
    stream = torch.randint(13, (400,), generator=torch.Generator().manual_seed(1))
    settings = dict(max_steps=10, lr=1e-2, warmup_steps=2, grad_accum=2, grad_clip=0.5,
                    eval_every=5, eval_batches=2, device="cpu", progress=False,
                    parallel=parallel, collective_timeout=20.0)
    cfg = TrainConfig(**{**settings, **train})
    return Trainer(model, next_token_loss, LMBatches(stream, GLOBAL_BATCH, 8, seed=2),
                   cfg, val_batches=LMBatches(stream, GLOBAL_BATCH, 8, seed=3))


def classifier_weights(parallel: str = "auto") -> dict:
    """A classifier, whose encoder's output layer gets no gradient (DDP must be told), after
    4 steps of 3 micro-batches: its whole state dict."""
    torch.manual_seed(0)
    encoder = ETransformer(ETransformerConfig(N_V=10, l_max=8, d_e=8, H=2, L=1))
    model = SequenceClassifier(encoder, n_classes=2).double()
    examples = [([1, 2, 3, 4][:2 + i % 3], i % 2) for i in range(40)]
    cfg = TrainConfig(max_steps=4, warmup_steps=1, grad_accum=3, device="cpu",
                      progress=False, parallel=parallel)
    trainer = Trainer(model, classification_loss, ClassBatches(examples, 4, pad_id=0), cfg)
    trainer.fit()
    return full_model_state(trainer.dist, trainer.model)


def record_batches(trainer: Trainer) -> list:
    "Keep every training batch this rank draws (for the union check)."
    seen, sample = [], trainer.train_batches.sample
    def recording():
        seen.append(sample())
        return seen[-1]
    trainer.train_batches.sample = recording
    return seen


def equality_job(out: str, parallel: str, resume_from: str) -> None:
    """An uninterrupted run (checkpoint at step 5 and 10, batches recorded), then runs
    resumed from `resume_from` (written by another world size) and from its own step 5."""
    out = Path(out)
    torch.set_num_threads(1)  # two processes on two cores
    trainer = make_trainer(parallel)
    seen = record_batches(trainer)
    trainer.fit(until=5)
    trainer.save(out / f"{parallel}-mid.pt")
    trainer.fit()
    trainer.save(out / f"{parallel}-final.pt")
    torch.save(seen, out / f"{parallel}-batches-{trainer.dist.rank}.pt")
    for name, start in (("resumed", resume_from), ("again", out / f"{parallel}-mid.pt")):
        resumed = make_trainer(parallel)
        resumed.load(start)
        resumed.fit()
        resumed.save(out / f"{parallel}-{name}.pt")
    weights = classifier_weights(parallel)
    if trainer.dist.is_main:
        torch.save(weights, out / f"{parallel}-classifier.pt")


def kill_job(out: str) -> None:
    "Rank 1 dies after the step-4 checkpoint; with RESUME set, the job resumes and finishes."
    path = str(Path(out) / "job.pt")
    trainer = make_trainer("auto", max_steps=12, checkpoint_path=path,
                           checkpoint_every=2)
    if os.environ.get("RESUME"):
        trainer.load(path)
        print(f"resumed at step {trainer.step}", flush=True)
    elif trainer.dist.rank == 1:
        step = trainer.train_step
        def dying_step():
            if trainer.step == 4:  # after the step-4 checkpoint
                os._exit(7)  # as if the machine had gone away
            return step()
        trainer.train_step = dying_step
    trainer.fit()


if __name__ == "__main__":
    from transformer_nb.distributed import close_distributed
    kind, out = sys.argv[1:3]
    torch.set_num_threads(1)
    try:
        {"kill": kill_job}[kind](out)
    finally:
        close_distributed()
