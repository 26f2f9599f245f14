"""Chapter 10, part 3: Marian and BART (built from small random configs, never downloaded) in
EDTransformer against Hugging Face: logits on a padded batch, greedy generation of 20 tokens,
beam search of width 4 against generate(num_beams=4) (tokens and scores), the round trip, and the
refusals, each naming its field."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformer_nb import seq2seq
from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig,
)
from transformer_nb.families import from_hf, to_hf
from transformer_nb.inference import ed_generate
from hf_helpers import assert_same_tensors, random_hf_model

N_V, PAD, START = 40, 1, 0
SIZES = dict(vocab_size=N_V, max_position_embeddings=32, d_model=24, encoder_layers=2,
             decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=32, decoder_ffn_dim=32, dropout=0.0, pad_token_id=PAD,
             eos_token_id=2, bos_token_id=None, decoder_start_token_id=START,
             forced_eos_token_id=None)
FAMILIES = {
    "marian": ("marian", dict(scale_embedding=True, activation_function="swish")),
    "marian_untied": ("marian", dict(tie_word_embeddings=False)),
    "bart": ("bart", {}),
    "bart_scaled_relu_untied": ("bart", dict(scale_embedding=True, activation_function="relu",
                                             tie_word_embeddings=False)),
}
CLASSES = {"marian": ("MarianConfig", "MarianMTModel"),
           "bart": ("BartConfig", "BartForConditionalGeneration")}


def hf_model(name: str, dtype=torch.float32, seed: int = 0, eos: int | None = None,
             eos_bias: float = 0.0, **fields):
    "A random model of the family, every parameter moved (Marian's fixed sinusoids apart)."
    kind, extra = FAMILIES[name]
    fixed = lambda n: kind == "marian" and "embed_positions" in n  # the sinusoids
    hf = random_hf_model(*CLASSES[kind], {**SIZES, **extra, **fields}, torch.float32, seed,
                         std=0.2, keep=fixed)
    with torch.no_grad():
        hf.final_logits_bias.normal_()
        for stack in (hf.model.encoder, hf.model.decoder):  # untied: one W_e all the same
            if hasattr(hf.model, "shared"):
                stack.embed_tokens.weight.copy_(hf.model.shared.weight)
        if eos is not None:  # the end token likelier, so that hypotheses end early
            hf.final_logits_bias[0, eos] = eos_bias
    return hf.to(dtype).eval()


def padded_contexts(seed: int = 0):
    "Four right-padded contexts of 7, 5, 3 and 7 tokens, and HF's attention_mask."
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(3, N_V, (4, 7), generator=g)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:], mask[2, 3:] = 0, 0
    return z.masked_fill(mask == 0, PAD), mask


def max_delta(name: str, dtype) -> float:
    hf = hf_model(name, dtype)
    ours = from_hf(hf)  # through Chapter 10's dispatch
    assert type(ours) is EDTransformer
    z, mask = padded_contexts()
    x = torch.randint(0, N_V, (4, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = hf(input_ids=z, attention_mask=mask, decoder_input_ids=x).logits
        mine = ours(z, x, z_padding=mask == 0)
    return (mine - theirs).abs().max().item()


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float32(name):
    assert max_delta(name, torch.float32) <= 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hugging_face_float64(name):
    assert max_delta(name, torch.float64) <= 1e-10


def hf_generate(hf, z, mask, eos: int, num_beams: int, **options):
    """generate with every option that could change the search set explicitly: the start,
    end and padding ids, no forced first/last token (forced_bos/eos_token_id None), no
    repetition rules (no_repeat_ngram_size=0, repetition_penalty=1), no minimum length,
    one sequence per context, 20 new tokens. Returns the rows after the start token, cut
    before the end token, and the sequence scores (beam search only)."""
    config = transformers.GenerationConfig(
        do_sample=False, num_beams=num_beams, max_new_tokens=20,
        decoder_start_token_id=START, eos_token_id=eos, pad_token_id=PAD,
        bos_token_id=None, forced_bos_token_id=None, forced_eos_token_id=None,
        no_repeat_ngram_size=0, repetition_penalty=1.0, min_length=0,
        num_return_sequences=1, output_scores=True, return_dict_in_generate=True,
        **options)
    out = hf.generate(input_ids=z, attention_mask=mask, generation_config=config)
    rows = [r[1:] for r in out.sequences.tolist()]
    rows = [r[:r.index(eos)] if eos in r else r for r in rows]
    return rows, getattr(out, "sequences_scores", None)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("eos, eos_bias", [(2, 0.0), (5, 3.0)])
def test_greedy_20_tokens_match_hugging_face_on_a_padded_batch(name, eos, eos_bias):
    hf = hf_model(name, eos=eos, eos_bias=eos_bias)
    ours = from_hf(hf)
    z, mask = padded_contexts()
    mine = ed_generate(ours, z, START, eos, 20, z_padding=mask == 0)
    assert mine == hf_generate(hf, z, mask, eos, 1)[0]


def beam_case(name, seed, eos, eos_bias, dtype=torch.float64, **options):
    "Our hf_beam_search and their generate(num_beams=4) on one padded batch."
    hf = hf_model(name, dtype, seed=seed, eos=eos, eos_bias=eos_bias)
    ours = from_hf(hf)
    z, mask = padded_contexts(seed)
    theirs, their_scores = hf_generate(hf, z, mask, eos, 4, **options)
    mine, scores = seq2seq.hf_beam_search(ours, z, z_padding=mask == 0, decoder_start=START,
                                          eos_token=eos, max_new_tokens=20, num_beams=4,
                                          **options)
    return mine, scores, theirs, their_scores


BEAM_CASES = [(seed, eos, bias) for seed in range(3)
              for eos, bias in ((2, 2.5), (7, 4.0), (7, 4.5))]


@pytest.mark.parametrize("name", ["marian", "bart"])
@pytest.mark.parametrize("seed, eos, eos_bias", BEAM_CASES)
@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_search_matches_hugging_face(name, seed, eos, eos_bias, early_stopping,
                                          length_penalty):
    mine, scores, theirs, their_scores = beam_case(
        name, seed, eos, eos_bias, early_stopping=early_stopping,
        length_penalty=length_penalty)
    assert mine == theirs
    assert torch.equal(scores, their_scores)  # float32 sums, bit for bit


@pytest.mark.parametrize("name", FAMILIES)
def test_beam_search_matches_hugging_face_float32(name):
    for seed, eos, eos_bias in BEAM_CASES[:2]:
        mine, scores, theirs, their_scores = beam_case(name, seed, eos, eos_bias,
                                                       dtype=torch.float32)
        assert mine == theirs
        assert (scores - their_scores).abs().max() <= 1e-5


def test_beam_cases_end_at_different_steps():
    "The cases above are not trivial: hypotheses end early, late and not at all."
    lengths = set()
    for name in ("marian", "bart"):
        for seed, eos, eos_bias in BEAM_CASES:
            mine = beam_case(name, seed, eos, eos_bias)[0]
            lengths |= {len(r) for r in mine}
    assert 20 in lengths and len({n for n in lengths if 0 < n < 20}) >= 4, lengths


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_exact(name, dtype):
    hf = hf_model(name, dtype)
    back = to_hf(from_hf(hf))
    assert type(back) is type(hf)
    assert_same_tensors(hf, back)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_config_holds_the_model(name):
    """A fresh EDTransformer of the config, given the state dict, is the loaded model
    (Marian's sinusoids, rebuilt rather than saved, included)."""
    loaded = from_hf(hf_model(name, torch.float64))
    fresh = EDTransformer(loaded.cfg).to(torch.float64).eval()
    fresh.load_state_dict(loaded.state_dict())
    assert torch.equal(fresh.embed.pos.weight, loaded.embed.pos.weight)
    z, mask = padded_contexts()
    with torch.no_grad():
        assert torch.equal(fresh(z, z, z_padding=mask == 0), loaded(z, z, z_padding=mask == 0))


def test_default_config_is_still_algorithm_8():
    model = EDTransformer(EDTransformerConfig())
    assert model.dec_embed is None
    assert not any(k.startswith("dec_embed") for k in model.state_dict())
    assert model.embed.pos.weight.shape == (128, 64)


def test_wrong_class_is_a_type_error():
    with pytest.raises(TypeError, match="MarianMTModel"):
        seq2seq.from_marian(hf_model("bart"))
    with pytest.raises(TypeError, match="BartForConditionalGeneration"):
        seq2seq.from_bart(hf_model("marian"))
    base = transformers.MarianModel(transformers.MarianConfig(**SIZES))
    with pytest.raises(TypeError, match="MarianMTModel"):
        from_hf(base)
    with pytest.raises(TypeError, match="EDTransformer"):
        seq2seq.to_marian(DTransformer(DTransformerConfig()))


@pytest.mark.parametrize("name, field, value", [
    ("bart", "decoder_attention_heads", 2), ("bart", "decoder_ffn_dim", 48),
    ("marian", "activation_function", "gelu_new"),
    ("marian", "share_encoder_decoder_embeddings", False),
    ("marian", "decoder_vocab_size", N_V + 2)])
def test_unrepresentable_fields_are_named(name, field, value):
    with pytest.raises(ValueError, match=field):
        seq2seq.seq2seq_config(hf_model(name, **{field: value}).config)


@pytest.mark.parametrize("name", ["marian_untied", "bart_scaled_relu_untied"])
def test_two_token_embeddings_are_refused(name):
    hf = hf_model(name)
    with torch.no_grad():
        hf.model.decoder.embed_tokens.weight.add_(0.5)
    with pytest.raises(ValueError, match="model.decoder.embed_tokens.weight"):
        from_hf(hf)


def test_a_trained_marian_table_is_refused():
    hf = hf_model("marian")
    with torch.no_grad():
        hf.model.decoder.embed_positions.weight.add_(0.5)
    with pytest.raises(ValueError, match="model.decoder.embed_positions.weight"):
        from_hf(hf)


def test_configs_marian_and_bart_cannot_hold_are_named():
    bart = from_hf(hf_model("bart"))
    with pytest.raises(ValueError, match="not a marian"):
        seq2seq.to_marian(bart)
    fields = {**vars(bart.cfg), "embed_norm": False}
    with pytest.raises(ValueError, match="embed_norm"):
        to_hf(EDTransformer(EDTransformerConfig(**fields)))
    fields = {**vars(bart.cfg), "embed_scale": True}
    with pytest.raises(ValueError, match="embed_scale"):
        to_hf(EDTransformer(EDTransformerConfig(**fields)))


@pytest.mark.parametrize("fields, name", [
    (dict(decoder_positions=True), "decoder_positions"),
    (dict(position_offset=2, positions="sinusoidal"), "position_offset"),
    (dict(position_offset=-1), "position_offset"),
    (dict(embed_scale="exactly"), "embed_scale"),
    (dict(sinusoid_convention="halfs"), "sinusoid_convention")])
def test_new_options_are_checked(fields, name):
    with pytest.raises(ValueError, match=name):
        DTransformerConfig(**fields)


def test_beam_search_bad_inputs_are_named():
    ours = from_hf(hf_model("bart"))
    z, mask = padded_contexts()
    kw = dict(decoder_start=START, eos_token=2, max_new_tokens=20)
    for bad, name in ((dict(eos_token=N_V), "eos_token"), (dict(decoder_start=-1), "decoder_start"),
                      (dict(max_new_tokens=40), "max_new_tokens"),
                      (dict(early_stopping="sometimes"), "early_stopping"),
                      (dict(num_beams=0), "num_beams")):
        with pytest.raises(ValueError, match=name):
            seq2seq.hf_beam_search(ours, z, z_padding=mask == 0, **{**kw, **bad})
    with pytest.raises(ValueError, match="z_padding"):
        seq2seq.hf_beam_search(ours, z, z_padding=mask[:, :3] == 0, **kw)
    with pytest.raises(TypeError, match="EDTransformer"):
        seq2seq.hf_beam_search(DTransformer(DTransformerConfig()), z, **kw)
