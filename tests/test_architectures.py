"""Chapter 6 (Algorithms 8-10): batched modules against the paper's reference forms, parameter counts, errors."""
import math

import pytest
import torch
from transformer_nb.tokenization import random_padded
from hypothesis import given, settings, strategies as st

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig, ETransformer, ETransformerConfig,
    d_transformer_ref, e_transformer_ref, ed_transformer_ref, gelu_ref, paper_params,
)
from transformer_nb.anatomy import layer_diagram

TOL = dict(rtol=1e-10, atol=1e-10)


batch = random_padded


small = dict(N_V=st.integers(3, 20), H=st.integers(1, 3), d_head=st.integers(1, 4), d_mlp=st.integers(1, 12),
             bias=st.booleans(), seed=st.integers(0, 2**16))


@given(L=st.integers(1, 3), lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3), **small)
@settings(max_examples=25, deadline=None)
def test_dtransformer_equals_algorithm_10(L, lengths, N_V, H, d_head, d_mlp, bias, seed):
    torch.manual_seed(seed)
    cfg = DTransformerConfig(N_V=N_V, l_max=8, d_e=H * d_head, H=H, d_mlp=d_mlp, L=L, bias=bias)
    model = DTransformer(cfg).double()
    x, pad = batch(lengths, N_V, seed)
    P = model(x, x_padding=pad).softmax(-1)
    theta = paper_params(model)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(P[b, :n].T, d_transformer_ref(x[b, :n].tolist(), theta, eps=cfg.eps), **TOL)


@given(L=st.integers(1, 3), d_f=st.integers(1, 6), lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3), **small)
@settings(max_examples=25, deadline=None)
def test_etransformer_equals_algorithm_9(L, d_f, lengths, N_V, H, d_head, d_mlp, bias, seed):
    torch.manual_seed(seed)
    cfg = ETransformerConfig(N_V=N_V, l_max=8, d_e=H * d_head, H=H, d_mlp=d_mlp, L=L, d_f=d_f, bias=bias)
    model = ETransformer(cfg).double()
    x, pad = batch(lengths, N_V, seed)
    P = model(x, x_padding=pad).softmax(-1)
    theta = paper_params(model)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(P[b, :n].T, e_transformer_ref(x[b, :n].tolist(), theta, eps=cfg.eps), **TOL)


@given(L_enc=st.integers(1, 2), L_dec=st.integers(1, 2), lz=st.lists(st.integers(1, 7), min_size=2, max_size=2),
       lx=st.lists(st.integers(1, 7), min_size=2, max_size=2), **small)
@settings(max_examples=25, deadline=None)
def test_edtransformer_equals_algorithm_8(L_enc, L_dec, lz, lx, N_V, H, d_head, d_mlp, bias, seed):
    torch.manual_seed(seed)
    cfg = EDTransformerConfig(N_V=N_V, l_max=8, d_e=H * d_head, H=H, d_mlp=d_mlp, L_enc=L_enc, L_dec=L_dec, bias=bias)
    model = EDTransformer(cfg).double()
    z, z_pad = batch(lz, N_V, seed)
    x, x_pad = batch(lx, N_V, seed + 1)
    P = model(z, x, z_padding=z_pad, x_padding=x_pad).softmax(-1)
    theta = paper_params(model)
    for b in range(2):
        ref = ed_transformer_ref(z[b, :lz[b]].tolist(), x[b, :lx[b]].tolist(), theta, eps=cfg.eps)
        torch.testing.assert_close(P[b, :lx[b]].T, ref, **TOL)


def test_reference_forms_use_the_paper_activations():
    # Alg 8 is ReLU: swapping in GELU must change its output (so the test above would catch a wrong activation)
    torch.manual_seed(0)
    model = EDTransformer(EDTransformerConfig(N_V=9, l_max=6, d_e=8, H=2, L_enc=1, L_dec=1)).double()
    theta = paper_params(model)
    a = ed_transformer_ref([1, 2, 3], [4, 5], theta, eps=1e-5)
    b = ed_transformer_ref([1, 2, 3], [4, 5], theta, eps=1e-5, act=gelu_ref)
    assert not torch.allclose(a, b)


def test_decoder_is_causal_and_encoder_is_not():
    torch.manual_seed(1)
    gpt = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=2)).double()
    bert = ETransformer(ETransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=2)).double()
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    x2 = x.clone(); x2[0, 4:] = torch.tensor([9, 10])
    torch.testing.assert_close(gpt(x)[:, :4], gpt(x2)[:, :4], **TOL)
    assert not torch.allclose(bert(x)[:, :4], bert(x2)[:, :4])


def test_tied_embeddings_share_one_matrix():
    model = DTransformer(DTransformerConfig(N_V=13, l_max=8, d_e=8, H=2, L=1, tie_embeddings=True))
    assert model.unembed.W_u.weight is model.embed.tok.weight
    untied = DTransformer(DTransformerConfig(N_V=13, l_max=8, d_e=8, H=2, L=1))
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == 13 * 8


def gpt2_formula(N_V, l_max, d, L, tied=True):
    "GPT-2's parameter count by hand: embeddings, 12 d^2 + 13 d per layer, final norm, (untied) unembedding."
    per_layer = 4 * d * d + 4 * d  # attention: W_qkv (3 d^2 + 3 d) and W_o (d^2 + d)
    per_layer += 8 * d * d + 5 * d  # MLP with d_mlp = 4 d: (4 d^2 + 4 d) + (4 d^2 + d)
    per_layer += 4 * d  # two layer norms
    return N_V * d + l_max * d + L * per_layer + 2 * d + (0 if tied else N_V * d)


def test_gpt2_small_parameter_count():
    cfg = DTransformerConfig(N_V=50257, l_max=1024, d_e=768, H=12, L=12, activation="gelu_tanh", tie_embeddings=True)
    with torch.device("meta"):
        ours = DTransformer(cfg)
    n = sum(p.numel() for p in ours.parameters())
    assert n == gpt2_formula(50257, 1024, 768, 12)
    assert round(n / 1e6) == 124  # "GPT-2 small, 124M parameters"
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert n == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("d,L", [(16, 1), (32, 3)])
def test_parameter_count_formula_holds_for_small_models(d, L):
    model = DTransformer(DTransformerConfig(N_V=31, l_max=20, d_e=d, H=4, L=L))
    assert sum(p.numel() for p in model.parameters()) == gpt2_formula(31, 20, d, L, tied=False)


def test_gpt2_init_scales_residual_outputs():
    torch.manual_seed(0)
    L = 8
    model = DTransformer(DTransformerConfig(N_V=50, l_max=16, d_e=256, H=4, L=L, init="gpt2"))
    w_o = torch.cat([l.attn.sublayer.o.weight.flatten() for l in model.layers])
    w_in = torch.cat([l.attn.sublayer.qkv.weight.flatten() for l in model.layers])
    assert math.isclose(w_o.std().item(), 0.02 / math.sqrt(2 * L), rel_tol=0.05)
    assert math.isclose(w_in.std().item(), 0.02, rel_tol=0.05)


def test_layer_diagram_follows_the_config():
    assert layer_diagram(DTransformerConfig()) == [["LayerNorm", "causal self-attention", "+"],
                                                   ["LayerNorm", "MLP (gelu)", "+"]]
    assert layer_diagram(DTransformerConfig(norm="post"))[0] == ["causal self-attention", "+", "LayerNorm"]
    assert layer_diagram(DTransformerConfig(norm="peri"))[1] == ["LayerNorm", "MLP (gelu)", "LayerNorm", "+"]


@pytest.mark.parametrize("make,call,message", [
    (lambda: DTransformer(DTransformerConfig(N_V=10, l_max=6, d_e=8, H=2, L=1)), lambda m: m(torch.tensor([[3, 10]])), "token id 10"),
    (lambda: DTransformer(DTransformerConfig(N_V=10, l_max=6, d_e=8, H=2, L=1)), lambda m: m(torch.tensor([[-1]])), "token id -1"),
    (lambda: DTransformer(DTransformerConfig(N_V=10, l_max=6, d_e=8, H=2, L=1)), lambda m: m(torch.zeros(1, 7, dtype=torch.long)), "l_max = 6"),
    (lambda: DTransformer(DTransformerConfig(N_V=10, l_max=6, d_e=8, H=2, L=1)), lambda m: m(torch.zeros(2, 0, dtype=torch.long)), "empty"),
    (lambda: ETransformer(ETransformerConfig(N_V=10, l_max=6, d_e=8, H=2, L=1)), lambda m: m(torch.zeros(2, 3)), "integer token ids"),
    (lambda: EDTransformer(EDTransformerConfig(N_V=10, l_max=6, d_e=8, H=2)), lambda m: m(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long)), "different batch sizes"),
    (lambda: EDTransformer(EDTransformerConfig(N_V=10, l_max=6, d_e=8, H=2)), lambda m: m(torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)), "l_max = 6"),
    (lambda: None, lambda m: DTransformerConfig(d_e=10, H=4), "not divisible"),
    (lambda: None, lambda m: ETransformerConfig(activation="swish"), "activation must be one of"),
    (lambda: None, lambda m: ETransformer(ETransformerConfig(d_f=8, d_e=16, tie_embeddings=True)), "d_f == d_e"),
])
def test_bad_input_raises_a_clear_value_error(make, call, message):
    model = make()
    with pytest.raises(ValueError, match=message):
        call(model)


def test_reference_rejects_empty_and_overlong_sequences():
    model = DTransformer(DTransformerConfig(N_V=10, l_max=4, d_e=8, H=2, L=1)).double()
    theta = paper_params(model)
    with pytest.raises(ValueError, match="empty"):
        d_transformer_ref([], theta)
    with pytest.raises(ValueError, match="l_max = 4"):
        d_transformer_ref([1, 2, 3, 4, 5], theta)


def test_padding_arguments_have_one_spelling_and_are_keyword_only():
    "Every public callable spells padding `x_padding`/`z_padding`, keyword-only."
    import inspect
    import transformer_nb.architectures as A, transformer_nb.components as C
    import transformer_nb.inference as I, transformer_nb.training as T
    seen = 0
    for mod in (A, C, I, T):
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            fns = [obj] if inspect.isfunction(obj) else [
                f for n, f in vars(obj).items() if inspect.isfunction(f) and not n.startswith("_")
                or n == "forward"] if inspect.isclass(obj) else []
            for fn in fns:
                for p in inspect.signature(fn).parameters.values():
                    assert "padding_mask" not in p.name, f"{name}.{fn.__name__}: {p.name}"
                    if p.name in ("x_padding", "z_padding") and fn.__name__ != "positions_of":
                        assert p.kind is p.KEYWORD_ONLY, f"{name}.{fn.__name__}: {p.name}"
                        seen += 1
    assert seen >= 8  # the three models, the classifier, attention, generate, ed_generate


def test_decoding_layout_changes_storage_not_values():
    "Widening maps are stored input-major; tied weights stay tied; outputs do not change."
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=300, L=2)).double()
    wide = [p for n, p in model.named_parameters() if p.dim() == 2 and p.shape[0] > p.shape[1]
            and not n.startswith("embed")]
    assert len(wide) == 5 and all(p.stride() == (1, p.shape[0]) for p in wide)  # qkv, W_mlp1 x 2, W_u
    tied = DTransformer(DTransformerConfig(N_V=300, L=1, tie_embeddings=True))
    assert tied.unembed.W_u.weight is tied.embed.tok.weight
    x = torch.randint(0, 300, (2, 9))
    before = model(x)
    for p in model.parameters():
        p.data = p.data.contiguous()
    assert torch.allclose(model(x), before, rtol=0, atol=1e-12)
