"""Chapter 6 interop: our classes hold GPT-2, BERT and torch.nn.Transformer exactly (models built from configs)."""
import pytest
import torch
from torch import nn

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, ETransformer, ETransformerConfig,
)
from transformer_nb.interop import (
    from_bert, from_gpt2, from_hf, gpt2_links, greedy, load_links, load_torch_transformer, to_bert, to_gpt2, to_hf,
    to_torch_transformer, torch_transformer_config,
)
from transformer_nb.tokenization import random_padded

transformers = pytest.importorskip("transformers")
ATOL = 1e-5


padded = random_padded


def hf_gpt2(tied=True, activation="gelu_new", seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=101, n_positions=40, n_embd=64, n_layer=3, n_head=4,
                                  activation_function=activation, tie_word_embeddings=tied,
                                  bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    if not tied:  # make W_u visibly different from W_e
        with torch.no_grad():
            model.lm_head.weight.normal_(0, 0.02)
    return model


@pytest.mark.parametrize("tied,activation", [(True, "gelu_new"), (False, "gelu_new"), (True, "gelu")])
def test_gpt2_into_dtransformer(tied, activation):
    hf = hf_gpt2(tied, activation)
    ours = from_gpt2(hf).eval()
    x = torch.randint(0, 101, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < ATOL
        assert torch.equal(greedy(ours, x[:, :5], 20), greedy(lambda t: hf(t).logits, x[:, :5], 20))


def test_gpt2_with_left_padding_matches_hugging_face_attention_mask():
    hf = hf_gpt2()
    ours = from_gpt2(hf).eval()
    x, pad = padded([9, 5], 101, seed=2)
    x, pad = x.flip(1), pad.flip(1)  # left padding: real tokens at the end
    position_ids = (~pad).long().cumsum(-1).clamp(min=1) - 1  # HF counts positions from the first real token
    with torch.no_grad():
        theirs = hf(x, attention_mask=(~pad).long(), position_ids=position_ids).logits
        # our positions start at the first column; compare each sequence run alone instead
        for b, n in enumerate([9, 5]):
            alone = ours(x[b:b + 1, -n:])[0]
            assert (alone - theirs[b, -n:]).abs().max() < ATOL


def test_dtransformer_into_gpt2():
    torch.manual_seed(3)
    for tied in (True, False):
        ours = DTransformer(DTransformerConfig(N_V=77, l_max=24, d_e=32, H=4, L=2, activation="gelu_tanh",
                                               tie_embeddings=tied)).eval()
        hf = to_gpt2(ours)
        x = torch.randint(0, 77, (2, 24))
        with torch.no_grad():
            assert (ours(x) - hf(x).logits).abs().max() < ATOL


def test_gpt2_round_trip_keeps_every_weight():
    hf = hf_gpt2(tied=False)
    back = to_gpt2(from_gpt2(hf))
    theirs, again = hf.state_dict(), back.state_dict()
    for name, t in theirs.items():
        assert torch.equal(t, again[name]), name


def hf_bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=89, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=96, max_position_embeddings=32)
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # give the token type and the output bias non-trivial values
        model.bert.embeddings.token_type_embeddings.weight.normal_(0, 0.5)
        model.cls.predictions.bias.normal_(0, 0.5)
    return model


def test_bert_into_etransformer_with_padding():
    hf = hf_bert()
    ours = from_bert(hf).eval()
    x, pad = padded([12, 7, 3], 89, seed=4)
    with torch.no_grad():
        theirs = hf(x, attention_mask=(~pad).long()).logits
        assert (ours(x, x_padding=pad) - theirs)[~pad].abs().max() < ATOL


def test_etransformer_into_bert():
    torch.manual_seed(5)
    ours = ETransformer(ETransformerConfig(N_V=60, l_max=20, d_e=32, H=4, L=2, embed_norm=True, eps=1e-12,
                                           tie_embeddings=True, unembed_bias=True)).eval()
    with torch.no_grad():
        ours.unembed.W_u.bias.normal_()
    hf = to_bert(ours)
    x = torch.randint(0, 60, (2, 20))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < ATOL


@pytest.mark.parametrize("norm_first", [False, True])
def test_torch_transformer_both_directions(norm_first):
    torch.manual_seed(6)
    tf = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=48,
                        dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ours = load_torch_transformer(EDTransformer(torch_transformer_config(tf, N_V=40, l_max=16)), tf).eval()
    assert ours.cfg.norm == ("pre" if norm_first else "post") and ours.cfg.final_norm
    z, z_pad = padded([11, 6], 40, seed=7)
    x, x_pad = padded([5, 9], 40, seed=8)
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)  # True = not allowed
    with torch.no_grad():
        theirs = ours.unembed(tf(ours.embed(z), ours.embed(x), tgt_mask=causal, tgt_is_causal=True,
                                 src_key_padding_mask=z_pad, tgt_key_padding_mask=x_pad,
                                 memory_key_padding_mask=z_pad))
        mine = ours(z, x, z_padding=z_pad, x_padding=x_pad)
        assert (mine - theirs)[~x_pad].abs().max() < ATOL
        back = to_torch_transformer(ours)
        again = ours.unembed(back(ours.embed(z), ours.embed(x), tgt_mask=causal, tgt_is_causal=True))
        assert (ours(z, x) - again).abs().max() < ATOL


def test_mismatched_shapes_are_reported():
    hf = hf_gpt2()
    ours = DTransformer(DTransformerConfig(N_V=101, l_max=40, d_e=32, H=4, L=3, activation="gelu_tanh",
                                           tie_embeddings=True))
    with pytest.raises(ValueError, match="configs do not match"):
        load_links(ours, hf.state_dict(), gpt2_links(ours.cfg))


def test_models_that_cannot_be_expressed_are_refused():
    with pytest.raises(ValueError, match="GPT-2 cannot represent norm='post'"):
        to_gpt2(DTransformer(DTransformerConfig(N_V=10, l_max=8, d_e=8, H=2, L=1, norm="post")))
    with pytest.raises(ValueError, match="BERT cannot represent embed_norm=False"):
        to_bert(ETransformer(ETransformerConfig(N_V=10, l_max=8, d_e=8, H=2, L=1)))


def test_from_hf_and_to_hf_dispatch_on_the_model_class():
    hf = hf_gpt2()
    ours = from_hf(hf)
    assert type(ours) is DTransformer and type(to_hf(ours)).__name__ == "GPT2LMHeadModel"
    bert = from_hf(hf_bert())
    assert type(bert) is ETransformer and type(to_hf(bert)).__name__ == "BertForMaskedLM"
    tf = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                        dropout=0.0, batch_first=True)
    ed = from_hf(tf, N_V=20, l_max=8)
    assert type(ed) is EDTransformer and type(to_hf(ed)) is nn.Transformer
    with pytest.raises(TypeError, match="from_hf knows"):
        from_hf(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="to_hf knows"):
        to_hf(nn.Linear(2, 2))


# --- conversions are exact or refuse (issue: no conversion is silently wrong) ---------------------------------

def hf_bert_with_biases(tied, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=24, tie_word_embeddings=tied)
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # visible biases, and an unused cls.predictions.bias that differs when untied
        model.cls.predictions.decoder.bias.normal_(0, 1.0)
        if not tied:
            model.cls.predictions.bias.normal_(0, 1.0)
            model.cls.predictions.decoder.weight.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_bert_tied_and_untied_into_etransformer_and_back(tied):
    hf = hf_bert_with_biases(tied)
    ours = from_bert(hf).eval()
    x = torch.randint(0, 53, (2, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < ATOL
        back = to_bert(ours)
        assert back.config.tie_word_embeddings == tied
        assert (back(x).logits - hf(x).logits).abs().max() < ATOL


@pytest.mark.parametrize("tied", [True, False])
def test_etransformer_with_random_bias_into_bert(tied):
    torch.manual_seed(5)
    ours = ETransformer(ETransformerConfig(N_V=53, l_max=24, d_e=32, H=4, L=2, embed_norm=True,
                                           unembed_bias=True, tie_embeddings=tied)).eval()
    with torch.no_grad():
        ours.unembed.W_u.bias.normal_(0, 1.0)
    x = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert (to_bert(ours)(x).logits - ours(x)).abs().max() < ATOL


GPT2_SCALINGS = [dict(scale_attn_weights=False), dict(scale_attn_by_inverse_layer_idx=True),
                 dict(scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True),
                 dict(reorder_and_upcast_attn=True)]


@pytest.mark.parametrize("flags", GPT2_SCALINGS, ids=lambda f: ",".join(f))
def test_gpt2_attention_scaling_options_are_exact(flags):
    torch.manual_seed(7)
    cfg = transformers.GPT2Config(vocab_size=61, n_positions=24, n_embd=32, n_layer=3, n_head=4,
                                  bos_token_id=None, eos_token_id=None, attn_implementation="eager", **flags)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger weights, so that a missing scale would show
        for p in hf.parameters():
            p.mul_(4.0)
    ours = from_gpt2(hf).eval()
    x = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < 1e-4
        assert (to_gpt2(ours)(x).logits - hf(x).logits).abs().max() < 1e-4


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh"])
def test_bert_with_tanh_gelu_is_exact_both_ways(act):
    torch.manual_seed(9)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, hidden_act=act)).eval()
    ours = from_bert(hf).eval()
    assert ours.cfg.activation == "gelu_tanh"
    x = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() < ATOL
        assert (to_bert(ours)(x).logits - hf(x).logits).abs().max() < ATOL
