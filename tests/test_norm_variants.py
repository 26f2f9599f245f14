"""The norm placements beyond the paper (Chapter 9 studies them): each sublayer against its defining equation."""
import math

import pytest
import torch
import torch.nn.functional as F

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig, ETransformer, ETransformerConfig,
    deepnorm_constants,
)

TOL = dict(rtol=1e-10, atol=1e-10)


def ln(norm, x):
    return F.layer_norm(x, (x.shape[-1],), norm.gamma, norm.beta, norm.eps)


def model(norm, L=2, seed=0, **kw):
    torch.manual_seed(seed)
    return DTransformer(DTransformerConfig(N_V=17, l_max=10, d_e=16, H=2, L=L, norm=norm, **kw)).double()


def sublayer_io(m):
    "The first layer's attention residual, an input x, and f(.) = its causal attention."
    res = m.layers[0].attn
    x = torch.randn(2, 6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return res, x, lambda h: res.sublayer(h, causal=True)


def test_peri_ln_is_x_plus_ln_out_of_f_of_ln_x():
    res, x, f = sublayer_io(model("peri"))
    with torch.no_grad():
        res.norm_out.gamma.normal_(); res.norm_out.beta.normal_()  # distinguish the two norms
    torch.testing.assert_close(res(x, causal=True), x + ln(res.norm_out, f(ln(res.norm, x))), **TOL)


@pytest.mark.parametrize("placement", ["post", "deepnorm"])
def test_post_and_deepnorm_are_ln_of_alpha_x_plus_f(placement):
    m = model(placement, L=6)
    res, x, f = sublayer_io(m)
    alpha = deepnorm_constants("decoder-only", M=6)[0] if placement == "deepnorm" else 1.0
    assert res.alpha == alpha
    torch.testing.assert_close(res(x, causal=True), ln(res.norm, alpha * x + f(x)), **TOL)


def test_deepnorm_constants_follow_wang_et_al():
    a, b = deepnorm_constants("decoder-only", M=8)
    assert math.isclose(a, 16 ** 0.25) and math.isclose(b, 64 ** -0.25)
    a, b = deepnorm_constants("encoder", N=6, M=6)
    assert math.isclose(a, 0.81 * (6**5) ** (1 / 16)) and math.isclose(b, 0.87 * (6**5) ** (-1 / 16))


def test_deepnorm_initialises_values_outputs_and_mlp_with_gain_beta():
    torch.manual_seed(0)
    M = 12
    m = DTransformer(DTransformerConfig(N_V=50, l_max=16, d_e=256, H=4, L=M, norm="deepnorm"))
    beta = deepnorm_constants("decoder-only", M=M)[1]
    xavier = math.sqrt(2 / (256 + 256))
    qkv = torch.cat([l.attn.sublayer.qkv.weight for l in m.layers])  # each layer's rows: q, then k, then v
    q_std = torch.cat([l.attn.sublayer.qkv.weight[:256] for l in m.layers]).std().item()
    v_std = torch.cat([l.attn.sublayer.qkv.weight[512:] for l in m.layers]).std().item()
    o_std = torch.cat([l.attn.sublayer.o.weight for l in m.layers]).std().item()
    assert qkv.shape[0] == 3 * 256 * M
    assert math.isclose(v_std, beta * xavier, rel_tol=0.05) and math.isclose(o_std, beta * xavier, rel_tol=0.05)
    assert math.isclose(q_std, math.sqrt(2 / (256 + 768)), rel_tol=0.05)  # xavier over the fused (768 x 256) matrix


def test_resi_dual_two_streams():
    # ResiDual: x_{k+1} = LN(x_k + f_k(x_k)), d_{k+1} = d_k + f_k(x_k), d_0 = embedding; output x + LN(d)
    m = model("resi", L=2)
    ids = torch.tensor([[1, 5, 2, 9, 3]])
    with torch.no_grad():
        m.final_norm.gamma.normal_()
        h = m.embed(ids)
        x, d = h, h
        for layer in m.layers:
            for res, f in ((layer.attn, lambda t, r=layer.attn: r.sublayer(t, causal=True)),
                           (layer.mlp, lambda t, r=layer.mlp: r.sublayer(t))):
                out = f(x)
                x, d = ln(res.norm, x + out), d + out
        expected = m.unembed(x + ln(m.final_norm, d))
        torch.testing.assert_close(m(ids), expected, **TOL)


@pytest.mark.parametrize("placement", ["peri", "resi", "deepnorm"])
def test_every_model_kind_runs_causally_with_every_placement(placement):
    torch.manual_seed(2)
    gpt = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=3, norm=placement)).double()
    bert = ETransformer(ETransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=3, norm=placement)).double()
    ed = EDTransformer(EDTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L_enc=2, L_dec=2, norm=placement)).double()
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    x2 = x.clone(); x2[0, 4:] = torch.tensor([9, 10])
    z = torch.tensor([[3, 1, 4]])
    torch.testing.assert_close(gpt(x)[:, :4], gpt(x2)[:, :4], **TOL)
    torch.testing.assert_close(ed(z, x)[:, :4], ed(z, x2)[:, :4], **TOL)
    assert torch.isfinite(bert(x)).all()
