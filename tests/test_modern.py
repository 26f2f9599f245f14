"""Chapter 10: the course's own parts against their reference forms, in models with the KV cache, and
Llama, Mistral, Qwen2, Qwen3 (also with sliding layers), OLMo 2, Gemma 3 and GPT-NeoX (built from small random configs, never downloaded) against Hugging Face:
logits on a padded batch, greedy generation on a left-padded batch, and the round trip."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformer_nb.architectures import DTransformer, DTransformerConfig, KVCache
from transformer_nb.inference import generate
from transformer_nb.families import from_hf, to_hf
from transformer_nb import families, modern
from hf_helpers import DROP, assert_same_tensors, left_padded_batch, random_hf_model

SIZES = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             bos_token_id=None, eos_token_id=None, pad_token_id=0)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama_mqa_tied": ("LlamaConfig", "LlamaForCausalLM",
                       dict(num_key_value_heads=1, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
    "llama_bias": ("LlamaConfig", "LlamaForCausalLM", dict(attention_bias=True, mlp_bias=True,
                                                           head_dim=24)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    # layer 0 attends to everything, layer 1 to a window of 5 (HF's max_window_layers)
    "qwen2_mixed": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    "qwen3_sliding": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        head_dim=16, use_sliding_window=True, sliding_window=4, max_window_layers=0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=16, query_pre_attn_scalar=16, layer_types=["full_attention"] * 2)),
    "gemma3_sliding": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        head_dim=16, query_pre_attn_scalar=16, layer_types=["sliding_attention"] * 2,
        sliding_window=5, tie_word_embeddings=False)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(num_key_value_heads=DROP)),
    "gpt_neox_sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        num_key_value_heads=DROP, use_parallel_residual=False, hidden_act="gelu_new",
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5})),
}


def hf_model(name: str, dtype=torch.float32):
    config, model, extra = FAMILIES[name]
    return random_hf_model(config, model, {**SIZES, **extra}, dtype)


def padded_batch(T: int = 12):
    return left_padded_batch(SIZES["vocab_size"], T)


def max_delta(name: str, dtype) -> float:
    hf = hf_model(name, dtype)
    ours = from_hf(hf)
    ids, padding = padded_batch()
    positions = (~padding).long().cumsum(1).clamp(min=1) - 1
    with torch.no_grad():
        theirs = hf(ids, attention_mask=(~padding).long(), position_ids=positions).logits
        mine = ours(ids, x_padding=padding, positions=positions)
    return (mine - theirs)[~padding].abs().max().item()


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float32(name):
    assert max_delta(name, torch.float32) <= 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float64(name):
    assert max_delta(name, torch.float64) <= 1e-10


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_generation_matches_hugging_face_on_a_left_padded_batch(name):
    hf = hf_model(name)
    ours = from_hf(hf)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23]]
    mine = generate(ours, prompts, 20, greedy=True)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    out = hf.generate(ids, attention_mask=(ids != 0).long(), max_new_tokens=20,
                      do_sample=False, pad_token_id=0)
    assert mine == out[:, width:].tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_round_trip_is_exact(name):
    hf = hf_model(name)
    back = to_hf(from_hf(hf))
    assert type(back) is type(hf)
    assert_same_tensors(hf, back)


def test_unrepresentable_fields_are_named():
    config = transformers.LlamaConfig(**{**SIZES, "attention_bias": True})
    with pytest.raises(ValueError, match="attention_bias"):
        from_hf(transformers.LlamaForCausalLM(config))
    config = transformers.LlamaConfig(**{**SIZES, "hidden_act": "relu2"})
    with pytest.raises(ValueError, match="hidden_act"):
        families.llama_config(config)
    config = transformers.LlamaConfig(**SIZES, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 1e4})
    with pytest.raises(ValueError, match="rope_type"):
        families.llama_config(config)
    config = transformers.Olmo2Config(**SIZES)
    config.layer_types = ["full_attention", "sliding_attention"]  # no OLMo 2 slides
    with pytest.raises(ValueError, match="layer_types"):
        families.llama_config(config)
    model = DTransformer(DTransformerConfig(norm_kind="rms", positions="rope", gated=True,
                                            activation="silu", parallel_residual=True))
    with pytest.raises(ValueError, match="parallel_residual"):
        to_hf(model)


OPTIONS = {
    "gqa_rope": dict(H_kv=2, positions="rope", norm_kind="rms"),
    "mqa_qknorm_gated": dict(H_kv=1, positions="rope", qk_norm=True, gated=True,
                             activation="silu", rotary_dims=4),
    "window": dict(H_kv=2, positions="rope", window=3),
    "alibi_parallel": dict(positions="alibi", parallel_residual=True, bias=False),
    "peri_rms": dict(norm="peri", norm_kind="rms", positions="rope", H_kv=2),
    "post_gated": dict(norm="post", gated=True, activation="gelu", d_head=8),
    "out_qknorm_all": dict(norm="out", norm_kind="rms", qk_norm="all", positions="rope", H_kv=2),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_the_cache_gives_the_logits_of_the_whole_sequence(name):
    "Token by token with the cache (after a 5-token prompt), as in one pass, on a padded batch."
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=50, l_max=32, d_e=32, H=4, L=2,
                                            **OPTIONS[name])).double().eval()
    ids, padding = padded_batch(11)
    ids = ids % 50
    positions = (~padding).long().cumsum(1).clamp(min=1) - 1
    with torch.no_grad():
        whole = model(ids, x_padding=padding, positions=positions)
        cache = KVCache(model.cfg.L, 32)
        steps = [model(ids[:, :5], x_padding=padding[:, :5], cache=cache,
                       positions=positions[:, :5])]
        for t in range(5, 11):
            steps.append(model(ids[:, t:t + 1], x_padding=padding[:, :t + 1], cache=cache,
                               positions=positions[:, t:t + 1]))
    stepwise = torch.cat(steps, dim=1)
    assert (stepwise - whole)[~padding].abs().max() < 1e-10


@pytest.mark.parametrize("H_kv", [4, 2])
def test_one_token_steps_without_padding_give_the_whole_pass(H_kv):
    "The unmasked one-token path: no padding, every cached key visible."
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=50, l_max=32, d_e=32, H=4, L=3, H_kv=H_kv,
                                            positions="rope")).double().eval()
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        whole = model(ids)
        cache = KVCache(model.cfg.L, 32)
        steps = [model(ids[:, :4], cache=cache)]
        steps += [model(ids[:, t:t + 1], cache=cache) for t in range(4, 10)]
    assert (torch.cat(steps, dim=1) - whole).abs().max() < 1e-10


def test_rotary_angles_are_never_reused_stale():
    "Layers share one cos/sin per pass; a positions tensor changed in place is re-read."
    torch.manual_seed(0)
    model = DTransformer(DTransformerConfig(N_V=50, l_max=32, d_e=32, H=4, L=3,
                                            positions="rope")).double().eval()
    ids = torch.randint(0, 50, (2, 6))
    positions = torch.arange(6)
    with torch.inference_mode():
        model(ids, positions=positions)
        positions += 3  # the same tensor object, new values
        again = model(ids, positions=positions)
        fresh = model(ids, positions=torch.arange(3, 9))
    assert torch.equal(again, fresh)
    model.train()  # angles computed in inference mode must not reach autograd
    model(ids, positions=positions).sum().backward()


def test_gqa_cache_holds_H_kv_heads_and_a_window_caps_it():
    for H_kv, window, held in ((4, None, (4, 20)), (1, None, (1, 20)), (2, 6, (2, 5))):
        model = DTransformer(DTransformerConfig(N_V=50, l_max=32, d_e=32, H=4, L=1, H_kv=H_kv,
                                                positions="rope", window=window))
        cache = KVCache(1, 32)
        with torch.no_grad():
            model(torch.randint(0, 50, (2, 12)), cache=cache)
            for _ in range(8):
                model(torch.randint(0, 50, (2, 1)), cache=cache)
        k = cache.layers[0][0].k[:, :, :cache.length] if window is None else cache.layers[0][0].k
        assert (k.shape[1], k.shape[2]) == held
        assert cache.length == 20


def test_paper_params_refuses_a_modern_model_by_name():
    from transformer_nb.architectures import paper_params
    model = DTransformer(DTransformerConfig(norm_kind="rms"))
    with pytest.raises(ValueError, match="gqa_params"):
        paper_params(model)


def test_default_config_is_still_algorithm_10():
    cfg = DTransformerConfig()
    assert not cfg.uses_modern()
    model = DTransformer(cfg)
    assert type(model.layers[0].attn.sublayer).__name__ == "MultiHeadAttention"
    assert model.embed.pos is not None


def test_beyond_the_paper_boxes_are_registered_after_the_papers():
    from transformer_nb.registry import algorithm, algorithms
    entries = algorithms(modern)
    assert [e.number for e in entries] == list(range(16, 16 + len(entries)))
    assert all(e.beyond_paper and e.chapter == 10 for e in entries)
    with pytest.raises(ValueError, match="after the paper"):
        algorithm(15, "Mine", batched="modern.RMSNorm", beyond_paper=True)
