"""Chapter 7 (inference): temperature sampling (Algorithms 14-15) and the practical generators: the KV
cache equals recomputation, batches equal single prompts, top-k/top-p semantics, beam width 1 is greedy."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig, d_transformer_ref, paper_params,
)
from transformer_nb.components import KVCache
from transformer_nb.inference import (
    beam_search, cross_attention, d_inference_ref, ed_generate, ed_inference_ref, generate, sample_next,
    sample_ref, sampling_probs, temperature_ref,
)


def naive_greedy(model, prompt, n, keep):
    "Greedy decoding by re-running model(window) for every token, the window cropped as generate documents."
    l_max, window, out = model.cfg.l_max, list(prompt)[-model.cfg.l_max:], []
    with torch.no_grad():
        for _ in range(n):
            y = int(model(torch.tensor([window]))[0, -1].argmax())
            out.append(y)
            window.append(y)
            if len(window) > l_max:
                window = window[-(keep + 1):]
    return out


def test_temperature_sampling_follows_p_to_the_one_over_tau():
    p = torch.tensor([0.4, 0.3, 0.2, 0.07, 0.03], dtype=torch.float64)
    for tau in (0.5, 2.0):
        q = p ** (1 / tau) / (p ** (1 / tau)).sum()
        torch.testing.assert_close(temperature_ref(p, tau), q)
        g, n = torch.Generator().manual_seed(1), 20_000
        counts = torch.bincount(torch.tensor([sample_ref(p, tau, g) for _ in range(n)]), minlength=5)
        chi2 = (((counts - n * q) ** 2) / (n * q)).sum().item()
        assert chi2 < 40  # 4 degrees of freedom: P(chi2 > 40) < 1e-7 for a correct sampler
        chi2_p = (((counts - n * p) ** 2) / (n * p)).sum().item()
        assert chi2_p > 200  # the same counts are far from p itself: the test can fail


def test_sampling_probs_equal_the_paper_temperature():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for tau in (0.3, 1.0, 4.0):
        expected = torch.stack([temperature_ref(row.softmax(-1), tau) for row in logits])
        torch.testing.assert_close(sampling_probs(logits, tau).double(), expected, rtol=1e-5, atol=1e-6)


def test_tiny_temperature_is_argmax():
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=9, l_max=10, d_e=8, H=2, L=2)).double()
    theta, prompt = paper_params(model), [1, 2, 3]
    expected = list(prompt)
    for _ in range(5):
        expected.append(int(d_transformer_ref(expected, theta)[:, -1].argmax()))
    assert d_inference_ref(prompt, theta, 5, tau=1e-5) == expected[3:]
    assert generate(model, prompt, 5, greedy=True) == expected[3:]
    with pytest.raises(ValueError, match="does not fit the context"):
        d_inference_ref(prompt, theta, 9, tau=1.0)


@given(norm=st.sampled_from(["pre", "post"]), bias=st.booleans(),
       positions=st.sampled_from(["learned", "sinusoidal"]), H=st.integers(1, 3), L=st.integers(1, 2),
       prompt_len=st.integers(1, 9), keep=st.integers(1, 7), seed=st.integers(0, 1000))
@settings(max_examples=20, deadline=None)
def test_kv_cache_equals_recomputation(norm, bias, positions, H, L, prompt_len, keep, seed):
    torch.manual_seed(seed)
    cfg = DTransformerConfig(N_V=11, l_max=8, d_e=4 * H, H=H, L=L, norm=norm, bias=bias, positions=positions,
                             final_norm=norm == "pre")
    model = DTransformer(cfg).double().eval()
    prompt = torch.randint(0, 11, (prompt_len,), generator=torch.Generator().manual_seed(seed)).tolist()
    expected = naive_greedy(model, prompt, 14, keep)
    assert generate(model, prompt, 14, greedy=True, keep=keep) == expected
    assert generate(model, prompt, 14, greedy=True, keep=keep, use_cache=False) == expected


def test_left_padded_batch_equals_each_prompt_alone():
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=2)).double()
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
    together = generate(model, prompts, 12, greedy=True)
    assert together == [generate(model, p, 12, greedy=True) for p in prompts]
    ids = torch.tensor([[0, 0, 8, 9, 10], [1, 2, 3, 4, 5]])
    pad = torch.tensor([[True, True, False, False, False], [False] * 5])
    alone = generate(model, [8, 9, 10], 6, greedy=True)
    assert generate(model, ids, 6, greedy=True, x_padding=pad)[0] == alone


def test_top_k_one_is_greedy_and_top_k_restricts_the_support():
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=11, l_max=16, d_e=8, H=2, L=1)).double()
    g = torch.Generator().manual_seed(0)
    greedy = generate(model, [[1, 2], [3, 4]], 10, greedy=True)
    assert generate(model, [[1, 2], [3, 4]], 10, top_k=1, generator=g) == greedy
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    draws = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}


def test_top_p_keeps_the_smallest_nucleus():
    p = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]])
    kept = lambda top_p: set((sampling_probs(p.log(), top_p=top_p)[0] > 0).nonzero().flatten().tolist())
    assert kept(0.4) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.85) == {1, 3, 0}
    assert kept(1.0) == {0, 1, 2, 3, 4}
    torch.testing.assert_close(sampling_probs(p.log(), top_p=0.7)[0, [1, 3]], torch.tensor([0.625, 0.375]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.0), "temperature must be > 0"), (dict(temperature=-1.0), "temperature must be > 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"), (dict(top_p=1.01), r"top_p must be in \(0, 1\]"),
    (dict(top_k=0), "top_k must be a positive integer"), (dict(prompts=[5, 11]), "outside the vocabulary"),
    (dict(prompts=[]), "empty prompt"), (dict(prompts=[[1], []]), "empty prompt"),
    (dict(prompts=torch.zeros(2, 0, dtype=torch.long)), "empty prompt"), (dict(keep=8), "keep must be"),
])
def test_generate_rejects_bad_input(kwargs, message):
    model = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=1))
    args = dict(prompts=[1, 2], max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=message):
        generate(model, **args)


def _ed_model(seed):
    torch.manual_seed(seed)
    cfg = EDTransformerConfig(N_V=12, l_max=12, d_e=16, H=2, L_enc=2, L_dec=2, d_mlp=24)
    return EDTransformer(cfg).double().eval(), cfg.N_V - 2, cfg.N_V - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ed_greedy_matches_algorithm_15_and_beam_width_one(seed):
    model, bos, eos = _ed_model(seed)
    zs = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    outs = ed_generate(model, zs, bos, eos, max_len=10)
    for z, out in zip(zs, outs):
        ref = ed_inference_ref(z, paper_params(model), bos, eos, tau=1e-6, max_len=10, eps=model.cfg.eps)
        assert out == [t for t in ref[1:] if t != eos]
        assert beam_search(model, z, bos, eos, max_len=10, beam_width=1)[0] == out


def test_beam_search_finds_at_least_the_greedy_score():
    model, bos, eos = _ed_model(3)
    for z in ([1, 2, 3], [4, 5], [6, 7, 8, 0]):
        greedy_out = ed_generate(model, z, bos, eos, max_len=10)[0]
        if len(greedy_out) == 10:
            continue  # unfinished: not a complete hypothesis
        x = torch.tensor([[bos] + greedy_out + [eos]])
        logp = model(torch.tensor([z]), x[:, :-1])[0].log_softmax(-1)
        greedy_score = logp[torch.arange(x.shape[1] - 1), x[0, 1:]].sum().item() / (len(greedy_out) + 1)
        assert beam_search(model, z, bos, eos, max_len=10, beam_width=5)[1] >= greedy_score - 1e-9


def test_ed_inputs_are_checked():
    model, bos, eos = _ed_model(0)
    with pytest.raises(ValueError, match="max_len must be between 1 and l_max - 1"):
        ed_generate(model, [1, 2], bos, eos, max_len=12)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ed_generate(model, [1, 12], bos, eos, max_len=5)
    with pytest.raises(ValueError, match="empty context"):
        beam_search(model, [], bos, eos, max_len=5)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, [1], bos, eos, max_len=5, beam_width=0)
    with pytest.raises(ValueError, match="tau must be in"):
        ed_inference_ref([1], paper_params(model), bos, eos, tau=0.0, max_len=5)


def test_cross_attention_weights_are_distributions_over_unpadded_inputs():
    model, bos, eos = _ed_model(0)
    z = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    z_pad = torch.tensor([[False, False, False, True], [False] * 4])
    w = cross_attention(model, z, torch.tensor([[bos, 1], [bos, 2]]), z_padding=z_pad)
    assert w.shape == (2, 2, 2, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 2, dtype=w.dtype))
    assert (w[0, :, :, 3] == 0).all()


@pytest.mark.parametrize("norm", ["post", "pre", "peri", "resi", "deepnorm"])
def test_every_placement_generates_the_same_with_and_without_the_cache(norm):
    torch.manual_seed(0)
    cfg = DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=2, norm=norm)
    model = DTransformer(cfg).double().eval()
    expected = naive_greedy(model, [3, 1, 4], 12, keep=5)
    assert generate(model, [3, 1, 4], 12, greedy=True, keep=5) == expected
    assert generate(model, [3, 1, 4], 12, greedy=True, keep=5, use_cache=False) == expected
    x = torch.tensor([[3, 1, 4, 1, 5, 9, 2]])
    cache = KVCache(cfg.L, cfg.l_max)
    with torch.no_grad():
        steps = [model(x[:, :3], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(3, 7)]
        torch.testing.assert_close(torch.cat(steps, 1), model(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm", ["post", "pre", "peri", "resi", "deepnorm"])
def test_encoder_decoder_cache_equals_recomputation(norm):
    torch.manual_seed(0)
    cfg = EDTransformerConfig(N_V=12, l_max=12, d_e=8, H=2, L_enc=1, L_dec=2, norm=norm)
    model = EDTransformer(cfg).double().eval()
    z, x = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[10, 5, 6, 7, 8]])
    with torch.no_grad():
        Z, cache = model.encode(z), KVCache(cfg.L_dec, cfg.l_max, cross=True)
        steps = [model.decode(x[:, t:t + 1], Z, cache=cache) for t in range(x.shape[1])]
        torch.testing.assert_close(torch.cat(steps, 1), model(z, x), rtol=1e-10, atol=1e-10)
    bos, eos = 10, 11
    out = ed_generate(model, [[1, 2, 3]], bos, eos, max_len=8)[0]
    ref = ed_inference_ref([1, 2, 3], paper_params(model), bos, eos, tau=1e-6, max_len=8, eps=cfg.eps,
                           act=torch.relu) if norm == "post" else None
    if ref is not None:
        assert out == [t for t in ref[1:] if t != eos]
    assert beam_search(model, [1, 2, 3], bos, eos, max_len=8, beam_width=1)[0] == out


def test_generate_restores_training_mode_after_an_error():
    model = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=1)).train()

    def fail(module, args):
        raise RuntimeError("a failure inside the generation loop")
    hook = model.unembed.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="inside the generation loop"):
        generate(model, [1, 2], 3, greedy=True)
    hook.remove()
    assert model.training
    model.eval()
    generate(model, [1, 2], 3, greedy=True)
    assert not model.training
