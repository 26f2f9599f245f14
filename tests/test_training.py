"""Chapter 7 (training): the paper's SGD steps (Algorithms 11-13) against independent computations, and the
practical Trainer: schedule, parameter groups, checkpoints (exact resumption, atomic saves, config checks)."""
import math
from pathlib import Path

import pytest
import torch

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig, ETransformer, ETransformerConfig,
    SequenceClassifier, paper_params,
)
from transformer_nb.checkpoint import read_checkpoint
from transformer_nb.tokenization import CharTokenizer
from transformer_nb.training import (
    LMBatches, MLMBatches, PairBatches, TrainConfig, Trainer, d_training_ref, e_loss_ref, e_training_ref,
    ed_training_ref, load_model, lr_multiplier, mask_tokens_ref, next_token_loss, param_groups, param_list,
    seq2seq_loss,
)

TOL = dict(rtol=1e-9, atol=1e-10)


def manual_sgd(model, loss, eta):
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= eta * p.grad


def assert_same_theta(a, b):
    for x, y in zip(param_list(a), param_list(b), strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_d_training_step_is_theta_minus_eta_grad(seed):
    torch.manual_seed(seed)
    cfg = DTransformerConfig(N_V=9, l_max=8, d_e=8, H=2, L=2)
    model = DTransformer(cfg).double()
    x, eta = [1, 4, 1, 5, 0, 2, 6], 0.05
    theta_hat, losses = d_training_ref([x], paper_params(model), N_epochs=1, eta=eta, eps=cfg.eps)
    logp = model(torch.tensor([x]))[0].log_softmax(-1)
    loss = -sum(logp[t, x[t + 1]] for t in range(len(x) - 1))  # the paper's loss, written out
    assert losses[0] == pytest.approx(loss.item(), rel=1e-10)
    manual_sgd(model, loss, eta)
    assert_same_theta(theta_hat, paper_params(model))


def test_e_training_step_with_a_fixed_mask():
    torch.manual_seed(0)
    cfg = ETransformerConfig(N_V=9, l_max=8, d_e=8, H=2, L=1, d_f=6)
    model = ETransformer(cfg).double()
    x, mask_token, eta = [1, 4, 1, 5, 0, 2], 6, 0.05
    g = torch.Generator().manual_seed(3)
    x_tilde = mask_tokens_ref(x, 0.5, mask_token, torch.Generator().manual_seed(3))
    masked = [t for t in range(len(x)) if x_tilde[t] == mask_token]
    assert masked, "the seed must mask something"
    theta_hat, _ = e_training_ref([x], paper_params(model), 1, eta, 0.5, mask_token, g, eps=cfg.eps)
    logp = model(torch.tensor([x_tilde]))[0].log_softmax(-1)
    manual_sgd(model, -sum(logp[t, x[t]] for t in masked), eta)
    assert_same_theta(theta_hat, paper_params(model))


def test_e_training_leaves_theta_alone_when_nothing_is_masked():
    torch.manual_seed(0)
    model = ETransformer(ETransformerConfig(N_V=9, l_max=8, d_e=8, H=2, L=1)).double()
    theta = paper_params(model)
    theta_hat, losses = e_training_ref([[1, 2, 3]], theta, 1, 0.1, 1e-12, 6, torch.Generator().manual_seed(0))
    assert losses == [0.0]
    assert_same_theta(theta_hat, theta)
    assert e_loss_ref([1, 2], [1, 2], theta, 6) is None


def test_ed_training_step_is_theta_minus_eta_grad():
    torch.manual_seed(0)
    cfg = EDTransformerConfig(N_V=9, l_max=8, d_e=8, H=2, L_enc=1, L_dec=2)
    model = EDTransformer(cfg).double()
    z, x, eta = [3, 1, 4], [7, 1, 5, 9 - 1], 0.05
    theta_hat, _ = ed_training_ref([z], [x], paper_params(model), 1, eta, eps=cfg.eps)
    logp = model(torch.tensor([z]), torch.tensor([x]))[0].log_softmax(-1)
    manual_sgd(model, -sum(logp[t, x[t + 1]] for t in range(len(x) - 1)), eta)
    assert_same_theta(theta_hat, paper_params(model))


def test_unembedding_update_matches_the_analytic_gradient():
    "d loss / d W_u = sum_t (P[:, t] - onehot(x[t+1])) X[:, t]^T, X the final representations: no autograd."
    torch.manual_seed(0)
    cfg = DTransformerConfig(N_V=7, l_max=8, d_e=8, H=2, L=1)
    model = DTransformer(cfg).double()
    x, eta = [1, 2, 3, 0, 5], 0.1
    seen = {}
    model.unembed.register_forward_pre_hook(lambda mod, args: seen.update(X=args[0][0].detach()))
    with torch.no_grad():
        P = model(torch.tensor([x]))[0].softmax(-1)  # (l, N_V)
    X = seen["X"]  # (l, d_e)
    onehot = torch.nn.functional.one_hot(torch.tensor(x[1:]), cfg.N_V).double()
    grad_W_u = (P[:-1] - onehot).T @ X[:-1]
    theta = paper_params(model)
    theta_hat, _ = d_training_ref([x], theta, 1, eta, eps=cfg.eps)
    torch.testing.assert_close(theta_hat.W_u.detach(), theta.W_u - eta * grad_W_u, **TOL)


def test_masking_rate():
    x_tilde = mask_tokens_ref([1] * 20_000, 0.15, 0, torch.Generator().manual_seed(0))
    rate = x_tilde.count(0) / len(x_tilde)
    assert abs(rate - 0.15) < 5 * math.sqrt(0.15 * 0.85 / 20_000)  # 5 standard errors
    with pytest.raises(ValueError, match="p_mask"):
        mask_tokens_ref([1], 1.0, 0)


def test_reference_training_rejects_short_sequences():
    model = DTransformer(DTransformerConfig(N_V=5, l_max=4, d_e=4, H=1, L=1))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        d_training_ref([[1]], paper_params(model), 1, 0.1)


def test_schedule():
    values = [lr_multiplier(s, 10, 100, 0.1) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:10], values[1:10]))  # warmup rises
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # cosine falls
    assert values[100] == pytest.approx(0.1)


def test_param_groups_decay_matrices_only():
    cfg = DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=2, tie_embeddings=True)
    model = DTransformer(cfg)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        expect = p.dim() >= 2 and "embed" not in name
        assert (id(p) in decayed) == expect, name
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert id(model.embed.tok.weight) in {id(p) for p in param_groups(model, 0.1, True)[0]["params"]}


def test_train_config_rejects_bad_values():
    for bad in [dict(max_steps=0), dict(lr=0.0), dict(min_lr=1.0, lr=0.1), dict(grad_clip=0.0),
                dict(precision="fp8"), dict(grad_accum=0)]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def _seq2seq_setup(seed):
    torch.manual_seed(seed)
    tok = CharTokenizer("0123456789")
    cfg = EDTransformerConfig(N_V=tok.vocab_size, l_max=10, d_e=16, H=2, L_enc=1, L_dec=1, dropout=0.1)
    model = EDTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    strings = ["".join(str(d) for d in torch.randint(0, 10, (int(n),), generator=g).tolist())
               for n in torch.randint(1, 6, (300,), generator=g)]
    pairs = [(tok.encode(s), tok.encode(s[::-1], bos=True, eos=True)) for s in strings]
    batches = [PairBatches(pairs, 16, tok.pad_token, seed=seed) for seed in (1, 2)]
    return model, tok, *batches


def test_seq2seq_resume_is_bit_exact(tmp_path):
    cfg = dict(max_steps=24, lr=3e-3, warmup_steps=4, grad_accum=2, eval_every=8, eval_batches=2,
               device="cpu", progress=False, checkpoint_path=str(tmp_path / "run.pt"), checkpoint_every=5)
    model, tok, train_b, val_b = _seq2seq_setup(0)
    full = Trainer(model, seq2seq_loss, train_b, TrainConfig(**cfg), val_b, tok).fit()
    assert full["val_loss"][-1] < full["val_loss"][0]

    model, tok, train_b, val_b = _seq2seq_setup(0)
    Trainer(model, seq2seq_loss, train_b, TrainConfig(**cfg), val_b, tok).fit(until=13)
    assert read_checkpoint(tmp_path / "run.pt")["step"] == 13
    model, tok, train_b, val_b = _seq2seq_setup(99)
    resumed = Trainer(model, seq2seq_loss, train_b, TrainConfig(**cfg), val_b)
    resumed.load(tmp_path / "run.pt")
    assert resumed.tokenizer.encode("0123") == tok.encode("0123")  # the tokenizer travels with the checkpoint
    part = resumed.fit()
    assert part["loss"] == full["loss"] and part["val_loss"] == full["val_loss"]


def test_interrupt_saves_the_last_completed_step(tmp_path):
    cfg = dict(max_steps=10, lr=3e-3, warmup_steps=2, device="cpu", progress=False, eval_every=100,
               checkpoint_path=str(tmp_path / "run.pt"))
    model, _, train_b, _ = _seq2seq_setup(0)
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return seq2seq_loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        Trainer(model, loss_fn, train_b, TrainConfig(**cfg)).fit()
    assert read_checkpoint(tmp_path / "run.pt")["step"] == 6


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _, train_b, _ = _seq2seq_setup(0)
    path = tmp_path / "run.pt"
    trainer = Trainer(model, seq2seq_loss, train_b, TrainConfig(max_steps=3, device="cpu", progress=False,
                                                                checkpoint_path=str(path)))
    trainer.fit(until=2)
    before = path.read_bytes()

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"truncated")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    trainer.train_step()
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left behind


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(tmp_path):
    tok = CharTokenizer("abc")
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=tok.vocab_size, l_max=8, d_e=8, H=2, L=1))
    stream = torch.tensor(tok.encode("abcabcabc" * 20))
    trainer = Trainer(model, next_token_loss, LMBatches(stream, 4, 6), TrainConfig(max_steps=2, device="cpu",
                      progress=False, checkpoint_path=str(tmp_path / "m.pt")), tokenizer=tok)
    trainer.fit()
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["model_kind"] == "DTransformer"
    loaded, loaded_tok = load_model(tmp_path / "m.pt", device="cpu")
    x = torch.tensor([tok.encode("abca")])
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded_tok.decode(tok.encode("cab")) == "cab"


def test_loading_into_a_different_config_names_the_fields(tmp_path):
    torch.manual_seed(0)
    enc = ETransformer(ETransformerConfig(N_V=10, l_max=8, d_e=8, H=2, L=1))
    clf = SequenceClassifier(enc, 3)
    stream = torch.arange(100) % 7
    trainer = Trainer(enc, lambda m, b: m(b[0]).sum() * 0, MLMBatches(stream, 2, 4, 0.5, 7), TrainConfig(
        max_steps=1, device="cpu", progress=False))
    trainer.save(tmp_path / "e.pt")
    other = ETransformer(ETransformerConfig(N_V=10, l_max=16, d_e=8, H=2, L=1, norm="pre"))
    expected = r"l_max \(checkpoint 8, model 16\); norm \(checkpoint 'post', model 'pre'\)"
    with pytest.raises(ValueError, match=expected):
        Trainer(other, next_token_loss, MLMBatches(stream, 2, 4, 0.5, 7), TrainConfig(device="cpu")).load(
            tmp_path / "e.pt")
    with pytest.raises(ValueError, match="holds a ETransformer, not a SequenceClassifier"):
        Trainer(clf, next_token_loss, MLMBatches(stream, 2, 4, 0.5, 7), TrainConfig(device="cpu")).load(
            tmp_path / "e.pt")


def test_the_optimizer_factory_gets_the_configs_schedule():
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=8, l_max=8, d_e=8, H=2, L=1))
    cfg = TrainConfig(max_steps=10, lr=0.1, warmup_steps=4, device="cpu", progress=False)
    batches = LMBatches(torch.arange(64) % 8, 2, 8)
    trainer = Trainer(model, next_token_loss, batches, cfg,
                      optimizer=lambda m, c: torch.optim.SGD(m.parameters(), lr=c.lr))
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.scheduler.optimizer is trainer.optimizer
    lrs = []
    for _ in range(cfg.max_steps):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.train_step()
    assert lrs == pytest.approx([cfg.lr * lr_multiplier(s, 4, 10, 0.1) for s in range(10)])
    assert isinstance(Trainer(model, next_token_loss, batches, cfg).optimizer, torch.optim.AdamW)
