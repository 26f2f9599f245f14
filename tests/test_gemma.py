"""Chapter 10's Gemma options (soft-capping, the score scale d_score, local and global layers with their own
RoPE base) against the reference form and with the KV cache; Gemma 2 and Gemma 3 with mixed layer types
(built from small random configs, never downloaded) against Hugging Face: logits on a left-padded batch,
greedy generation past the window on a left-padded batch, the round trip, and the fields refused by name."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformer_nb import families
from transformer_nb.architectures import DTransformer, DTransformerConfig, KVCache
from transformer_nb.families import from_hf, to_hf
from transformer_nb.inference import generate
from transformer_nb.modern import Attention, Rotary, gq_attention_ref, gqa_params
from hf_helpers import assert_same_tensors, left_padded_batch, random_hf_model

SIZES = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
             bos_token_id=None, eos_token_id=None, pad_token_id=0)
MIXED = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
GEMMA3_ROPE = {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
               "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}
FAMILIES = {
    # Hugging Face's default layer_types for Gemma 2: sliding, full, sliding, full
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        sliding_window=5, query_pre_attn_scalar=24, attn_logit_softcapping=1.5,
        final_logit_softcapping=3.0)),
    "gemma2_mixed_untied": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        layer_types=MIXED, sliding_window=4, query_pre_attn_scalar=16, attn_logit_softcapping=None,
        final_logit_softcapping=5.0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 100.0})),
    "gemma3_mixed": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        layer_types=MIXED, sliding_window=5, query_pre_attn_scalar=20, final_logit_softcapping=4.0,
        rope_parameters=GEMMA3_ROPE)),
    "gemma3_mixed_eager": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        layer_types=MIXED, sliding_window=4, rope_parameters=GEMMA3_ROPE, tie_word_embeddings=False,
        attn_implementation="eager")),
}


def hf_model(name: str, dtype=torch.float32):
    "Logits of order 1, so that the caps bite; Gemma has no biases, its norm scales move."
    config, model, extra = FAMILIES[name]
    return random_hf_model(config, model, {**SIZES, **extra}, dtype)


def padded_batch(T: int = 14):
    return left_padded_batch(SIZES["vocab_size"], T)


def max_delta(name: str, dtype, alone: bool = False) -> float:
    """Max |our logit - theirs| over the real tokens of a left-padded batch. With `alone`, Hugging Face
    reads each sequence by itself, without padding, while ours still reads the padded batch."""
    hf = hf_model(name, dtype)
    ours = from_hf(hf)
    ids, padding = padded_batch()
    positions = (~padding).long().cumsum(1).clamp(min=1) - 1
    with torch.no_grad():
        mine = ours(ids, x_padding=padding, positions=positions)
        if not alone:
            theirs = hf(ids, attention_mask=(~padding).long(), position_ids=positions).logits
        else:
            theirs = torch.zeros_like(mine)
            for b, real in enumerate(~padding):
                theirs[b, real] = hf(ids[b, real][None]).logits[0]
    return (mine - theirs)[~padding].abs().max().item()


def eager(name: str) -> bool:
    return hf_model(name).config._attn_implementation == "eager"


def test_the_configs_use_every_option():
    "The models under test really have mixed layers, two RoPE bases, caps and another score scale."
    cfg = from_hf(hf_model("gemma3_mixed")).cfg
    assert cfg.layer_kinds == ("local", "local", "global", "local") and cfg.window == 5
    assert (cfg.rope_base, cfg.rope_local_base, cfg.d_score, cfg.logit_softcap) == (1000.0, 50.0, 20, 4.0)
    model = from_hf(hf_model("gemma2"))
    assert [l.attn.sublayer.window for l in model.layers] == [5, None, 5, None]
    assert (model.cfg.attn_softcap, model.cfg.logit_softcap, model.cfg.d_score) == (1.5, 3.0, 24)
    assert model.layers[0].attn.sublayer.softmax_dtype == torch.float32  # HF's eager attention
    assert from_hf(hf_model("gemma3_mixed")).layers[0].attn.sublayer.softmax_dtype is None


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float32(name):
    assert max_delta(name, torch.float32) <= 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float64(name):
    """Hugging Face's eager attention (Gemma 2's) returns NaN in float64 for a padded batch: its mask's
    float64 minimum becomes -inf in its float32 softmax, a padding query's row is then all -inf, and
    the NaN spreads through 0 * NaN. So its reference is each sequence alone; ours is the padded batch."""
    assert max_delta(name, torch.float64, alone=True) <= 1e-10
    if not eager(name):
        assert max_delta(name, torch.float64) <= 1e-10


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_without_padding(name):
    "One sequence, no padding and no cache: the global layers take the fused kernel's own causal mask."
    hf = hf_model(name, torch.float64)
    ours = from_hf(hf)
    ids = padded_batch()[0][:1]
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max() <= 1e-10


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_generation_matches_hugging_face_on_a_left_padded_batch(name):
    "20 new tokens after prompts of up to 9: far past the window of 4 or 5, with the cache."
    hf = hf_model(name)
    ours = from_hf(hf)
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [12, 13], [20, 21, 22, 23, 24, 25]]
    mine = generate(ours, prompts, 20, greedy=True)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    out = hf.generate(ids, attention_mask=(ids != 0).long(), max_new_tokens=20,
                      do_sample=False, pad_token_id=0)
    assert mine == out[:, width:].tolist()
    assert len(set(map(tuple, mine))) > 1


@pytest.mark.parametrize("name", FAMILIES)
def test_round_trip_is_exact(name):
    hf = hf_model(name)
    back = to_hf(from_hf(hf))
    assert type(back) is type(hf)
    assert_same_tensors(hf, back)
    for field in ("layer_types", "sliding_window", "query_pre_attn_scalar", "attn_logit_softcapping",
                  "final_logit_softcapping", "rope_parameters", "tie_word_embeddings"):
        assert getattr(back.config, field) == getattr(hf.config, field), field


def gemma3_config(**changes):
    return transformers.Gemma3TextConfig(**{**SIZES, "layer_types": MIXED, "sliding_window": 4,
                                            **changes})


HF_REFUSED = [  # (config, the field the error must name)
    (lambda: gemma3_config(attn_logit_softcapping=20.0), "attn_logit_softcapping"),
    (lambda: gemma3_config(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (lambda: gemma3_config(attention_bias=True), "attention_bias"),
    (lambda: gemma3_config(hidden_activation="relu"), "hidden_activation"),
    (lambda: gemma3_config(rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}), "rope_type"),
    (lambda: transformers.Gemma2Config(**SIZES, attention_bias=True), "attention_bias"),
    (lambda: transformers.Gemma2Config(**SIZES, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "rope_type"),
]


@pytest.mark.parametrize("make, field", HF_REFUSED)
def test_unrepresentable_hugging_face_fields_are_named(make, field):
    config = make()
    family = "gemma2" if config.model_type == "gemma2" else "gemma3"
    with pytest.raises(ValueError, match=field):
        families.gemma_config(config, family)


def test_a_loader_refuses_the_other_gemma_by_model_type():
    with pytest.raises(ValueError, match="model_type"):
        families.from_gemma2(hf_model("gemma3_mixed"))


GEMMA = dict(N_V=50, l_max=32, d_e=32, H=4, H_kv=2, d_head=8, L=2, norm="peri", norm_kind="rms+1",
             positions="rope", gated=True, activation="gelu_tanh", bias=False, embed_scale=True)
OURS_REFUSED = [  # (config, the field the error must name)
    (dict(GEMMA, window=4, rope_local_base=100.0), "rope_local_base"),  # Gemma 2: one base
    (dict(GEMMA, qk_norm=True, attn_softcap=5.0), "attn_softcap"),  # HF's Gemma 3 ignores it
    (dict(GEMMA, qk_norm="all"), "qk_norm"),
    (dict(GEMMA, bias=True), "bias"),
    (dict(GEMMA, embed_scale=False), "embed_scale"),
    (dict(GEMMA, d_score=6.5), "d_score"),  # HF's query_pre_attn_scalar is an integer
    (dict(norm_kind="rms", positions="rope", gated=True, activation="silu", attn_softcap=5.0),
     "attn_softcap"),  # the Llama family has none of Gemma's options
    (dict(norm_kind="rms", positions="rope", gated=True, activation="silu", window=4, L=2,
          layer_kinds=("local", "global")), "layer_kinds"),
    (dict(positions="rope", logit_softcap=5.0), "logit_softcap"),  # GPT-NeoX
]


@pytest.mark.parametrize("options, field", OURS_REFUSED)
def test_configs_no_family_holds_are_refused_by_name(options, field):
    with pytest.raises(ValueError, match=field):
        to_hf(DTransformer(DTransformerConfig(**options)))


BAD_OPTIONS = [
    (dict(attn_softcap=0.0), "attn_softcap"), (dict(logit_softcap=-1.0), "logit_softcap"),
    (dict(attn_softcap="5"), "attn_softcap"), (dict(d_score=0), "d_score"),
    (dict(d_score=float("nan")), "d_score"),
    (dict(L=2, window=4, layer_kinds=("local",)), "layer_kinds"),
    (dict(L=2, window=4, layer_kinds=("local", "sliding")), "layer_kinds"),
    (dict(L=2, window=4, layer_kinds="local"), "layer_kinds"),
    (dict(L=2, layer_kinds=("local", "global")), "window"),
    (dict(positions="rope", rope_local_base=100.0), "rope_local_base"),  # no local layer
    (dict(window=4, rope_local_base=100.0), "rope_local_base"),  # no rotary positions
    (dict(positions="rope", window=4, rope_local_base=0.5), "rope_local_base"),
    (dict(L=1, window=4, layer_kinds=(["local"],)), "layer_kinds"),
    (dict(positions="rope", window=4, L=2, layer_kinds=("global", "global"), rope_local_base=1e2),
     "rope_local_base"),
]


@pytest.mark.parametrize("options, field", BAD_OPTIONS)
def test_bad_gemma_options_are_named(options, field):
    with pytest.raises(ValueError, match=field):
        DTransformerConfig(**options)


def test_layer_kinds_from_json_become_a_tuple_and_the_default_is_still_algorithm_10():
    cfg = DTransformerConfig(L=2, window=4, layer_kinds=["local", "global"])
    assert cfg.layer_kinds == ("local", "global")
    plain = DTransformerConfig()
    assert not plain.uses_modern()
    assert (plain.layer_kinds, plain.attn_softcap, plain.logit_softcap, plain.d_score) == (None,) * 4
    assert type(DTransformer(plain).unembed).__name__ == "Unembedding"


@pytest.mark.parametrize("options", [
    dict(H_kv=2, positions="rope", window=3, attn_softcap=2.0, d_score=6),
    dict(H_kv=1, positions="rope", qk_norm=True, window=4, attn_softcap=0.5),
    dict(positions="alibi", attn_softcap=1.5),
    dict(H_kv=2, positions="rope", d_score=3.5),
])
def test_batched_attention_equals_algorithm_19(options):
    "The reference form, with line 10 (soft-capping) and the score scale d_s, in float64."
    g = torch.Generator().manual_seed(0)
    cfg = DTransformerConfig(d_e=16, H=4, eps=1e-6, **options)
    att = Attention(cfg).double()
    with torch.no_grad():
        for p in att.parameters():
            p.normal_(generator=g)
    X = torch.randn(9, 16, generator=g, dtype=torch.float64)
    theta = att.rotary.theta if att.rotary is not None else None
    want = gq_attention_ref(X.T, gqa_params(att), torch.ones(9, 9).triu().bool(), theta=theta,
                            d_r=att.d, window=att.window, slopes=att.slopes, eps=1e-6,
                            d_s=cfg.d_score, cap=cfg.attn_softcap)
    if theta is not None:  # exact angles for a float64 comparison
        att.rotary = Rotary(att.d, theta, torch.float64)
    assert (att(X[None])[0] - want.T).abs().max() < 1e-10
    if cfg.attn_softcap is not None:  # the cap matters here: without it the output differs
        uncapped = gq_attention_ref(X.T, gqa_params(att), torch.ones(9, 9).triu().bool(),
                                    theta=theta, d_r=att.d, window=att.window, slopes=att.slopes,
                                    eps=1e-6, d_s=cfg.d_score)
        assert (uncapped - want).abs().max() > 1e-3


CACHED = {
    "kinds_softcap": dict(H_kv=2, positions="rope", window=3, layer_kinds=("local", "global"),
                          rope_local_base=100.0, attn_softcap=2.0, logit_softcap=3.0, d_score=5),
    "kinds_global_first": dict(positions="rope", window=2, layer_kinds=("global", "local")),
    "softcap_alibi": dict(positions="alibi", attn_softcap=1.0, bias=False),
    "gemma3_like": dict(GEMMA, qk_norm=True, window=3, layer_kinds=("local", "global"),
                        rope_local_base=10.0, rope_base=1e4, logit_softcap=2.0),
}


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("float32_softmax", [False, True])
def test_the_cache_gives_the_logits_of_the_whole_sequence(name, float32_softmax):
    "Token by token with the cache (after a 5-token prompt), as in one pass, on a padded batch."
    torch.manual_seed(0)
    options = {"N_V": 50, "l_max": 32, "d_e": 32, "H": 4, "L": 2, **CACHED[name]}
    model = DTransformer(DTransformerConfig(**options)).double().eval()
    if float32_softmax:
        for m in model.modules():
            if isinstance(m, Attention):
                m.softmax_dtype = torch.float32
    ids, padding = padded_batch(11)
    ids = ids % 50
    positions = (~padding).long().cumsum(1).clamp(min=1) - 1
    with torch.no_grad():
        whole = model(ids, x_padding=padding, positions=positions)
        cache = KVCache(model.cfg.L, 32)
        steps = [model(ids[:, :5], x_padding=padding[:, :5], cache=cache, positions=positions[:, :5])]
        for t in range(5, 11):
            steps.append(model(ids[:, t:t + 1], x_padding=padding[:, :t + 1], cache=cache,
                               positions=positions[:, t:t + 1]))
    stepwise = torch.cat(steps, dim=1)
    assert (stepwise - whole)[~padding].abs().max() < (1e-6 if float32_softmax else 1e-10)
    if model.cfg.logit_softcap is not None:
        assert whole.abs().max() <= model.cfg.logit_softcap


def test_the_cache_caps_only_the_local_layers():
    cfg = DTransformerConfig(N_V=50, l_max=32, d_e=32, H=4, H_kv=2, L=4, positions="rope", window=4,
                             layer_kinds=("local", "local", "global", "local"))
    cache = KVCache(4, 32)
    with torch.no_grad():
        model = DTransformer(cfg)
        model(torch.randint(0, 50, (2, 12)), cache=cache)
        for _ in range(6):
            model(torch.randint(0, 50, (2, 1)), cache=cache)
    held = [c.k.shape[2] if c.k.shape[2] < 32 else c.length for c, _ in cache.layers]
    assert held == [3, 3, 18, 3]
    assert [c.length for c, _ in cache.layers] == [18] * 4
