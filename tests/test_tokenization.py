"Heavier checks for Chapter 4 (transformer_nb.tokenization): round trips, special tokens, errors, training."
import json
from collections import Counter

import pytest
import torch
from hypothesis import given, settings, strategies as st

from transformer_nb.components import MultiHeadAttention
from transformer_nb.tasks import load_tiny_shakespeare, split_documents, train_val_split
from transformer_nb.tokenization import (BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer,
                                         learn_bpe_merges, merge_pair, pad, pretokenize, tokens_per_char)


@pytest.fixture(scope="module")
def corpus():
    train, val = train_val_split(split_documents(load_tiny_shakespeare()))
    return "\n".join(train), "\n".join(val)


@pytest.fixture(scope="module")
def bpe(corpus):
    return BPETokenizer.train(corpus[0][:200_000], vocab_size=1000)


@pytest.fixture(scope="module")
def tokenizers(corpus, bpe):
    return [CharTokenizer.train(corpus[0]), WordTokenizer.train(corpus[0], 2000), bpe]


# ---------------------------------------------------------------- round trips
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_unicode(bpe, s):
    assert bpe.decode(bpe.encode(s)) == s


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_pretokens_join_back(s):
    assert "".join(pretokenize(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_char_and_word_round_trip_known_text(tokenizers, corpus, data):
    char_tok, word_tok, _ = tokenizers
    start = data.draw(st.integers(0, len(corpus[0]) - 300))
    s = corpus[0][start:start + data.draw(st.integers(0, 300))]
    assert char_tok.decode(char_tok.encode(s)) == s
    if all(i >= 2 for i in word_tok.encode(s)):  # no unknown words
        assert word_tok.decode(word_tok.encode(s)) == s


def test_unknown_policies(corpus):
    char_tok = CharTokenizer.train("abc ")
    assert char_tok.decode(char_tok.encode("abz a")) == "ab\ufffd a"
    with pytest.raises(ValueError, match="'z' at position 2"):
        CharTokenizer.train("abc", unknown="error").encode("abz")
    word_tok = WordTokenizer(["the", " cat", "."])
    assert word_tok.decode(word_tok.encode("the dog.")) == "the <unk>."
    assert word_tok.decode(word_tok.encode("dog the")) == "<unk> <unk>"  # " the" (with a space) is not "the"
    with pytest.raises(ValueError, match="' dog' is not in the word vocabulary"):
        WordTokenizer(["the"], unknown="error").encode("the dog")
    with pytest.raises(ValueError, match="unknown must be one of"):
        CharTokenizer("ab", unknown="skip")


# ---------------------------------------------------------------- special tokens
def test_special_token_layout(tokenizers):
    for tok in tokenizers:
        N_V = tok.vocab_size
        assert (tok.mask_token, tok.bos_token, tok.eos_token) == (N_V - 3, N_V - 2, N_V - 1)
        assert tok.n_ordinary == N_V - 3 and tok.pad_token == tok.eos_token


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_encoding_never_produces_special_tokens(tokenizers, s):
    for tok in tokenizers:
        ids = tok.encode(s)
        assert all(0 <= i < tok.mask_token for i in ids)
        wrapped = tok.encode(s, bos=True, eos=True)
        assert wrapped == [tok.bos_token] + ids + [tok.eos_token]


def test_texts_that_look_like_special_tokens_are_ordinary(bpe):
    for s in ["[MASK]", "[BOS]", "[EOS]", "<unk>", "<|endoftext|>"]:
        assert max(bpe.encode(s)) < bpe.mask_token
        assert bpe.decode(bpe.encode(s)) == s


def test_decode_handles_special_tokens(bpe):
    ids = [bpe.bos_token] + bpe.encode("to be") + [bpe.mask_token] + bpe.encode("é") + [bpe.eos_token]
    assert bpe.decode(ids) == "to beé"
    assert bpe.decode(ids, skip_special=False) == "[BOS]to be[MASK]é[EOS]"
    assert bpe.decode(torch.tensor(ids)) == "to beé"


# ---------------------------------------------------------------- save and load
@settings(max_examples=30, deadline=None)
@given(st.text(max_size=80))
def test_save_load_round_trip(tmp_path_factory, tokenizers, s):
    folder = tmp_path_factory.mktemp("tok")
    for tok in tokenizers:
        path = folder / f"{tok.kind}.json"
        tok.save(path)
        for loader in (Tokenizer, type(tok)):
            back = loader.load(path)
            assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
            assert back.encode(s) == tok.encode(s)


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=80))
def test_json_round_trip_in_memory(tokenizers, s):
    for tok in tokenizers:
        text = tok.to_json()
        for loader in (Tokenizer, type(tok)):
            back = loader.from_json(text)
            assert type(back) is type(tok) and back.encode(s) == tok.encode(s)


def test_file_is_to_json(tmp_path, bpe):
    bpe.save(tmp_path / "bpe.json")
    assert (tmp_path / "bpe.json").read_text(encoding="utf-8") == bpe.to_json()


def test_bpe_file_is_plain_json_of_merges(tmp_path, bpe):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["kind"] == "bpe" and [tuple(m) for m in state["merges"]] == bpe.merges


def test_load_rejects_other_files(tmp_path, bpe):
    (tmp_path / "x.json").write_text(json.dumps({"merges": []}))
    with pytest.raises(ValueError, match="not a tokenizer file"):
        Tokenizer.load(tmp_path / "x.json")
    bpe.save(tmp_path / "bpe.json")
    with pytest.raises(ValueError, match="not a 'word' one"):
        WordTokenizer.load(tmp_path / "bpe.json")
    state = json.loads((tmp_path / "bpe.json").read_text())
    state["kind"] = "sentencepiece"
    (tmp_path / "sp.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        Tokenizer.load(tmp_path / "sp.json")


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_value_error(bpe):
    N_V = bpe.vocab_size
    cases = {
        "outside the vocabulary": [[N_V], [-1], torch.tensor([0, N_V])],
        "must be ints": [[1.0], [True], ["a"]],
        "1-D integer tensor": [torch.zeros(2, 2, dtype=torch.long), torch.tensor([1.0])],
        "not a string": ["abc"],
    }
    for message, bad_inputs in cases.items():
        for ids in bad_inputs:
            with pytest.raises(ValueError, match=message):
                bpe.decode(ids)
    with pytest.raises(ValueError, match="expects a str"):
        bpe.encode(b"bytes")
    with pytest.raises(ValueError, match="lone surrogate"):
        bpe.encode("a\ud800b")
    with pytest.raises(ValueError, match="at least 259"):
        BPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(ValueError, match="between 259"):
        bpe.truncated(bpe.vocab_size + 1)
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer([(256, 1)])
    with pytest.raises(ValueError, match="twice"):
        BPETokenizer([(1, 2), (1, 2)])
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        WordTokenizer.train("a b", vocab_size=5)
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="non-empty"):
        tokens_per_char(bpe, "")


# ---------------------------------------------------------------- BPE training
def naive_bpe(word_counts, n_merges, min_frequency=2):
    "Textbook BPE, recounting every pair after every merge (slow, obviously right)."
    words = {w: list(w.encode("utf-8")) for w in word_counts}
    merges = []
    for k in range(n_merges):
        counts = Counter()
        for w, ids in words.items():
            for pair in zip(ids, ids[1:]):
                counts[pair] += word_counts[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # most frequent, ties to the smaller pair
        if counts[best] < min_frequency:
            break
        merges.append((best, counts[best]))
        words = {w: merge_pair(ids, best, 256 + k) for w, ids in words.items()}
    return merges, words


def test_incremental_training_equals_naive_recount(corpus):
    word_counts = Counter(pretokenize(corpus[0][:30_000]))
    expected, segmented = naive_bpe(word_counts, 300)
    assert learn_bpe_merges(word_counts, 300) == expected
    tok = BPETokenizer([pair for pair, _ in expected])
    for w, ids in segmented.items():  # encoding reproduces training's segmentation of every training word
        assert tok.encode(w) == ids


def test_training_stops_when_pairs_run_out():
    tok = BPETokenizer.train("ab ab ab cd", vocab_size=400)
    assert tok.vocab_size < 400 and all(c >= 2 for c in tok.merge_counts)


def test_truncated_equals_training_to_the_smaller_size(corpus, bpe):
    text = corpus[0][:200_000]
    assert bpe.truncated(600).merges == BPETokenizer.train(text, vocab_size=600).merges


def test_merge_pair():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([], (1, 2), 9) == [] and merge_pair([1], (1, 2), 9) == [1]


def test_compression_improves_with_vocabulary(corpus, bpe):
    val = corpus[1][:20_000]
    tpc = [tokens_per_char(bpe.truncated(n), val) for n in (259, 400, 700, 1000)]
    assert tpc[0] == len(val.encode("utf-8")) / len(val)  # no merges: one token per byte
    assert tpc == sorted(tpc, reverse=True) and tpc[-1] < 0.6 * tpc[0]


def test_compression_matches_hugging_face_tokenizers(corpus):
    from tokenizers import ByteLevelBPETokenizer  # development dependency, imported only here
    train, val = corpus
    ours = BPETokenizer.train(train, vocab_size=2003)  # 2000 ordinary tokens + 3 special
    hf = ByteLevelBPETokenizer()
    hf.train_from_iterator([train], vocab_size=ours.n_ordinary, min_frequency=2, show_progress=False)
    assert hf.get_vocab_size() == ours.n_ordinary
    ours_tpc, hf_tpc = tokens_per_char(ours, val), len(hf.encode(val).ids) / len(val)
    assert abs(ours_tpc / hf_tpc - 1) < 0.05, (ours_tpc, hf_tpc)


# ---------------------------------------------------------------- padding
def test_pad_shapes_and_mask():
    ids, mask = pad([[1, 2, 3], [4], []], pad_id=7, length=4)
    assert ids.tolist() == [[1, 2, 3, 7], [4, 7, 7, 7], [7, 7, 7, 7]]
    assert mask.tolist() == [[False, False, False, True], [False, True, True, True], [True] * 4]
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    left, left_mask = pad([[1, 2], [3]], pad_id=0, side="left")
    assert left.tolist() == [[1, 2], [0, 3]] and left_mask.tolist() == [[False, False], [True, False]]
    for kwargs, message in [({"side": "middle"}, "side"), ({"length": 1}, "shorter")]:
        with pytest.raises(ValueError, match=message):
            pad([[1, 2]], pad_id=0, **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        pad([], pad_id=0)


def test_z_padding_works_with_multi_head_attention(bpe):
    texts = ["To be, or not to be", "Ay", "that is the question:"]
    seqs = [bpe.encode(t, bos=True) for t in texts]
    ids, mask = bpe.pad(seqs)
    assert torch.all(ids[mask] == bpe.eos_token)
    torch.manual_seed(0)
    emb = torch.nn.Embedding(bpe.vocab_size, 16)
    mha = MultiHeadAttention(d_x=16, H=2)
    with torch.no_grad():
        y = mha(emb(ids), z_padding=mask)
        for b, s in enumerate(seqs):
            alone = mha(emb(torch.tensor([s])))
            torch.testing.assert_close(y[b, :len(s)], alone[0], atol=1e-5, rtol=1e-5)
