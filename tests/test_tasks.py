"Heavier checks for Chapter 3 (transformer_nb.tasks): data files, splits, samplers and the synthetic tasks."
import hashlib
import io
import os
import random
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from transformer_nb import tasks
from transformer_nb.tasks import (DATA_FILES, WindowSampler, bracket_task, chunk, chunk_documents, data_file,
                                  digit_answer, digit_task, download, exact_match, is_balanced,
                                  language_id_task, load_tatoeba, load_tiny_shakespeare, parse_tatoeba,
                                  random_windows, shuffled_batches, split_by_key, split_documents,
                                  train_val_split)

SHAKESPEARE = "tinyshakespeare.txt"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    "No shared data folder, no TRANSFORMER_NB_DATA, an empty cache in tmp_path, and a network that fails."
    monkeypatch.setattr(tasks, "find_repo_root", lambda start=None: None)
    monkeypatch.delenv("TRANSFORMER_NB_DATA", raising=False)
    monkeypatch.setenv("TRANSFORMER_NB_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shared_copy():
    return data_file(SHAKESPEARE)  # the local copy in ../shared/data


# ---------------------------------------------------------------- data files
def test_shared_copies_are_found_and_verified():
    for name, info in DATA_FILES.items():
        path = data_file(name)
        assert path.is_file()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256


def test_env_folder_is_searched_before_the_shared_copy(monkeypatch, tmp_path, shared_copy):
    (tmp_path / SHAKESPEARE).write_bytes(shared_copy.read_bytes())
    monkeypatch.setenv("TRANSFORMER_NB_DATA", str(tmp_path))
    assert data_file(SHAKESPEARE) == tmp_path / SHAKESPEARE


def test_explicit_path_wins_and_is_verified(tmp_path, shared_copy):
    good = tmp_path / "copy.txt"
    good.write_bytes(shared_copy.read_bytes())
    assert data_file(SHAKESPEARE, path=good) == good
    bad = tmp_path / "bad.txt"
    bad.write_bytes(shared_copy.read_bytes()[:-1])
    with pytest.raises(ValueError, match="sha256"):
        data_file(SHAKESPEARE, path=bad)
    assert data_file(SHAKESPEARE, path=bad, verify=False) == bad
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_file(SHAKESPEARE, path=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown data file"):
        data_file("nope.txt")


def test_offline_error_says_where_to_put_the_file(offline):
    missing = [name for name, info in DATA_FILES.items() if not info.packaged]
    assert missing
    for name in missing:
        with pytest.raises(FileNotFoundError) as err:
            data_file(name)
        message = str(err.value)
        assert str(offline / name) in message
        assert "TRANSFORMER_NB_DATA" in message and DATA_FILES[name].sha256 in message
    assert not offline.exists() or not any(offline.iterdir())  # a failed download leaves nothing behind


def test_packaged_copy_is_found_offline_without_the_shared_folder(offline):
    packaged = [name for name, info in DATA_FILES.items() if info.packaged]
    assert packaged == ["tatoeba-eng-fra-5k.tsv"]
    path = data_file(packaged[0])
    assert path.parent.name == "data" and path.parent.parent.name == "transformer_nb"
    assert len(load_tatoeba()) == 5000
    assert (path.parent / "TATOEBA.md").read_text().count("CC BY 2.0 FR") == 1


def test_download_from_file_url_then_cache_hit(monkeypatch, tmp_path, shared_copy):
    monkeypatch.setattr(tasks, "find_repo_root", lambda start=None: None)  # no shared copy to find
    monkeypatch.delenv("TRANSFORMER_NB_DATA", raising=False)
    monkeypatch.setenv("TRANSFORMER_NB_CACHE", str(tmp_path))
    path = data_file(SHAKESPEARE, url=shared_copy.resolve().as_uri())  # the real urlopen, on a file:// URL
    assert path == tmp_path / SHAKESPEARE
    assert path.read_bytes() == shared_copy.read_bytes()

    def no_network(*args, **kwargs):
        raise AssertionError("the cached copy should have been used")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert data_file(SHAKESPEARE) == path


def test_corrupted_download_never_replaces_a_good_file(tmp_path, shared_copy):
    good_bytes = shared_copy.read_bytes()
    dest = tmp_path / "cache" / SHAKESPEARE
    dest.parent.mkdir()
    dest.write_bytes(good_bytes)
    corrupted = tmp_path / "corrupted.txt"
    corrupted.write_bytes(good_bytes.replace(b"First Citizen", b"Frist Citizen", 1))
    with pytest.raises(ValueError, match="expected " + DATA_FILES[SHAKESPEARE].sha256):
        download(corrupted.as_uri(), dest, DATA_FILES[SHAKESPEARE].sha256)
    assert dest.read_bytes() == good_bytes
    assert sorted(p.name for p in dest.parent.iterdir()) == [SHAKESPEARE]  # no .part file left


def test_download_with_a_monkeypatched_urlopen(monkeypatch, tmp_path):
    payload = b"hello, data\n" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return io.BytesIO(payload)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = download("https://example.invalid/data.txt", tmp_path / "sub" / "data.txt", digest)
    assert dest.read_bytes() == payload and seen == ["https://example.invalid/data.txt"]
    with pytest.raises(ValueError, match="nothing was written"):
        download("https://example.invalid/data.txt", tmp_path / "other.txt", "0" * 64)
    assert not (tmp_path / "other.txt").exists()


def test_find_repo_root(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "settings.ini").write_text("[DEFAULT]\n")
    assert tasks.find_repo_root(tmp_path / "a" / "b") == tmp_path.resolve()
    assert (tasks.find_repo_root() / "settings.ini").is_file()


# ---------------------------------------------------------------- sequence modelling
def test_shakespeare_documents_round_trip():
    text = load_tiny_shakespeare()
    docs = split_documents(text)
    assert "\n".join(docs) == text
    assert all(d.endswith("\n") and "\n\n" not in d for d in docs)
    assert len(docs) == text.count("\n\n") + 1


@given(st.text(alphabet="ab\n", max_size=60))
def test_split_documents_inverts_join(text):
    text = text.rstrip("\n") + "\n" if text.strip("\n") else ""
    if "\n\n\n" in text:  # three newlines in a row have no unique reading as documents
        return
    assert "\n".join(split_documents(text)) == text


@given(st.lists(st.integers(0, 9), max_size=50), st.integers(1, 12))
def test_chunk_properties(seq, l_max):
    pieces = chunk(seq, l_max)
    assert sum(pieces, []) == seq
    assert all(1 <= len(p) <= l_max for p in pieces)
    assert all(len(p) == l_max for p in pieces[:-1])
    assert len(pieces) == -(-len(seq) // l_max)


@given(st.lists(st.text(alphabet="xyz", min_size=1, max_size=20), min_size=1, max_size=10), st.integers(1, 7))
def test_chunks_never_span_documents(docs, l_max):
    pieces = chunk_documents(docs, l_max)
    assert pieces == [p for d in docs for p in chunk(d, l_max)]
    assert "".join(pieces) == "".join(docs)


def test_train_val_split_is_contiguous_and_checked():
    train, val = train_val_split(list(range(100)), 0.1)
    assert train == list(range(90)) and val == list(range(90, 100))
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split([1, 2, 3], bad)
    with pytest.raises(ValueError, match="too few"):
        train_val_split([1], 0.5)


def test_random_windows_are_contiguous_reproducible_and_cover_the_ends():
    tokens = torch.arange(50)
    g = torch.Generator().manual_seed(0)
    batches = [random_windows(tokens, 16, 10, g) for _ in range(40)]
    starts = set()
    for b in batches:
        assert b.shape == (16, 10)
        assert torch.all(b[:, 1:] - b[:, :-1] == 1)  # each window is a contiguous slice
        starts.update(b[:, 0].tolist())
    assert starts == set(range(41))  # every start 0..len-length occurs
    s1, s2 = iter(WindowSampler(tokens, 4, 5, seed=3)), iter(WindowSampler(tokens, 4, 5, seed=3))
    for _ in range(5):
        assert torch.equal(next(s1), next(s2))


def test_random_windows_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    next(iter(WindowSampler(torch.arange(100), 8, 10, seed=0)))
    assert torch.equal(torch.rand(3), expected)


def test_random_windows_reject_bad_input():
    g = torch.Generator()
    with pytest.raises(ValueError, match="1-D"):
        random_windows(torch.zeros(2, 5, dtype=torch.long), 1, 2, g)
    with pytest.raises(ValueError, match="window length"):
        random_windows(torch.arange(5), 1, 6, g)
    with pytest.raises(ValueError, match="batch_size"):
        random_windows(torch.arange(5), 0, 2, g)


# ---------------------------------------------------------------- sequence-to-sequence
def test_tatoeba_keeps_attribution_and_rejects_bad_lines():
    pairs = load_tatoeba()
    assert len(pairs) == 5000
    assert all(p.english and p.french and "tatoeba.org #" in p.attribution for p in pairs)
    assert pairs[0].english == "Go."
    with pytest.raises(ValueError, match="line 2 has 2"):
        parse_tatoeba(["a\tb\tc", "a\tb"])


@given(st.lists(st.sampled_from("abcdefgh"), max_size=40), st.floats(0.05, 0.95))
def test_split_by_key_keeps_groups_together(keys, fraction):
    items = list(enumerate(keys))
    train, val = split_by_key(items, key=lambda item: item[1], val_fraction=fraction)
    assert sorted(train + val) == items
    assert not {k for _, k in train} & {k for _, k in val}


def test_tatoeba_split_has_about_the_requested_size():
    pairs = load_tatoeba()
    train, val = split_by_key(pairs, key=lambda p: p.english, val_fraction=0.2)
    assert 0.1 < len(val) / len(pairs) < 0.3


@pytest.mark.parametrize("kind", ["reverse", "sort", "add"])
def test_digit_tasks_have_the_exact_answer(kind):
    examples = digit_task(kind, 500, seed=7, min_digits=2, max_digits=6)
    assert examples == digit_task(kind, 500, seed=7, min_digits=2, max_digits=6)
    assert examples != digit_task(kind, 500, seed=8, min_digits=2, max_digits=6)
    for source, target in examples:
        if kind == "add":
            a, b = source.split("+")
            assert all(2 <= len(n) <= 6 and n[0] != "0" for n in (a, b))
            assert int(target) == int(a) + int(b)
        else:
            assert source.isdigit() and 2 <= len(source) <= 6
            expected = "".join(reversed(source)) if kind == "reverse" else "".join(sorted(source, key=int))
            assert target == expected
    assert exact_match([t for _, t in examples], [t for _, t in examples]) == 1.0


def test_digit_task_and_exact_match_errors():
    with pytest.raises(ValueError, match="unknown digit task"):
        digit_answer("divide", "12")
    with pytest.raises(ValueError, match="min_digits"):
        digit_task("sort", 3, min_digits=4, max_digits=2)
    with pytest.raises(ValueError, match="at least one"):
        exact_match([], [])
    assert exact_match([[1, 2], [3]], [[1, 2], [4]]) == 0.5


def test_shuffled_batches_are_a_reproducible_partition():
    batches = shuffled_batches(103, 10, seed=1, epoch=2)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert batches == shuffled_batches(103, 10, seed=1, epoch=2)
    assert batches != shuffled_batches(103, 10, seed=2, epoch=2)
    with pytest.raises(ValueError):
        shuffled_batches(0, 10)


# ---------------------------------------------------------------- classification
def reduce_balanced(s: str) -> bool:
    "An independent check: delete adjacent '()' and '[]' until nothing changes."
    while "()" in s or "[]" in s:
        s = s.replace("()", "").replace("[]", "")
    return s == ""


@given(st.text(alphabet="()[]", max_size=16))
def test_is_balanced_agrees_with_reduction(s):
    assert is_balanced(s) == reduce_balanced(s)


def test_bracket_task_is_balanced_hard_and_reproducible():
    data = bracket_task(2000, seed=5, min_length=4, max_length=20)
    assert data == bracket_task(2000, seed=5, min_length=4, max_length=20)
    labels = Counter(label for _, label in data)
    assert labels == {0: 1000, 1: 1000}
    for s, label in data:
        assert reduce_balanced(s) == bool(label)
        assert len(s) % 2 == 0 and 4 <= len(s) <= 20
        # hard negatives: symbol counts are those of a balanced string, so counting cannot tell them apart
        assert s.count("(") == s.count(")") and s.count("[") == s.count("]")
    lengths = {c: Counter(len(s) for s, label in data if label == c) for c in (0, 1)}
    assert set(lengths[0]) == set(lengths[1])
    # both kinds of hard negative occur: a dip below depth 0, and mismatched kinds with a valid depth profile
    negatives = [s for s, label in data if not label]
    dips = [s for s in negatives if min(tasks.bracket_depths(s)) < 0]
    assert 0 < len(dips) < len(negatives)


def test_bracket_task_errors():
    with pytest.raises(ValueError, match="even"):
        bracket_task(3)
    with pytest.raises(ValueError, match="not one of the brackets"):
        is_balanced("(x)")
    with pytest.raises(ValueError, match="even length"):
        tasks.random_balanced(5, random.Random(0))
    with pytest.raises(ValueError, match="brackets must"):
        is_balanced("()", brackets="(")


def test_language_id_task():
    pairs = load_tatoeba()
    data = language_id_task(pairs, seed=0)
    assert data == language_id_task(pairs, seed=0)
    english, french = {p.english for p in pairs}, {p.french for p in pairs}
    assert Counter(label for _, label in data)[0] == Counter(label for _, label in data)[1]
    assert len({s for s, _ in data}) == len(data)
    for s, label in data:
        assert s in (french if label else english)
        assert s not in (english if label else french)


def test_the_samplers_share_one_stream_machine():
    from transformer_nb.audit import copy_batch, copy_batches
    from transformer_nb.tasks import BatchSampler
    from transformer_nb.training import LMBatches
    tokens = torch.arange(50)
    lm, windows = LMBatches(tokens, 3, 6, seed=4), iter(WindowSampler(tokens, 3, 7, seed=4))
    for _ in range(3):
        assert torch.equal(lm.sample(), next(windows))
    g = torch.Generator().manual_seed(2)
    copies = copy_batches(2, 6, 9, seed=2)
    assert all(torch.equal(next(copies), copy_batch(2, 6, 9, g)) for _ in range(3))
    with pytest.raises(NotImplementedError):
        BatchSampler(2).sample()
