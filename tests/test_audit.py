"""Chapter 9: the tensor2tensor letters against Chapter 6's placements, and the probes of the experiments."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from transformer_nb.architectures import MLP, DTransformer, DTransformerConfig, Residual
from transformer_nb.audit import (
    T2TDecoder, T2TSublayer, adjacent_change, copy_batch, copy_batches, copy_task_loss, layer_grad_norms,
    mean_sq_norm, norm_inputs, output_change, parse_t2t, residual_stream, small_lm, stack_output, t2t_formula,
    train_lm, warmup_factor, xavier_init,
)
from transformer_nb.components import LayerNorm, MultiHeadAttention

TOL = dict(rtol=1e-10, atol=1e-10)
STRINGS = {"post": ("none", "dan"), "pre": ("n", "da")}


def random_norms(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, LayerNorm):
                m.gamma.normal_(1.0, 0.5)
                m.beta.normal_(0.0, 0.5)
    return module


def copy_norm(target, source):
    with torch.no_grad():
        target.gamma.copy_(source.gamma)
        target.beta.copy_(source.beta)


# --- the letters -------------------------------------------------------------------------------------------

@given(placement=st.sampled_from(["post", "pre"]), sublayer=st.sampled_from(["attn", "mlp"]),
       H=st.integers(1, 3), d_head=st.integers(1, 4), B=st.integers(1, 3), T=st.integers(1, 6),
       seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_t2t_strings_compute_the_residual_blocks_of_chapter_6(placement, sublayer, H, d_head, B, T, seed):
    torch.manual_seed(seed)
    d = H * d_head
    cfg = DTransformerConfig(d_e=d, H=H, d_mlp=2 * d, norm=placement)
    f = MultiHeadAttention(d, H) if sublayer == "attn" else MLP(cfg)
    kwargs = dict(causal=True) if sublayer == "attn" else {}
    res = random_norms(Residual(cfg, f).double())
    t2t = T2TSublayer(res.sublayer, d, *STRINGS[placement], eps=cfg.eps).double()
    (only,) = t2t.norms()
    copy_norm(only, res.norm)
    x = torch.randn(B, T, d, dtype=torch.float64)
    assert torch.equal(t2t(x, **kwargs), res(x, **kwargs))  # the same operations in the same order


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_the_other_placements_strings_give_a_different_function(placement):
    torch.manual_seed(0)
    cfg = DTransformerConfig(d_e=16, H=2, norm=placement)
    res = random_norms(Residual(cfg, MultiHeadAttention(16, 2)).double())
    other = STRINGS["pre" if placement == "post" else "post"]
    t2t = T2TSublayer(res.sublayer, 16, *other).double()
    copy_norm(t2t.norms()[0], res.norm)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    assert (t2t(x, causal=True) - res(x, causal=True)).abs().max() > 1e-3


@pytest.mark.parametrize("placement,final_norm", [("pre", True), ("post", False)])
def test_t2t_decoder_equals_dtransformer(placement, final_norm):
    torch.manual_seed(3)
    cfg = DTransformerConfig(N_V=30, l_max=12, d_e=24, H=3, L=3, norm=placement, final_norm=final_norm)
    model = random_norms(DTransformer(cfg).double())
    t2t = T2TDecoder(model, *STRINGS[placement]).load_norms(model)
    x = torch.randint(0, 30, (3, 9))
    with torch.no_grad():
        assert torch.equal(t2t(x), model(x))
    assert next(t2t.out_norms.parameters(), torch.empty(0, dtype=torch.float64)).dtype == torch.float64


def test_t2t_decoder_refuses_norms_that_do_not_match():
    model = DTransformer(DTransformerConfig(N_V=10, l_max=8, d_e=8, H=2, L=1, norm="post", final_norm=True))
    with pytest.raises(ValueError, match="norm"):
        T2TDecoder(model, "none", "dan").load_norms(model)  # the model has a final norm, `none` has none
    with pytest.raises(ValueError, match="norm"):
        T2TDecoder(model, "n", "dan").load_norms(model)  # two norms per block


def test_strings_without_norm_and_residual():
    f = nn.Linear(6, 6).double()
    x = torch.randn(2, 6, dtype=torch.float64)
    torch.testing.assert_close(T2TSublayer(f, 6, "none", "none")(x), f(x), **TOL)
    torch.testing.assert_close(T2TSublayer(f, 6, "none", "a")(x), x + f(x), **TOL)
    torch.testing.assert_close(T2TSublayer(f, 6, "", "")(x), f(x), **TOL)  # the pre-2017-08-23 spelling


def test_dropout_acts_before_the_residual_addition():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    da = T2TSublayer(nn.Linear(32, 32), 32, "none", "da", dropout=0.5).train()
    ad = T2TSublayer(nn.Linear(32, 32), 32, "none", "ad", dropout=0.5).train()
    assert 0.35 < ((da(x) - x) == 0).float().mean() < 0.65  # the sublayer's output is dropped, x kept
    assert (da(x) == 0).float().mean() < 0.01
    assert 0.35 < (ad(x) == 0).float().mean() < 0.65  # "ad" drops the sum itself
    da.eval()
    assert not ((da(x) - x) == 0).any()


def test_parse_and_formula():
    assert parse_t2t("none", "preprocess") == "" and parse_t2t("dan", "postprocess") == "dan"
    assert t2t_formula("none", "dan") == "LN(x + Dropout(F(x)))"
    assert t2t_formula("n", "da") == "x + Dropout(F(LN(x)))"
    assert t2t_formula("nd", "an", f="G") == "LN(x + G(Dropout(LN(x))))"
    for bad, stage, message in [("a", "preprocess", "nothing to add"), ("daz", "postprocess", "'z'"),
                                ("dq", "postprocess", "unknown"), ("n", "middle", "stage")]:
        with pytest.raises(ValueError, match=message):
            parse_t2t(bad, stage)


# --- the test bed ------------------------------------------------------------------------------------------

def test_xavier_init_scales_each_matrix():
    model = small_lm("pre", L=2, seed=0, d_e=128, H=4, d_mlp=256, N_V=50)
    attn, mlp = model.layers[0].attn.sublayer, model.layers[0].mlp.sublayer
    q, k, v = attn.qkv.weight.split(128)
    for w, (n_out, n_in) in [(q, (128, 128)), (k, (128, 128)), (v, (128, 128)), (attn.o.weight, (128, 128)),
                             (mlp.W_mlp1.weight, (256, 128)), (mlp.W_mlp2.weight, (128, 256))]:
        assert math.isclose(w.std().item(), math.sqrt(2 / (n_in + n_out)), rel_tol=0.05)
    assert (attn.qkv.bias == 0).all() and (mlp.W_mlp1.bias == 0).all()
    e = model.embed.tok.weight[:, None] + model.embed.pos.weight[None, :32]  # every token at every position
    assert math.isclose(e.var().item(), 1.0, rel_tol=0.1)
    zero = small_lm("pre", L=1, seed=0, zero_qk=True)
    q, k, v = zero.layers[0].attn.sublayer.qkv.weight.split(64)
    assert (q == 0).all() and (k == 0).all() and v.abs().sum() > 0


def test_xavier_init_leaves_deepnorm_layers_alone():
    torch.manual_seed(0)
    cfg = DTransformerConfig(N_V=20, l_max=8, d_e=16, H=2, L=3, norm="deepnorm", final_norm=False)
    model = DTransformer(cfg)
    before = {n: p.clone() for n, p in model.layers.named_parameters()}
    xavier_init(model, layers=False)
    assert all(torch.equal(before[n], p) for n, p in model.layers.named_parameters())
    assert small_lm("deepnorm", L=3).final_norm is None and small_lm("pre", L=3).final_norm is not None


def test_copy_task_loss_scores_only_the_copied_half():
    x = copy_batch(3, 10, 7, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, :5], x[:, 5:])

    class Oracle(nn.Module):  # predicts every copied token with certainty, knows nothing about the first half
        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 7)
            logits[:, 4:-1] = 50 * F.one_hot(ids[:, 5:], 7).float()
            return logits

    assert copy_task_loss(Oracle(), x, copy_half_only=True) < 1e-6
    full = copy_task_loss(Oracle(), x).item()
    assert math.isclose(full, 4 / 9 * math.log(7), rel_tol=1e-4)  # 4 of 9 predictions are uniform guesses
    with pytest.raises(ValueError, match="even"):
        copy_batch(1, 5, 7, torch.Generator())
    a, b = next(copy_batches(2, 8, 5, seed=1)), next(copy_batches(2, 8, 5, seed=1))
    assert torch.equal(a, b)


# --- the probes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ["mlp.sublayer.W_mlp2.weight", "attn.sublayer.o.weight"])
def test_layer_grad_norms_match_autograd(param):
    model = small_lm("post", L=3, seed=1)
    x = copy_batch(4, 32, 64, torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(copy_task_loss(model, x), [l.get_parameter(param) for l in model.layers])
    torch.testing.assert_close(layer_grad_norms(model, x, param), torch.stack([g.norm() for g in grads]))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("norm", ["post", "pre", "resi"])
def test_residual_stream_is_the_embedding_then_each_layers_output(norm):
    model = small_lm(norm, L=3, seed=0).double()
    x = copy_batch(2, 16, 64, torch.Generator().manual_seed(0))
    states = residual_stream(model, x)
    assert len(states) == 4
    with torch.no_grad():
        h = dual = model.embed(x)
        torch.testing.assert_close(states[0], h, **TOL)
        for layer, state in zip(model.layers, states[1:]):
            h, dual = layer(h, dual=dual) if norm == "resi" else (layer(h), None)
            torch.testing.assert_close(state, h, **TOL)
        top = h + model.final_norm(dual) if norm == "resi" else (model.final_norm(h) if norm == "pre" else h)
        torch.testing.assert_close(stack_output(model, x), top, **TOL)


def test_post_ln_stream_has_unit_mean_square_and_norm_inputs_are_the_sums():
    model = small_lm("post", L=4, seed=0).double()
    x = copy_batch(8, 32, 64, torch.Generator().manual_seed(0))
    states = residual_stream(model, x)
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(mean_sq_norm(states[1:]), ones, rtol=0, atol=1e-4)
    sums = norm_inputs(model, x, "mlp")
    with torch.no_grad():
        for layer, state, s in zip(model.layers, states, sums):
            h = layer.attn(state, causal=True)
            torch.testing.assert_close(s, h + layer.mlp.sublayer(h), **TOL)


def test_adjacent_change_and_mean_sq_norm_on_known_states():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 8)
    b = torch.randn(2, 5, 8)
    rms, cos = adjacent_change([a, 3 * a, 3 * a])
    torch.testing.assert_close(rms, torch.zeros(2), atol=1e-5, rtol=0)  # LN ignores the scale
    torch.testing.assert_close(cos, torch.ones(2))
    rms, cos = adjacent_change([a, -a])
    assert math.isclose(rms.item(), 2.0, rel_tol=1e-3)  # LN(-a) = -LN(a), each of unit rms
    assert math.isclose(cos.item(), -1.0, rel_tol=1e-5)
    assert adjacent_change([a, b])[0].item() > 0.5
    torch.testing.assert_close(mean_sq_norm([a, 2 * a]), torch.stack([a.pow(2).mean(), 4 * a.pow(2).mean()]))


def test_output_change_is_reproducible_grows_with_the_perturbation_and_leaves_the_model_alone():
    model = small_lm("pre", L=2, seed=0)
    x = copy_batch(4, 32, 64, torch.Generator().manual_seed(0))
    before = [p.clone() for p in model.parameters()]
    small, again, big = (output_change(model, x, rel, seed=0) for rel in (0.01, 0.01, 0.05))
    assert output_change(model, x, 0.0) == 0.0
    assert small == again and 0 < small < big
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert output_change(model, x, 0.01, seed=1) != small


# --- training ---------------------------------------------------------------------------------------------

def test_warmup_factor():
    assert [warmup_factor(s, 3) for s in range(5)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_train_lm_learns_calls_back_and_stops_at_a_non_finite_loss():
    model = small_lm("pre", L=1, seed=0, d_e=32, H=2)
    steps = []
    losses = train_lm(model, copy_batches(16, 32, 64, seed=0), steps=40, lr=3e-3,
                      callback=lambda step, m: steps.append(step))
    assert steps == list(range(1, 41)) and len(losses) == 40
    assert sum(losses[-5:]) / 5 < losses[0] - 0.2
    assert not model.training

    calls = iter(range(100))
    def bad_loss(m, x):
        loss = copy_task_loss(m, x)
        return loss * float("nan") if next(calls) == 3 else loss
    losses = train_lm(small_lm("pre", L=1, seed=0, d_e=32, H=2), copy_batches(4, 32, 64), 10, 1e-3,
                      loss_fn=bad_loss)
    assert len(losses) == 4 and math.isnan(losses[-1])


def test_warmup_scales_the_first_updates():
    # with warmup w, the first Adam step is 1/w as long as without warmup (Adam's first step is lr * sign(g))
    def first_step(warmup):
        model = small_lm("pre", L=1, seed=0, d_e=16, H=2)
        w0 = model.layers[0].mlp.sublayer.W_mlp1.weight.detach().clone()
        train_lm(model, copy_batches(4, 32, 64, seed=0), steps=1, lr=1e-2, warmup=warmup)
        return (model.layers[0].mlp.sublayer.W_mlp1.weight.detach() - w0).abs().max().item()
    assert math.isclose(first_step(0), 1e-2, rel_tol=1e-3)
    assert math.isclose(first_step(10), 1e-3, rel_tol=1e-3)
