"""Every public entry point fed the inputs a hostile (or hurried) user gives it: one table of bad inputs, each with the
exception type it must raise, a fragment its message must contain, and the rule that the error is raised by this
package (the traceback's last frame is in transformer_nb/), never deep inside torch or Python. A second table lists
inputs at the edge that must succeed with the right result (a tiny temperature is greedy decoding)."""
import atexit
import json
import math
import os
import pickle
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_nb.architectures import (
    DTransformer, DTransformerConfig, EDTransformer, EDTransformerConfig, ETransformer, ETransformerConfig,
    SequenceClassifier,
)
from transformer_nb.checkpoint import read_checkpoint
from transformer_nb.components import (
    LayerNorm, MultiHeadAttention, PositionalEmbedding, TokenEmbedding, Unembedding, check_token_ids,
)
from transformer_nb.inference import (
    beam_search, cross_attention, ed_generate, generate, sampling_probs, temperature_ref,
)
from transformer_nb.interop import (
    from_bert, from_gpt2, from_hf, to_bert, to_gpt2, to_hf, to_torch_transformer, torch_transformer_config,
)
from transformer_nb.tasks import BatchSampler
from transformer_nb.tokenization import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, pad
from transformer_nb.training import (
    ClassBatches, LMBatches, MLMBatches, PairBatches, TrainConfig, Trainer, classification_loss, load_model,
    mlm_loss, next_token_loss, seq2seq_loss,
)

transformers = pytest.importorskip("transformers")
NAN = float("nan")

# ------------------------------------------------------------------------------------------------ tiny fixtures
torch.manual_seed(0)
D = DTransformer(DTransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=1)).eval()
E = ETransformer(ETransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=1)).eval()
ED = EDTransformer(EDTransformerConfig(N_V=12, l_max=10, d_e=8, H=2, L_enc=1, L_dec=1)).eval()
CLS = SequenceClassifier(ETransformer(ETransformerConfig(N_V=11, l_max=8, d_e=8, H=2, L=1)), 3).eval()
MHA = MultiHeadAttention(8, 2)
CROSS = MultiHeadAttention(8, 2, cross=True)
EMB = TokenEmbedding(11, 8)
POS = PositionalEmbedding(8, 8)
LN = LayerNorm(8)
UNEMB = Unembedding(8, 11)
X = torch.randn(1, 3, 8)
IDS = torch.tensor([[1, 2, 3]])
STREAM = torch.arange(20) % 9
TOK = CharTokenizer("abc")
BOS, EOS = 10, 11  # ED's last two ids


def hf_gpt2(**kw):
    cfg = dict(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=None,
               eos_token_id=None) | kw
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()


def hf_bert(cls="BertForMaskedLM", **kw):
    cfg = dict(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
               max_position_embeddings=8) | kw
    return getattr(transformers, cls)(transformers.BertConfig(**cfg)).eval()


def d_cfg(**kw):
    return DTransformer(DTransformerConfig(**(dict(N_V=11, l_max=8, d_e=8, H=2, L=1) | kw)))


def e_cfg(**kw):
    return ETransformer(ETransformerConfig(**(dict(N_V=11, l_max=8, d_e=8, H=2, L=1, embed_norm=True,
                                                   unembed_bias=True) | kw)))


def ed_cfg(**kw):
    return EDTransformer(EDTransformerConfig(**(dict(N_V=12, l_max=10, d_e=8, H=2, L_enc=1, L_dec=1,
                                                     final_norm=True) | kw)))


def tiny_tf(**kw):
    args = dict(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                dropout=0.0, batch_first=True) | kw
    return nn.Transformer(**args)


def trainer(model=D, loss=next_token_loss, batches=None, cfg=None, **kw):
    cfg = cfg if cfg is not None else TrainConfig(max_steps=2, warmup_steps=0, progress=False, device="cpu")
    return Trainer(model, loss, batches or LMBatches(STREAM, 2, 4), cfg, **kw)


class FixedBatches(BatchSampler):
    "Always the same batch (a hand-made one, as a user's own sampler might give)."

    def __init__(self, batch):
        super().__init__(1)
        self.batch = batch

    def draw(self, generator):
        return self.batch


# files, written once into a folder removed at exit
FOLDER = Path(tempfile.mkdtemp(prefix="hostile_"))
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)


class Foreign:
    "A class a safe load must not unpickle."


def _write_files():
    f = FOLDER
    (f / "empty.pt").touch()
    (f / "random.pt").write_bytes(bytes(range(256)) * 3)
    (f / "config.json").write_text(json.dumps({"N_V": 11, "d_e": 8}))
    (f / "plain.pkl").write_bytes(pickle.dumps({"model": 1}))
    torch.save({"model": Foreign()}, f / "foreign.pt")
    torch.save({"weights": torch.ones(2)}, f / "other_format.pt")
    (f / "a_folder").mkdir()
    good = trainer()
    good.save(f / "d.pt")
    whole = (f / "d.pt").read_bytes()
    (f / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    trainer(model=d_cfg(d_e=16)).save(f / "d_wide.pt")
    trainer(model=e_cfg(), loss=mlm_loss, batches=MLMBatches(STREAM, 2, 4, 0.3, 9)).save(f / "e.pt")
    ckpt = torch.load(f / "d.pt", weights_only=True)
    for name, change in {
        "version99": lambda c: c.update(version=99),
        "no_model": lambda c: c.pop("model"),
        "no_optimizer": lambda c: c.pop("optimizer"),
        "kind": lambda c: c.update(model_kind="GPT5"),
        "extra_field": lambda c: c["model_config"].update(rope=True),
        "float_size": lambda c: c["model_config"].update(d_e=8.0),
        "wrong_weights": lambda c: c.update(model=torch.load(f / "d_wide.pt", weights_only=True)["model"]),
        "bad_tokenizer": lambda c: c.update(tokenizer="{not json"),
        "other_optimizer": lambda c: c.update(optimizer=torch.optim.SGD(D.parameters(), lr=0.1).state_dict()),
    }.items():
        copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ckpt.items()}
        change(copy)
        torch.save(copy, f / f"{name}.pt")
    TOK.save(f / "char.json")
    BPETokenizer([]).save(f / "bpe.json")
    state = json.loads((f / "bpe.json").read_text())
    (f / "bpe_no_merges.json").write_text(json.dumps({k: v for k, v in state.items() if k != "merges"}))
    (f / "bpe_bad_merges.json").write_text(json.dumps(state | {"merges": [[1, 2, 3]]}))
    (f / "sp.json").write_text(json.dumps(state | {"kind": "sentencepiece"}))
    (f / "list.json").write_text("[1, 2, 3]")
    (f / "latin1.json").write_bytes(b"\xff\xfe\xfa not utf-8")


def path(name):
    if not (FOLDER / "d.pt").exists():
        _write_files()
    return FOLDER / name


# ------------------------------------------------------------------------------------------------ the table
# (entry point, case, call, expected exception type, fragment of its message)
VE, TE, FE = ValueError, TypeError, FileNotFoundError
ROWS = [
    # components ------------------------------------------------------------------------------------------------
    ("components", "TokenEmbedding float N_V", lambda: TokenEmbedding(16.0, 8), TE, "N_V must be an integer"),
    ("components", "TokenEmbedding d_e 0", lambda: TokenEmbedding(11, 0), VE, "d_e must be a positive integer"),
    ("components", "embedding of a list", lambda: EMB([[1, 2]]), TE, "x must be a tensor of token ids"),
    ("components", "embedding of floats", lambda: EMB(torch.tensor([[1.0, 2.0]])), VE, "integer token ids"),
    ("components", "embedding of uint8", lambda: EMB(torch.tensor([[1, 2]], dtype=torch.uint8)), VE,
     "integer token ids"),
    ("components", "embedding of bools", lambda: EMB(torch.tensor([[True]])), VE, "integer token ids"),
    ("components", "embedding id N_V", lambda: EMB(torch.tensor([[11]])), VE, "token id 11"),
    ("components", "embedding id -1", lambda: EMB(torch.tensor([[-1]])), VE, "token id -1"),
    ("components", "check_token_ids of a list", lambda: check_token_ids([1, 2], 11), TE, "must be a tensor"),
    ("components", "PositionalEmbedding float l_max", lambda: PositionalEmbedding(8.0, 8), TE,
     "l_max must be an integer"),
    ("components", "PositionalEmbedding kind", lambda: PositionalEmbedding(8, 8, kind="rope"), VE,
     "kind must be 'learned' or 'sinusoidal'"),
    ("components", "sinusoidal odd d_e", lambda: PositionalEmbedding(8, 5, kind="sinusoidal"), VE, "even d_e"),
    ("components", "positions beyond l_max", lambda: POS(9), VE, "x has 9 positions"),
    ("components", "positions T float", lambda: POS(2.5), TE, "T must be an integer"),
    ("components", "positions negative offset", lambda: POS(2, offset=-1), VE, "offset must be at least 0"),
    ("components", "MHA H not dividing", lambda: MultiHeadAttention(8, 3), VE, "not divisible"),
    ("components", "MHA H 0", lambda: MultiHeadAttention(8, 0), VE, "H must be a positive integer"),
    ("components", "MHA float d_x", lambda: MultiHeadAttention(8.0, 2), TE, "d_x must be an integer"),
    ("components", "MHA self d_z", lambda: MultiHeadAttention(8, 2, d_z=4), VE, "self-attention needs d_z"),
    ("components", "MHA of a list", lambda: MHA(X.tolist()), TE, "x (batch, l_x, d_x) must be a tensor"),
    ("components", "MHA wrong width", lambda: MHA(torch.randn(1, 3, 5)), VE, "x (batch, l_x, d_x) must have"),
    ("components", "MHA 2-D input", lambda: MHA(torch.randn(3, 8)), VE, "must have shape (*, *, 8)"),
    ("components", "MHA integer x", lambda: MHA(torch.ones(1, 3, 8, dtype=torch.long)), VE, "real vectors"),
    ("components", "MHA float64 x", lambda: MHA(X.double()), VE, "dtype torch.float64 but the weights"),
    ("components", "MHA int padding", lambda: MHA(X, z_padding=torch.tensor([[1, 1, 0]])), VE, "1 = keep"),
    ("components", "MHA float padding", lambda: MHA(X, z_padding=torch.zeros(1, 3)), VE, "True = padding"),
    ("components", "MHA padding batch", lambda: MHA(X, z_padding=torch.zeros(2, 3, dtype=torch.bool)), VE,
     "z_padding"),
    ("components", "MHA padding list", lambda: MHA(X, z_padding=[[False] * 3]), TE, "z_padding must be a bool"),
    ("components", "MHA int mask", lambda: MHA(X, mask=torch.ones(3, 3, dtype=torch.long)), VE,
     "mask must be a bool tensor"),
    ("components", "MHA mask shape", lambda: MHA(X, mask=torch.ones(2, 3, dtype=torch.bool)), VE,
     "mask must have shape"),
    ("components", "self-attention given z", lambda: MHA(X, X), VE, "self-attention layer"),
    ("components", "cross-attention without z", lambda: CROSS(X), VE, "needs a context z"),
    ("components", "cross batch sizes", lambda: CROSS(X, torch.randn(2, 4, 8)), VE, "different batch sizes"),
    ("components", "LayerNorm eps NaN", lambda: LayerNorm(8, eps=NAN), VE, "eps must be >= 0"),
    ("components", "LayerNorm eps negative", lambda: LayerNorm(8, eps=-1e-5), VE, "eps must be >= 0"),
    ("components", "LayerNorm float d_e", lambda: LayerNorm(8.0), TE, "d_e must be an integer"),
    ("components", "LayerNorm wrong width", lambda: LN(torch.randn(2, 5)), VE, "input of LayerNorm(d_e=8)"),
    ("components", "LayerNorm integers", lambda: LN(torch.ones(2, 8, dtype=torch.long)), VE, "real vectors"),
    ("components", "LayerNorm list", lambda: LN([[0.0] * 8]), TE, "must be a tensor"),
    ("components", "Unembedding wrong width", lambda: UNEMB(torch.randn(2, 4)), VE, "input of Unembedding"),
    ("components", "Unembedding float64", lambda: UNEMB(torch.randn(2, 8).double()), VE, "dtype torch.float64"),
    ("components", "Unembedding float N_V", lambda: Unembedding(8, 11.0), TE, "N_V must be an integer"),
    # the three models: configs --------------------------------------------------------------------------------
    ("models", "d_e float", lambda: DTransformerConfig(d_e=16.0), TE, "d_e must be an integer"),
    ("models", "N_V string", lambda: DTransformerConfig(N_V="64"), TE, "N_V must be an integer"),
    ("models", "l_max bool", lambda: DTransformerConfig(l_max=True), TE, "l_max must be an integer"),
    ("models", "L zero", lambda: DTransformerConfig(L=0), VE, "L must be a positive integer"),
    ("models", "H not dividing", lambda: DTransformerConfig(H=3), VE, "not divisible"),
    ("models", "eps NaN", lambda: DTransformerConfig(eps=NAN), VE, "eps must be a number"),
    ("models", "eps negative", lambda: DTransformerConfig(eps=-1e-5), VE, "eps must be a number"),
    ("models", "eps string", lambda: DTransformerConfig(eps="1e-5"), VE, "eps must be a number"),
    ("models", "dropout 1", lambda: DTransformerConfig(dropout=1.0), VE, "dropout must be a number in [0, 1)"),
    ("models", "dropout NaN", lambda: DTransformerConfig(dropout=NAN), VE, "dropout must be"),
    ("models", "norm unknown", lambda: DTransformerConfig(norm="sandwich"), VE, "norm must be one of"),
    ("models", "activation unknown", lambda: DTransformerConfig(activation="swish"), VE, "activation must be"),
    ("models", "positions unknown", lambda: DTransformerConfig(positions="relative"), VE, "positions must be"),
    ("models", "d_f zero", lambda: ETransformerConfig(d_f=0), VE, "d_f must be a positive integer"),
    ("models", "L_enc float", lambda: EDTransformerConfig(L_enc=2.0), TE, "L_enc must be an integer"),
    ("models", "tied with d_f != d_e", lambda: e_cfg(d_f=16, tie_embeddings=True), VE, "tie_embeddings needs"),
    ("models", "one class", lambda: SequenceClassifier(E, 1), VE, "n_classes must be at least 2"),
    ("models", "float classes", lambda: SequenceClassifier(E, 2.0), TE, "n_classes must be an integer"),
    # the three models: forward
    ("models", "GPT of a list", lambda: D([[1, 2, 3]]), TE, "x (batch, length) of token ids must be a tensor"),
    ("models", "GPT of 1-D ids", lambda: D(torch.tensor([1, 2, 3])), VE, "must have shape (*, *)"),
    ("models", "GPT of floats", lambda: D(IDS.float()), VE, "x must hold integer token ids"),
    ("models", "GPT of uint8", lambda: D(IDS.to(torch.uint8)), VE, "x must hold integer token ids"),
    ("models", "GPT id N_V", lambda: D(torch.tensor([[1, 11]])), VE, "token id 11"),
    ("models", "GPT too long", lambda: D(torch.ones(1, 9, dtype=torch.long)), VE, "x has 9 positions"),
    ("models", "GPT empty", lambda: D(torch.ones(1, 0, dtype=torch.long)), VE, "empty"),
    ("models", "GPT int mask (HF)", lambda: D(IDS, x_padding=torch.ones(1, 3, dtype=torch.long)), VE,
     "attention_mask is the opposite (1 = keep)"),
    ("models", "GPT float mask", lambda: D(IDS, x_padding=torch.zeros(1, 3)), VE, "True = padding"),
    ("models", "GPT mask batch", lambda: D(IDS, x_padding=torch.zeros(2, 3, dtype=torch.bool)), VE,
     "x_padding (1, 3) must have shape"),
    ("models", "GPT mask list", lambda: D(IDS, x_padding=[[False] * 3]), TE, "x_padding must be a bool tensor"),
    ("models", "GPT float positions", lambda: D(IDS, positions=torch.tensor([0.0, 1.0, 2.0])), VE,
     "positions must hold integer"),
    ("models", "GPT list positions", lambda: D(IDS, positions=[0, 1, 2]), TE, "positions must be a tensor"),
    ("models", "GPT positions beyond", lambda: D(IDS, positions=torch.tensor([0, 1, 9])), VE,
     "positions has 10 positions"),
    ("models", "GPT negative positions", lambda: D(IDS, positions=torch.tensor([-1, 0, 1])), VE,
     "positions contains -1"),
    ("models", "BERT of a list", lambda: E([[1, 2]]), TE, "must be a tensor"),
    ("models", "BERT of floats", lambda: E(IDS.double()), VE, "integer token ids"),
    ("models", "BERT int mask", lambda: E(IDS, x_padding=torch.tensor([[0, 0, 1]])), VE, "1 = keep"),
    ("models", "BERT too long", lambda: E(torch.ones(1, 9, dtype=torch.long)), VE, "x has 9 positions"),
    ("models", "BERT mask batch", lambda: E(IDS, x_padding=torch.zeros(1, 4, dtype=torch.bool)), VE,
     "x_padding"),
    ("models", "enc-dec z too long", lambda: ED(torch.ones(1, 11, dtype=torch.long), IDS), VE,
     "z has 11 positions"),
    ("models", "enc-dec x too long", lambda: ED(IDS, torch.ones(1, 11, dtype=torch.long)), VE,
     "x has 11 positions"),
    ("models", "enc-dec float z", lambda: ED(IDS.float(), IDS), VE, "z must hold integer token ids"),
    ("models", "enc-dec z id", lambda: ED(torch.tensor([[12]]), IDS), VE, "z contains token id 12"),
    ("models", "enc-dec list z", lambda: ED([[1, 2]], IDS), TE, "z (batch, length) of token ids"),
    ("models", "enc-dec int z_padding", lambda: ED(IDS, IDS, z_padding=torch.zeros(1, 3, dtype=torch.int)), VE,
     "z_padding must be a bool"),
    ("models", "enc-dec int x_padding", lambda: ED(IDS, IDS, x_padding=torch.zeros(1, 3)), VE,
     "x_padding must be a bool"),
    ("models", "enc-dec batch sizes", lambda: ED(IDS.expand(2, 3), IDS), VE, "different batch sizes"),
    ("models", "enc-dec z_padding batch", lambda: ED(IDS, IDS, z_padding=torch.zeros(2, 3, dtype=torch.bool)),
     VE, "z_padding"),
    ("models", "classifier all-padding row", lambda: CLS(IDS, x_padding=torch.ones(1, 3, dtype=torch.bool)), VE,
     "all padding"),
    # converters --------------------------------------------------------------------------------------------------
    ("converters", "from_gpt2 of GPT2Model", lambda: from_gpt2(transformers.GPT2Model(hf_gpt2().config)), TE,
     "needs a Hugging Face GPT2LMHeadModel"),
    ("converters", "from_gpt2 of BERT", lambda: from_gpt2(hf_bert()), TE, "got a BertForMaskedLM"),
    ("converters", "from_bert of BertModel", lambda: from_bert(hf_bert("BertModel")), TE,
     "needs a Hugging Face BertForMaskedLM"),
    ("converters", "from_bert of GPT-2", lambda: from_bert(hf_gpt2()), TE, "got a GPT2LMHeadModel"),
    ("converters", "from_hf of GPT2Model", lambda: from_hf(transformers.GPT2Model(hf_gpt2().config)), TE,
     "GPT2LMHeadModel"),
    ("converters", "from_hf of BertModel", lambda: from_hf(hf_bert("BertModel")), TE, "BertForMaskedLM"),
    ("converters", "from_hf of a string", lambda: from_hf("gpt2"), TE, "from_hf knows"),
    ("converters", "from_hf of a Linear", lambda: from_hf(nn.Linear(2, 2)), TE, "from_hf knows"),
    ("converters", "from_hf nn.Transformer bare", lambda: from_hf(tiny_tf()), TE, "needs exactly N_V= and l_max="),
    ("converters", "from_hf GPT-2 with N_V", lambda: from_hf(hf_gpt2(), N_V=3), TE, "only for an nn.Transformer"),
    ("converters", "BERT is_decoder", lambda: from_bert(hf_bert(is_decoder=True)), VE, "is_decoder=True"),
    ("converters", "BERT relative positions", lambda: from_bert(hf_bert(position_embedding_type="relative_key")),
     VE, "position_embedding_type='relative_key'"),
    ("converters", "BERT silu", lambda: from_bert(hf_bert(hidden_act="silu")), VE, "hidden_act='silu'"),
    ("converters", "GPT-2 silu", lambda: from_gpt2(hf_gpt2(activation_function="silu")), VE,
     "activation_function='silu'"),
    ("converters", "GPT-2 cross-attention", lambda: from_gpt2(hf_gpt2(add_cross_attention=True)), VE,
     "add_cross_attention=True"),
    ("converters", "GPT-2 fp16 upcast", lambda: from_gpt2(hf_gpt2(reorder_and_upcast_attn=True).half()), VE,
     "reorder_and_upcast_attn=True"),
    ("converters", "to_gpt2 of BERT", lambda: to_gpt2(E), TE, "to_gpt2 needs a DTransformer"),
    ("converters", "to_gpt2 unembed_bias", lambda: to_gpt2(d_cfg(unembed_bias=True)), VE, "unembed_bias=True"),
    ("converters", "to_gpt2 post-LN", lambda: to_gpt2(d_cfg(norm="post")), VE, "norm='post'"),
    ("converters", "to_gpt2 sinusoidal", lambda: to_gpt2(d_cfg(positions="sinusoidal")), VE,
     "positions='sinusoidal'"),
    ("converters", "to_gpt2 no biases", lambda: to_gpt2(d_cfg(bias=False)), VE, "bias=False"),
    ("converters", "to_gpt2 embed_norm", lambda: to_gpt2(d_cfg(embed_norm=True)), VE, "embed_norm=True"),
    ("converters", "to_bert of GPT", lambda: to_bert(D), TE, "to_bert needs an ETransformer"),
    ("converters", "to_bert pre-LN", lambda: to_bert(e_cfg(norm="pre")), VE, "norm='pre'"),
    ("converters", "to_bert no unembed bias", lambda: to_bert(e_cfg(unembed_bias=False)), VE,
     "unembed_bias=False"),
    ("converters", "to_bert d_f", lambda: to_bert(e_cfg(d_f=16)), VE, "d_f=16"),
    ("converters", "to_bert no biases", lambda: to_bert(e_cfg(bias=False)), VE, "bias=False"),
    ("converters", "to_torch of GPT", lambda: to_torch_transformer(D), TE, "needs an EDTransformer"),
    ("converters", "to_torch peri", lambda: to_torch_transformer(ed_cfg(norm="peri")), VE, "norm='peri'"),
    ("converters", "to_torch resi", lambda: to_torch_transformer(ed_cfg(norm="resi")), VE, "norm='resi'"),
    ("converters", "to_torch deepnorm", lambda: to_torch_transformer(ed_cfg(norm="deepnorm")), VE,
     "norm='deepnorm'"),
    ("converters", "to_torch no final norm", lambda: to_torch_transformer(ed_cfg(final_norm=False)), VE,
     "final_norm=False"),
    ("converters", "to_torch gelu_tanh", lambda: to_torch_transformer(ed_cfg(activation="gelu_tanh")), VE,
     "activation='gelu_tanh'"),
    ("converters", "nn.Transformer silu", lambda: torch_transformer_config(tiny_tf(activation=F.silu), 12, 10),
     VE, "cannot convert activation="),
    ("converters", "nn.Transformer no bias", lambda: torch_transformer_config(tiny_tf(bias=False), 12, 10), VE,
     "bias=False"),
    ("converters", "torch config of a Linear", lambda: torch_transformer_config(nn.Linear(2, 2), 12, 10), TE,
     "need an nn.Transformer"),
    ("converters", "to_hf classifier", lambda: to_hf(CLS), TE, "to_hf knows"),
    ("converters", "to_hf string", lambda: to_hf("gpt2"), TE, "to_hf knows"),
    # generate -----------------------------------------------------------------------------------------------------
    ("generate", "BERT model", lambda: generate(E, [1, 2], 3), TE, "generate needs a DTransformer, not a ETransformer"),
    ("generate", "enc-dec model", lambda: generate(ED, [1, 2], 3), TE, "generate needs a DTransformer"),
    ("generate", "float ids", lambda: generate(D, [1.5, 2], 3), VE, "prompt must be ints, got 1.5"),
    ("generate", "float ids in rows", lambda: generate(D, [[1, 2.0]], 3), VE, "prompt must be ints"),
    ("generate", "float tensor", lambda: generate(D, IDS.float(), 3), VE, "integer token ids"),
    ("generate", "uint8 tensor", lambda: generate(D, IDS.to(torch.uint8), 3), VE, "integer token ids"),
    ("generate", "id N_V", lambda: generate(D, [1, 11], 3), VE, "outside the vocabulary"),
    ("generate", "an int", lambda: generate(D, 5, 3), TE, "prompts must be a list of ids"),
    ("generate", "a string", lambda: generate(D, "abc", 3), TE, "prompts must be a list of ids"),
    ("generate", "empty", lambda: generate(D, [], 3), VE, "empty prompt"),
    ("generate", "int mask (HF)", lambda: generate(D, IDS, 3, x_padding=torch.tensor([[0, 1, 1]])), VE,
     "1 = keep"),
    ("generate", "mask batch", lambda: generate(D, IDS, 3, x_padding=torch.zeros(2, 3, dtype=torch.bool)), VE,
     "x_padding"),
    ("generate", "mask with lists", lambda: generate(D, [[1, 2]], 3, x_padding=torch.zeros(1, 2, dtype=torch.bool)),
     TE, "x_padding only for a tensor"),
    ("generate", "right padding", lambda: generate(D, IDS, 3, x_padding=torch.tensor([[False, False, True]])), VE,
     "left-padded"),
    ("generate", "float count", lambda: generate(D, [1, 2], 2.5), TE, "max_new_tokens must be an integer"),
    ("generate", "negative count", lambda: generate(D, [1, 2], -1), VE, "max_new_tokens must be at least 0"),
    ("generate", "temperature 0", lambda: generate(D, [1, 2], 3, temperature=0), VE, "temperature must be > 0"),
    ("generate", "temperature NaN", lambda: generate(D, [1, 2], 3, temperature=NAN), VE, "temperature must be"),
    ("generate", "temperature str", lambda: generate(D, [1, 2], 3, temperature="hot"), VE, "temperature must be"),
    ("generate", "temperature negative", lambda: generate(D, [1, 2], 3, temperature=-1.0), VE, "temperature"),
    ("generate", "top_k 0", lambda: generate(D, [1, 2], 3, top_k=0), VE, "top_k must be a positive integer"),
    ("generate", "top_k float", lambda: generate(D, [1, 2], 3, top_k=2.5), TE, "top_k must be an integer"),
    ("generate", "top_k bool", lambda: generate(D, [1, 2], 3, top_k=True), TE, "top_k must be an integer"),
    ("generate", "top_p 0", lambda: generate(D, [1, 2], 3, top_p=0.0), VE, "top_p must be in (0, 1]"),
    ("generate", "top_p 1.5", lambda: generate(D, [1, 2], 3, top_p=1.5), VE, "top_p must be in (0, 1]"),
    ("generate", "top_p NaN", lambda: generate(D, [1, 2], 3, top_p=NAN), VE, "top_p must be in (0, 1]"),
    ("generate", "stop id N_V", lambda: generate(D, [1, 2], 3, stop_tokens=[11]), VE,
     "stop_tokens contains token id 11"),
    ("generate", "stop id float", lambda: generate(D, [1, 2], 3, stop_tokens=[1.5]), VE, "stop_tokens must be ints"),
    ("generate", "stop an int", lambda: generate(D, [1, 2], 3, stop_tokens=3), TE,
     "stop_tokens must be a sequence"),
    ("generate", "stop negative", lambda: generate(D, [1, 2], 3, stop_tokens=[-1]), VE, "stop_tokens contains"),
    ("generate", "keep 0", lambda: generate(D, [1, 2], 3, keep=0), VE, "keep must be a positive integer"),
    ("generate", "keep float", lambda: generate(D, [1, 2], 3, keep=2.5), TE, "keep must be an integer"),
    ("generate", "keep l_max", lambda: generate(D, [1, 2], 3, keep=8), VE, "keep must be between"),
    # ed_generate ----------------------------------------------------------------------------------------------------
    ("ed_generate", "GPT model", lambda: ed_generate(D, [1, 2], 1, 2, 5), TE, "ed_generate needs an EDTransformer"),
    ("ed_generate", "bos N_V", lambda: ed_generate(ED, [1, 2], 12, EOS, 5), VE, "bos_token contains token id 12"),
    ("ed_generate", "eos negative", lambda: ed_generate(ED, [1, 2], BOS, -1, 5), VE, "eos_token contains"),
    ("ed_generate", "bos float", lambda: ed_generate(ED, [1, 2], 10.0, EOS, 5), VE, "bos_token must be ints"),
    ("ed_generate", "max_len 0", lambda: ed_generate(ED, [1, 2], BOS, EOS, 0), VE, "max_len must be a positive"),
    ("ed_generate", "max_len float", lambda: ed_generate(ED, [1, 2], BOS, EOS, 2.5), TE, "max_len must be an integer"),
    ("ed_generate", "max_len l_max", lambda: ed_generate(ED, [1, 2], BOS, EOS, 10), VE, "max_len must be between"),
    ("ed_generate", "float z", lambda: ed_generate(ED, [1.5, 2], BOS, EOS, 5), VE, "z must be ints"),
    ("ed_generate", "z id N_V", lambda: ed_generate(ED, [[1, 12]], BOS, EOS, 5), VE, "outside the vocabulary"),
    ("ed_generate", "int z_padding", lambda: ed_generate(ED, IDS, BOS, EOS, 5, z_padding=torch.zeros(1, 3)), VE,
     "z_padding must be a bool tensor"),
    ("ed_generate", "z_padding batch", lambda: ed_generate(ED, IDS, BOS, EOS, 5,
                                                           z_padding=torch.zeros(2, 3, dtype=torch.bool)), VE,
     "z_padding"),
    ("ed_generate", "empty z", lambda: ed_generate(ED, [], BOS, EOS, 5), VE, "empty context"),
    ("ed_generate", "temperature 0", lambda: ed_generate(ED, [1], BOS, EOS, 5, greedy=False, temperature=0.0), VE,
     "temperature must be > 0"),
    ("ed_generate", "top_p 2", lambda: ed_generate(ED, [1], BOS, EOS, 5, top_p=2.0), VE, "top_p must be in"),
    # beam_search ------------------------------------------------------------------------------------------------------
    ("beam_search", "GPT model", lambda: beam_search(D, [1, 2], 1, 2, 5), TE, "beam_search needs an EDTransformer"),
    ("beam_search", "a batch of lists", lambda: beam_search(ED, [[1, 2], [3]], BOS, EOS, 5), VE, "one context z"),
    ("beam_search", "a 2-D tensor", lambda: beam_search(ED, IDS, BOS, EOS, 5), VE, "one context z"),
    ("beam_search", "beam_width 0", lambda: beam_search(ED, [1], BOS, EOS, 5, beam_width=0), VE,
     "beam_width must be a positive integer"),
    ("beam_search", "beam_width float", lambda: beam_search(ED, [1], BOS, EOS, 5, beam_width=2.5), TE,
     "beam_width must be an integer"),
    ("beam_search", "float z", lambda: beam_search(ED, [1.5], BOS, EOS, 5), VE, "z must be ints"),
    ("beam_search", "z id N_V", lambda: beam_search(ED, [12], BOS, EOS, 5), VE, "outside the vocabulary"),
    ("beam_search", "eos N_V", lambda: beam_search(ED, [1], BOS, 12, 5), VE, "eos_token contains token id 12"),
    ("beam_search", "max_len l_max", lambda: beam_search(ED, [1], BOS, EOS, 10), VE, "max_len must be between"),
    ("beam_search", "empty z", lambda: beam_search(ED, [], BOS, EOS, 5), VE, "empty context"),
    ("beam_search", "cross_attention of GPT", lambda: cross_attention(D, IDS, IDS), TE,
     "cross_attention needs an EDTransformer"),
    # tokenizers -------------------------------------------------------------------------------------------------------
    ("tokenizers", "encode bytes", lambda: TOK.encode(b"ab"), VE, "encode expects a str"),
    ("tokenizers", "encode int", lambda: TOK.encode(5), VE, "encode expects a str"),
    ("tokenizers", "decode float", lambda: TOK.decode([1.5]), VE, "token ids must be ints"),
    ("tokenizers", "decode id N_V", lambda: TOK.decode([99]), VE, "outside the vocabulary"),
    ("tokenizers", "decode 2-D", lambda: TOK.decode(torch.tensor([[1]])), VE, "1-D integer tensor"),
    ("tokenizers", "decode string", lambda: TOK.decode("abc"), VE, "not a string"),
    ("tokenizers", "decode int", lambda: TOK.decode(5), TE, "must be a sequence of token ids"),
    ("tokenizers", "alphabet of words", lambda: CharTokenizer(["ab"]), VE, "single characters"),
    ("tokenizers", "unknown policy", lambda: CharTokenizer("ab", unknown="skip"), VE, "unknown must be one of"),
    ("tokenizers", "word vocab tiny", lambda: WordTokenizer.train("a b", vocab_size=3), VE,
     "vocab_size must be at least"),
    ("tokenizers", "BPE vocab tiny", lambda: BPETokenizer.train("abc", 100), VE, "at least 259"),
    ("tokenizers", "BPE bad merge", lambda: BPETokenizer([(256, 1)]), VE, "merge 0"),
    ("tokenizers", "pad float id", lambda: pad([[1, 2.5]], 0), VE, "sequence 0 must be ints"),
    ("tokenizers", "pad negative id", lambda: TOK.pad([[1, -1]]), VE, "sequence 0 contains -1"),
    ("tokenizers", "pad float pad_id", lambda: pad([[1]], 1.5), VE, "pad_id must be an int"),
    ("tokenizers", "pad float length", lambda: pad([[1]], 0, length=2.5), VE, "length must be an int"),
    ("tokenizers", "pad side", lambda: pad([[1]], 0, side="middle"), VE, "side must be"),
    ("tokenizers", "pad nothing", lambda: pad([], 0), VE, "pad needs at least one"),
    ("tokenizers", "load missing", lambda: Tokenizer.load(path("missing.json")), FE, "no tokenizer file at"),
    ("tokenizers", "load folder", lambda: Tokenizer.load(path("a_folder")), FE, "no tokenizer file at"),
    ("tokenizers", "load empty", lambda: Tokenizer.load(path("empty.pt")), VE, "not JSON"),
    ("tokenizers", "load not UTF-8", lambda: Tokenizer.load(path("latin1.json")), VE, "not UTF-8"),
    ("tokenizers", "load a checkpoint", lambda: Tokenizer.load(path("d.pt")), VE, "is not a tokenizer file"),
    ("tokenizers", "load a JSON list", lambda: Tokenizer.load(path("list.json")), VE, "is not a tokenizer file"),
    ("tokenizers", "load other JSON", lambda: Tokenizer.load(path("config.json")), VE, "is not a tokenizer file"),
    ("tokenizers", "load no merges", lambda: Tokenizer.load(path("bpe_no_merges.json")), VE, "damaged 'bpe'"),
    ("tokenizers", "load bad merges", lambda: Tokenizer.load(path("bpe_bad_merges.json")), VE, "damaged 'bpe'"),
    ("tokenizers", "load unknown kind", lambda: Tokenizer.load(path("sp.json")), VE, "unknown tokenizer kind"),
    ("tokenizers", "load other kind", lambda: CharTokenizer.load(path("bpe.json")), VE, "not a 'char' one"),
    # samplers -------------------------------------------------------------------------------------------------------
    ("samplers", "LM float list", lambda: LMBatches([1.5, 2.0, 3.0], 2, 2), VE, "tokens must be ints"),
    ("samplers", "LM float tensor", lambda: LMBatches(STREAM.float(), 2, 2), VE, "tokens must hold integer"),
    ("samplers", "LM 2-D stream", lambda: LMBatches(STREAM.view(4, 5), 2, 2), VE, "1-D stream"),
    ("samplers", "LM negative id", lambda: LMBatches(STREAM - 1, 2, 2), VE, "tokens contains -1"),
    ("samplers", "LM a string", lambda: LMBatches("abc", 2, 2), VE, "not a string"),
    ("samplers", "LM float batch", lambda: LMBatches(STREAM, 2.5, 2), TE, "batch_size must be an integer"),
    ("samplers", "LM batch 0", lambda: LMBatches(STREAM, 0, 2), VE, "batch_size must be a positive"),
    ("samplers", "LM window too long", lambda: LMBatches(STREAM, 2, 20), VE, "does not fit"),
    ("samplers", "LM float length", lambda: LMBatches(STREAM, 2, 2.0), TE, "length must be an integer"),
    ("samplers", "LM float seed", lambda: LMBatches(STREAM, 2, 2, seed=1.5), TE, "seed must be an integer"),
    ("samplers", "MLM p_mask 0", lambda: MLMBatches(STREAM, 2, 4, 0.0, 9), VE, "p_mask must be in (0, 1)"),
    ("samplers", "MLM p_mask NaN", lambda: MLMBatches(STREAM, 2, 4, NAN, 9), VE, "p_mask must be in (0, 1)"),
    ("samplers", "MLM float mask token", lambda: MLMBatches(STREAM, 2, 4, 0.3, 1.5), VE, "mask_token must be ints"),
    ("samplers", "MLM window too long", lambda: MLMBatches(STREAM, 2, 50, 0.3, 9), VE, "does not fit"),
    ("samplers", "MLM float tokens", lambda: MLMBatches([0.5] * 9, 2, 4, 0.3, 9), VE, "tokens must be ints"),
    ("samplers", "pairs empty", lambda: PairBatches([], 2, 0), VE, "non-empty list"),
    ("samplers", "pairs x of one token", lambda: PairBatches([([1], [2])], 2, 0), VE, "x two"),
    ("samplers", "pairs empty z", lambda: PairBatches([([], [1, 2])], 2, 0), VE, "z needs a token"),
    ("samplers", "pairs float id", lambda: PairBatches([([1.5], [1, 2])], 2, 0), VE, "pairs[0][0] must be ints"),
    ("samplers", "pairs of ints", lambda: PairBatches([(1, 2)], 2, 0), TE, "pairs[0][0] must be a sequence"),
    ("samplers", "pairs a single", lambda: PairBatches([([1],)], 2, 0), VE, "must be a (z, x) pair"),
    ("samplers", "pairs float pad", lambda: PairBatches([([1], [1, 2])], 2, 0.5), VE, "pad_id must be ints"),
    ("samplers", "classes float label", lambda: ClassBatches([([1, 2], 1.5)], 2, 0), TE,
     "the class of examples[0] must be an integer"),
    ("samplers", "classes negative", lambda: ClassBatches([([1, 2], -1)], 2, 0), VE,
     "the class of examples[0] must be at least 0"),
    ("samplers", "classes no tokens", lambda: ClassBatches([([], 1)], 2, 0), VE, "has no tokens"),
    ("samplers", "classes empty", lambda: ClassBatches([], 2, 0), VE, "non-empty list"),
    ("samplers", "classes float ids", lambda: ClassBatches([([0.5], 1)], 2, 0), VE, "examples[0][0] must be ints"),
    # losses and Trainer ------------------------------------------------------------------------------------------------
    ("Trainer", "LM loss of a list", lambda: next_token_loss(D, [[1, 2, 3]]), TE, "must be a tensor"),
    ("Trainer", "LM loss of 1-D", lambda: next_token_loss(D, torch.tensor([1, 2, 3])), VE, "must have shape"),
    ("Trainer", "LM target N_V", lambda: next_token_loss(D, torch.tensor([[1, 2, 11]])), VE,
     "the batch's next tokens contains token id 11"),
    ("Trainer", "LM float batch", lambda: next_token_loss(D, IDS.float()), VE, "integer token ids"),
    ("Trainer", "LM one column", lambda: next_token_loss(D, torch.tensor([[1], [2]])), VE, "at least 2 tokens"),
    ("Trainer", "MLM tensor batch", lambda: mlm_loss(E, IDS), TE, "mlm_loss expects a batch (x_tilde, targets)"),
    ("Trainer", "MLM one part", lambda: mlm_loss(E, (IDS,)), TE, "mlm_loss expects a batch"),
    ("Trainer", "MLM list targets", lambda: mlm_loss(E, (IDS, [[1, 2, 3]])), TE, "of tensors"),
    ("Trainer", "MLM nothing masked", lambda: mlm_loss(E, (IDS, torch.full((1, 3), -100))), VE, "no target token"),
    ("Trainer", "MLM target N_V", lambda: mlm_loss(E, (IDS, torch.tensor([[-100, 11, -100]]))), VE,
     "targets contains token id 11"),
    ("Trainer", "MLM target shape", lambda: mlm_loss(E, (IDS, torch.tensor([[1, 2]]))), VE, "targets must have shape"),
    ("Trainer", "seq2seq three parts", lambda: seq2seq_loss(ED, (IDS, IDS, IDS)), TE, "seq2seq_loss expects"),
    ("Trainer", "seq2seq all padding", lambda: seq2seq_loss(ED, (IDS, torch.zeros(1, 3, dtype=torch.bool), IDS,
                                                                torch.ones(1, 3, dtype=torch.bool))), VE,
     "no target token"),
    ("Trainer", "seq2seq target N_V", lambda: seq2seq_loss(ED, (IDS, torch.zeros(1, 3, dtype=torch.bool),
                                                                torch.tensor([[1, 2, 12]]),
                                                                torch.zeros(1, 3, dtype=torch.bool))), VE,
     "x's targets contains token id 12"),
    ("Trainer", "seq2seq x one token", lambda: seq2seq_loss(ED, (IDS, torch.zeros(1, 3, dtype=torch.bool),
                                                                 IDS[:, :1], torch.zeros(1, 1, dtype=torch.bool))),
     VE, "at least 2 tokens"),
    ("Trainer", "seq2seq int mask", lambda: seq2seq_loss(ED, (IDS, torch.zeros(1, 3, dtype=torch.bool), IDS,
                                                              torch.zeros(1, 3, dtype=torch.long))), VE,
     "x_padding must be a bool"),
    ("Trainer", "class label N_C", lambda: classification_loss(
        CLS, (IDS, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([3]))), VE,
     "classes must be int64 labels in {0, ..., 2} (N_C = 3)"),
    ("Trainer", "class padding None", lambda: classification_loss(CLS, (IDS, None, torch.tensor([1]))), TE,
     "of tensors"),
    ("Trainer", "class label negative", lambda: classification_loss(
        CLS, (IDS, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([-1]))), VE, "classes must be int64 labels"),
    ("Trainer", "class label float", lambda: classification_loss(
        CLS, (IDS, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([1.0]))), VE, "classes must be int64"),
    ("Trainer", "class label count", lambda: classification_loss(
        CLS, (IDS, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([1, 2]))), VE, "classes (batch,)"),
    ("Trainer", "class all padding", lambda: classification_loss(
        CLS, (IDS, torch.ones(1, 3, dtype=torch.bool), torch.tensor([1]))), VE, "all padding"),
    ("Trainer", "config float steps", lambda: TrainConfig(max_steps=10.5), TE, "max_steps must be an integer"),
    ("Trainer", "config lr NaN", lambda: TrainConfig(lr=NAN), VE, "lr must be a number"),
    ("Trainer", "config lr negative", lambda: TrainConfig(lr=-1.0), VE, "lr must be a number"),
    ("Trainer", "config lr 0", lambda: TrainConfig(lr=0.0, min_lr=0.0), VE, "lr must be positive"),
    ("Trainer", "config grad_clip NaN", lambda: TrainConfig(grad_clip=NAN), VE, "grad_clip must be positive"),
    ("Trainer", "config weight decay", lambda: TrainConfig(weight_decay=-0.1), VE, "weight_decay must be"),
    ("Trainer", "config beta2 1", lambda: TrainConfig(beta2=1.0), VE, "beta2 must be a number in [0, 1)"),
    ("Trainer", "config warmup negative", lambda: TrainConfig(warmup_steps=-1), VE, "warmup_steps must be at least 0"),
    ("Trainer", "config float seed", lambda: TrainConfig(seed=0.5), TE, "seed must be an integer"),
    ("Trainer", "config precision", lambda: TrainConfig(precision="fp8"), VE, "precision must be one of"),
    ("Trainer", "device unknown", lambda: trainer(cfg=TrainConfig(device="tpu9", progress=False)), VE,
     "is not a device torch knows"),
    ("Trainer", "model a string", lambda: trainer(model="gpt2"), TE, "model must be an nn.Module"),
    ("Trainer", "loss a string", lambda: trainer(loss="mse"), TE, "loss_fn must be callable"),
    ("Trainer", "batches a list", lambda: trainer(batches=[IDS]), TE, "train_batches must be a batch sampler"),
    ("Trainer", "cfg a dict", lambda: trainer(cfg={"lr": 1e-3}), TE, "cfg must be a TrainConfig"),
    ("Trainer", "val batches an int", lambda: trainer(val_batches=5), TE, "val_batches must be a batch sampler"),
    ("Trainer", "step on nothing masked", lambda: trainer(E, mlm_loss, FixedBatches(
        (IDS, torch.full((1, 3), -100)))).train_step(), VE, "no target token"),
    ("Trainer", "step on wrong rank", lambda: trainer(batches=FixedBatches(torch.tensor([1, 2, 3]))).train_step(),
     VE, "must have shape"),
    # loaders --------------------------------------------------------------------------------------------------------
    ("loaders", "missing", lambda: load_model(path("missing.pt")), FE, "missing.pt: no such file"),
    ("loaders", "a folder", lambda: load_model(path("a_folder")), FE, "a directory, not a file"),
    ("loaders", "empty", lambda: load_model(path("empty.pt")), VE, "empty.pt is empty"),
    ("loaders", "truncated", lambda: load_model(path("truncated.pt")), VE, "truncated.pt is truncated or damaged"),
    ("loaders", "random bytes", lambda: load_model(path("random.pt")), VE, "random.pt is not a PyTorch checkpoint"),
    ("loaders", "JSON", lambda: load_model(path("config.json")), VE, "config.json is not a PyTorch checkpoint"),
    ("loaders", "plain pickle", lambda: load_model(path("plain.pkl")), VE, "plain.pkl is not a PyTorch checkpoint"),
    ("loaders", "foreign pickle", lambda: load_model(path("foreign.pt")), VE, "foreign.pt holds Python objects"),
    ("loaders", "another format", lambda: load_model(path("other_format.pt")), VE,
     "other_format.pt is not a checkpoint written by transformer_nb"),
    ("loaders", "newer version", lambda: load_model(path("version99.pt")), VE, "checkpoint format version 99"),
    ("loaders", "no weights", lambda: load_model(path("no_model.pt")), VE, "no_model.pt is a damaged checkpoint"),
    ("loaders", "unknown kind", lambda: load_model(path("kind.pt")), VE, "unknown model kind 'GPT5'"),
    ("loaders", "extra config field", lambda: load_model(path("extra_field.pt")), VE,
     "extra_field.pt holds a damaged DTransformer"),
    ("loaders", "float size in config", lambda: load_model(path("float_size.pt")), VE,
     "float_size.pt holds a damaged DTransformer"),
    ("loaders", "weights of another config", lambda: load_model(path("wrong_weights.pt")), VE,
     "wrong_weights.pt holds a damaged DTransformer"),
    ("loaders", "damaged tokenizer", lambda: load_model(path("bad_tokenizer.pt")), VE,
     "bad_tokenizer.pt is not a tokenizer file"),
    ("loaders", "path an int", lambda: load_model(5), TE, "path must be a str or a Path"),
    ("loaders", "read_checkpoint JSON", lambda: read_checkpoint(path("config.json")), VE, "not a PyTorch checkpoint"),
    ("loaders", "Trainer.load missing", lambda: trainer().load(path("missing.pt")), FE, "no checkpoint at"),
    ("loaders", "Trainer.load random", lambda: trainer().load(path("random.pt")), VE, "not a PyTorch checkpoint"),
    ("loaders", "Trainer.load foreign", lambda: trainer().load(path("foreign.pt")), VE, "holds Python objects"),
    ("loaders", "Trainer.load other kind", lambda: trainer().load(path("e.pt")), VE,
     "e.pt holds a ETransformer, not a DTransformer"),
    ("loaders", "Trainer.load other config", lambda: trainer().load(path("d_wide.pt")), VE,
     "d_wide.pt was saved from a model with a different config: d_e (checkpoint 16, model 8)"),
    ("loaders", "Trainer.load no optimizer", lambda: trainer().load(path("no_optimizer.pt")), VE,
     "damaged checkpoint: missing ['optimizer']"),
    ("loaders", "Trainer.load other optimizer", lambda: trainer().load(path("other_optimizer.pt")), VE,
     "other_optimizer.pt does not fit this trainer"),
    ("loaders", "Trainer.load truncated", lambda: trainer().load(path("truncated.pt")), VE, "truncated or damaged"),
]


def _raised_here(info) -> Path:
    "The file of the frame that raised: the traceback's last frame."
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename)


@pytest.mark.parametrize("entry, case, call, exc, fragment",
                         [pytest.param(*row, id=f"{row[0]}: {row[1]}") for row in ROWS])
def test_bad_input_gets_a_clear_error_from_the_package(entry, case, call, exc, fragment):
    with pytest.raises(Exception) as info:
        call()
    error = info.value
    assert type(error) is exc, f"{type(error).__name__}: {error}"
    assert fragment in str(error), f"{fragment!r} not in {str(error)!r}"
    where = _raised_here(info)
    assert where.parent.name == "transformer_nb", f"raised inside {where}, not by the package"
    assert "weights_only=False" not in str(error)  # never advise an unsafe load


def test_the_table_covers_every_entry_point_with_150_bad_inputs():
    counts = Counter(row[0] for row in ROWS)
    assert sum(counts.values()) >= 150
    assert set(counts) == {"components", "models", "converters", "generate", "ed_generate", "beam_search",
                           "tokenizers", "samplers", "Trainer", "loaders"}
    assert len({(row[0], row[1]) for row in ROWS}) == len(ROWS)  # each case named once


# ------------------------------------------------------------------------------------------------ must succeed
def _greedy_limit():
    for tau in (1e-45, 5e-324):
        assert generate(D, [1, 2, 3], 5, temperature=tau) == generate(D, [1, 2, 3], 5, greedy=True)


def _greedy_limit_ed():
    tiny = ed_generate(ED, [[1, 2], [3]], BOS, EOS, 6, greedy=False, temperature=1e-45)
    assert tiny == ed_generate(ED, [[1, 2], [3]], BOS, EOS, 6, greedy=True)


def _sampling_probs_one_hot():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9]])
    probs = sampling_probs(logits, temperature=1e-300)
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    tie = sampling_probs(torch.tensor([[1.0, 3.0, 3.0]]), temperature=1e-45)
    assert torch.equal(tie, torch.tensor([[0.0, 0.5, 0.5]]))  # the limit shares the top between ties


def _temperature_ref_limit():
    q = temperature_ref(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), 1e-45)
    assert torch.equal(q, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def _numpy_ids_welcome():
    np = pytest.importorskip("numpy")
    assert generate(D, list(np.array([1, 2, 3])), 3, greedy=True) == generate(D, [1, 2, 3], 3, greedy=True)


def _int32_ids_welcome():
    assert torch.equal(D(IDS.int()), D(IDS))


def _bool_padding_from_hf_mask():
    attention_mask = torch.tensor([[0, 1, 1]])  # Hugging Face: 1 = keep
    out = generate(D, IDS, 3, greedy=True, x_padding=attention_mask == 0)
    assert out == [generate(D, [2, 3], 3, greedy=True)]


def _mlm_step_is_finite():
    t = trainer(E, mlm_loss, MLMBatches(STREAM, 2, 4, 0.01, 9))  # p_mask tiny: the sampler still masks one
    t.train_step()
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def _refused_step_leaves_weights():
    t = trainer(e_cfg(), mlm_loss, FixedBatches((IDS, torch.full((1, 3), -100))))
    before = [p.detach().clone() for p in t.model.parameters()]
    with pytest.raises(ValueError):
        t.train_step()
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def _gpt2_inverse_layer_scaling_is_exact():
    torch.manual_seed(1)
    hf = hf_gpt2(n_layer=2, scale_attn_by_inverse_layer_idx=True, scale_attn_weights=False,
                 attn_implementation="eager")
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(5.0)
    ours = from_hf(hf).eval()
    with torch.no_grad():
        assert (ours(IDS) - hf(IDS).logits).abs().max() < 1e-4


def _untied_bert_round_trip():
    torch.manual_seed(2)
    hf = hf_bert(tie_word_embeddings=False)
    with torch.no_grad():
        hf.cls.predictions.decoder.bias.normal_()
        hf.cls.predictions.bias.normal_()  # unused when untied: must not be read
    ours = from_hf(hf).eval()
    with torch.no_grad():
        assert (ours(IDS) - hf(IDS).logits).abs().max() < 1e-5
        assert (to_hf(ours)(IDS).logits - hf(IDS).logits).abs().max() < 1e-5


def _padding_rows_stay_finite():
    z = torch.tensor([[1, 2, 3], [4, 5, 6]])
    z_pad = torch.tensor([[False, False, False], [True, True, True]])  # the second context: all padding
    x = torch.tensor([[BOS, 1, EOS], [BOS, 2, 2]])
    x_pad = torch.tensor([[False, False, False], [False, True, True]])  # one real target only
    model = ed_cfg()
    loss = seq2seq_loss(model, (z, z_pad, x, x_pad))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                        if p.grad is not None)
    assert torch.isfinite(E(IDS, x_padding=torch.ones(1, 3, dtype=torch.bool))).all()


def _autocast_mixes_dtypes_on_purpose():
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls, fp32 norms: not a dtype error
        for norm in ("post", "pre", "peri", "resi", "deepnorm"):
            assert torch.isfinite(next_token_loss(d_cfg(norm=norm), x))
        assert torch.isfinite(mlm_loss(E, (x, torch.tensor([[-100, 3, -100, -100]]))))


SUCCEED = [_autocast_mixes_dtypes_on_purpose, _padding_rows_stay_finite, _greedy_limit, _greedy_limit_ed, _sampling_probs_one_hot, _temperature_ref_limit, _numpy_ids_welcome,
           _int32_ids_welcome, _bool_padding_from_hf_mask, _mlm_step_is_finite, _refused_step_leaves_weights,
           _gpt2_inverse_layer_scaling_is_exact, _untied_bert_round_trip]


@pytest.mark.parametrize("check", SUCCEED, ids=lambda f: f.__name__.strip("_"))
def test_edge_input_succeeds_with_the_right_result(check):
    check()
