"""Chapter 8 (practical considerations): the label-smoothed loss, gradient accumulation with MicroBatches,
the activation-memory count, the optimizer swap and the experiment runner, each against an independent
computation. No timing assertions: the machine that runs the tests may be busy."""
import functools

import pytest
import torch
import torch.nn.functional as F

from transformer_nb.architectures import DTransformer, DTransformerConfig
from transformer_nb.practical import (
    MicroBatches, Recipe, accumulated_grads, label_smoothing_loss, results_table, run_variant, run_variants,
    saved_activation_bytes, seconds_per_token, set_optimizer, smoothed_cross_entropy, time_median,
    track_grad_norm,
)
from transformer_nb.training import LMBatches, MLMBatches, TrainConfig, Trainer, lr_multiplier, next_token_loss

CFG = DTransformerConfig(N_V=13, l_max=8, d_e=16, H=2, L=1)


def tiny_model(seed=0, **changes):
    torch.manual_seed(seed)
    cfg = DTransformerConfig(**{**CFG.__dict__, **changes})
    return DTransformer(cfg)


def tokens(n=600, seed=0):
    return torch.randint(0, CFG.N_V, (n,), generator=torch.Generator().manual_seed(seed))


def tiny_recipe(**train):
    data = tokens(1200)
    cfg = TrainConfig(**{**dict(max_steps=6, warmup_steps=2, eval_every=3, eval_batches=1, device="cpu",
                                progress=False), **train})
    return Recipe(CFG, cfg, data[:900], data[900:], batch_size=4, val_batch_size=4)


# --- label smoothing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.3, 0.9])
def test_smoothed_cross_entropy_matches_torch(eps):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(20, 9, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 9, (20,), generator=g)
    targets[::4] = -100
    ours = smoothed_cross_entropy(logits, targets, eps)
    theirs = F.cross_entropy(logits, targets, label_smoothing=eps, ignore_index=-100)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_smoothed_cross_entropy_against_the_smoothed_target_distribution():
    g = torch.Generator().manual_seed(2)
    logits, targets, eps = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.tensor([0, 4, 2, 2, 1, 3]), 0.2
    q = torch.full((6, 5), eps / 5, dtype=torch.float64)
    q[torch.arange(6), targets] += 1 - eps
    expected = -(q * logits.log_softmax(-1)).sum(-1).mean()  # cross-entropy against the smoothed target q
    torch.testing.assert_close(smoothed_cross_entropy(logits, targets, eps), expected, rtol=1e-12, atol=1e-12)


def test_smoothed_cross_entropy_rejects_bad_eps_and_widens_half_precision():
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    for eps in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="eps must be in"):
            smoothed_cross_entropy(logits, targets, eps)
    with pytest.raises(ValueError, match="eps must be in"):
        label_smoothing_loss(1.0)
    half = smoothed_cross_entropy(logits.bfloat16(), targets, 0.1)
    assert half.dtype == torch.float32


def test_label_smoothing_loss_smooths_only_in_training_mode():
    model = tiny_model()
    batch = tokens(60).reshape(4, 15)[:, :9]
    loss_fn = label_smoothing_loss(0.25)
    logits = model(batch[:, :-1]).flatten(0, 1)
    expected = F.cross_entropy(logits, batch[:, 1:].flatten(), label_smoothing=0.25)
    torch.testing.assert_close(loss_fn(model.train(), batch), expected)
    torch.testing.assert_close(loss_fn(model.eval(), batch), next_token_loss(model, batch))
    assert not torch.allclose(loss_fn(model.train(), batch), next_token_loss(model, batch))


def test_trainer_validates_label_smoothed_runs_with_the_plain_log_loss():
    model = tiny_model()
    val = LMBatches(tokens(300, seed=5), 4, CFG.l_max, seed=2)
    trainer = Trainer(model, label_smoothing_loss(0.3), LMBatches(tokens(), 4, CFG.l_max, seed=1),
                      TrainConfig(max_steps=2, warmup_steps=1, eval_every=2, eval_batches=2, device="cpu",
                                  progress=False), val_batches=val)
    trainer.fit()
    val.reset()
    with torch.no_grad():
        plain = sum(next_token_loss(model.eval(), val.sample()).item() for _ in range(2)) / 2
    assert trainer.history["val_loss"][-1] == pytest.approx(plain, rel=1e-6)


# --- gradient accumulation ---------------------------------------------------------------------------------

def test_micro_batches_slice_the_inner_batches_in_order():
    inner = LMBatches(tokens(), 12, 5, seed=4)
    micro = MicroBatches(LMBatches(tokens(), 12, 5, seed=4), k=3)
    assert micro.batch_size == 4
    for _ in range(3):
        parts = [micro.sample() for _ in range(3)]
        assert all(p.shape == (4, 6) for p in parts)
        torch.testing.assert_close(torch.cat(parts), inner.sample())


def test_micro_batches_of_tuples_reset_and_resume():
    make = lambda: MLMBatches(tokens(), 8, 6, p_mask=0.3, mask_token=CFG.N_V - 3, seed=7)
    micro = MicroBatches(make(), k=2)
    first = [micro.sample() for _ in range(4)]
    assert all(isinstance(b, tuple) and len(b) == 2 and b[0].shape == (4, 6) for b in first)
    x_tilde, targets = make().sample()
    torch.testing.assert_close(torch.cat([first[0][0], first[1][0]]), x_tilde)
    torch.testing.assert_close(torch.cat([first[0][1], first[1][1]]), targets)
    micro.reset()
    torch.testing.assert_close(micro.sample()[0], first[0][0])
    state = micro.state_dict()  # one micro-batch of the pair is still pending
    expected = [micro.sample() for _ in range(3)]
    resumed = MicroBatches(make(), k=2)
    resumed.load_state_dict(state)
    for a, b in zip([resumed.sample() for _ in range(3)], expected):
        torch.testing.assert_close(a[0], b[0])


@pytest.mark.parametrize("k", [0, 5, -2])
def test_micro_batches_need_a_divisor_of_the_batch_size(k):
    with pytest.raises(ValueError, match="positive divisor"):
        MicroBatches(LMBatches(tokens(), 8, 4), k)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_accumulated_gradients_equal_the_big_batch_gradient(k):
    model = tiny_model().double()
    batch = tokens(8 * 9, seed=3).reshape(8, 9)
    big = accumulated_grads(model, next_token_loss, batch, 1)
    model.zero_grad()
    next_token_loss(model, batch).backward()  # independently: autograd on the whole batch
    for g, p in zip(big, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-14)
    for g1, gk in zip(big, accumulated_grads(model, next_token_loss, batch, k)):
        torch.testing.assert_close(g1, gk, rtol=1e-10, atol=1e-13)
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind


def test_trainer_with_accumulation_follows_the_big_batch_trajectory():
    weights = []
    for k in (1, 4):
        model = tiny_model().double()
        batches = MicroBatches(LMBatches(tokens(), 8, CFG.l_max, seed=1), k)
        cfg = TrainConfig(max_steps=8, warmup_steps=2, grad_accum=k, device="cpu", progress=False)
        Trainer(model, next_token_loss, batches, cfg).fit()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-10, atol=1e-11)
    # and a different batch order gives different weights, so the check above can fail
    model = tiny_model().double()
    Trainer(model, next_token_loss, LMBatches(tokens(), 8, CFG.l_max, seed=2),
            TrainConfig(max_steps=8, warmup_steps=2, device="cpu", progress=False)).fit()
    assert not torch.allclose(weights[0], torch.cat([p.detach().flatten() for p in model.parameters()]))


# --- activation memory -------------------------------------------------------------------------------------

def test_saved_activation_bytes_of_small_graphs():
    lin = torch.nn.Linear(6, 4, bias=False)
    x = torch.randn(3, 6, requires_grad=True)
    assert saved_activation_bytes(lin, lambda m, b: m(b).sum(), x) == 3 * 6 * 4  # x, float32
    # exp saves its output; x * x saves x (twice, one storage): 2 storages of 3 x 6 doubles
    xd = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert saved_activation_bytes(lin, lambda m, b: (b.exp() + b * b).sum(), xd) == 2 * 3 * 6 * 8
    # no grad needed: nothing saved
    assert saved_activation_bytes(lin, lambda m, b: (b * b).sum(), torch.randn(3, 6)) == 0


def test_saved_activation_bytes_scale_with_the_batch():
    model = tiny_model()
    batch = tokens(16 * 9).reshape(16, 9)
    sizes = [saved_activation_bytes(model, next_token_loss, batch[:b]) for b in (2, 4, 8, 16)]
    assert all(s > 0 for s in sizes)
    for small, large in zip(sizes, sizes[1:]):
        assert 1.8 < large / small < 2.05, sizes


# --- the runner and the optimizer swap ---------------------------------------------------------------------

def test_set_optimizer_trains_with_the_new_optimizer_under_the_schedule():
    model = tiny_model().double()
    cfg = TrainConfig(max_steps=10, lr=0.5, warmup_steps=4, grad_clip=None, device="cpu", progress=False)
    trainer = Trainer(model, next_token_loss, LMBatches(tokens(), 4, CFG.l_max, seed=1), cfg)
    set_optimizer(trainer, torch.optim.SGD(model.parameters(), lr=cfg.lr))
    expected_lr = cfg.lr * lr_multiplier(0, 4, 10, cfg.min_lr / cfg.lr)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)
    batch = LMBatches(tokens(), 4, CFG.l_max, seed=1).sample()
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    next_token_loss(model, batch).backward()
    manual = [b - expected_lr * p.grad for b, p in zip(before, model.parameters())]
    trainer.train_step()  # plain SGD: theta - eta_0 * grad, same batch
    for m, p in zip(manual, model.parameters()):
        torch.testing.assert_close(p.detach(), m, rtol=1e-12, atol=1e-12)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr * lr_multiplier(1, 4, 10, 0.1))


def test_track_grad_norm_records_the_clipped_norm():
    for clip in (None, 1e-3):
        model = tiny_model()
        cfg = TrainConfig(max_steps=4, warmup_steps=1, grad_clip=clip, device="cpu", progress=False)
        trainer = Trainer(model, next_token_loss, LMBatches(tokens(), 4, CFG.l_max, seed=1), cfg)
        track_grad_norm(trainer)
        trainer.fit()
        norms = trainer.history["grad_norm"]
        assert len(norms) == 4 and all(n > 0 for n in norms)
        if clip is None:  # the first step's norm, computed independently
            fresh = tiny_model()
            next_token_loss(fresh, LMBatches(tokens(), 4, CFG.l_max, seed=1).sample()).backward()
            total = torch.sqrt(sum((p.grad ** 2).sum() for p in fresh.parameters()))
            assert norms[0] == pytest.approx(total.item(), rel=1e-5)
        else:
            assert all(n <= clip * (1 + 1e-4) for n in norms)


def test_run_variant_is_reproducible_and_changes_show():
    recipe = tiny_recipe()
    a, b = run_variant(recipe), run_variant(recipe)
    assert a.history["val_loss"] == b.history["val_loss"] and a.history["loss"] == b.history["loss"]
    assert a.history["val_step"] == [0, 3, 6] and len(a.history["grad_norm"]) == 6
    assert a.val_loss == a.history["val_loss"][-1] and a.best_val_loss == min(a.history["val_loss"])
    assert run_variant(recipe, train=dict(lr=5e-3)).history["loss"] != a.history["loss"]
    assert run_variant(recipe, seed=3).history["loss"] != a.history["loss"]
    tied = run_variant(recipe, model=dict(tie_embeddings=True))
    assert a.params - tied.params == CFG.N_V * CFG.d_e
    sgd = run_variant(recipe, optimizer=lambda m, cfg: torch.optim.SGD(m.parameters(), lr=cfg.lr))
    assert sgd.history["loss"][0] == a.history["loss"][0]  # same weights and batch before the first update
    assert sgd.history["loss"][1:] != a.history["loss"][1:]


def test_run_variant_uses_the_given_training_data_and_the_recipe_stays_unchanged():
    recipe = tiny_recipe()
    before = (recipe.model, recipe.train)
    other = run_variant(recipe, train_tokens=tokens(500, seed=9), model=dict(dropout=0.1), train=dict(lr=2e-3))
    assert (recipe.model, recipe.train) == before and recipe.model.dropout == 0.0
    assert other.model.cfg.dropout == 0.1
    assert other.history["loss"][0] != run_variant(recipe).history["loss"][0]


def test_run_variants_and_results_table():
    recipe = tiny_recipe()
    runs = run_variants(recipe, {"base": {}, "faster": dict(train=dict(lr=3e-3))}, verbose=False)
    assert list(runs) == ["base", "faster"]
    table = results_table(runs, reference="base").splitlines()
    assert len(table) == 4 and table[0].count("|") == table[1].count("|") == table[2].count("|")
    assert "| base |" in table[2] and "+0.000" in table[2]
    diff = runs["faster"].val_loss - runs["base"].val_loss
    assert f"{diff:+.3f}" in table[3]


# --- timing helpers (behaviour only, no timing bounds) -----------------------------------------------------

def test_time_median_calls_and_checks():
    calls = []
    assert time_median(lambda: calls.append(1), repeats=4, warmup=3) >= 0
    assert len(calls) == 7
    with pytest.raises(ValueError):
        time_median(lambda: None, repeats=0)


def test_seconds_per_token_checks_the_context():
    model = tiny_model(l_max=32).eval()
    assert isinstance(seconds_per_token(model, 4, new_tokens=3, repeats=1), float)
    with pytest.raises(ValueError, match="l_max"):
        seconds_per_token(model, 20, new_tokens=12)
    with pytest.raises(ValueError, match="l_max"):
        seconds_per_token(model, 0)
