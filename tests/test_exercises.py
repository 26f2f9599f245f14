"""The exercises grade honestly: worked solutions pass, the reference forms pass, planted wrong solutions fail
with the intended hint, and answers of the right shape with wrong values never pass."""
import json
import math
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from transformer_nb.exercises import EXERCISES, check, exercises

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = {"3": "03_tasks", "4": "04_tokenization", "5": "05_components", "6": "06_architectures",
            "7a": "07a_training", "7b": "07b_inference", "8": "08_practical", "9": "09_layernorm_audit",
            "10": "10_modern"}


def hint(exercise: str, mistake: str) -> str:
    return next(m.hint for m in EXERCISES[exercise].mistakes if m.name == mistake)


def exercise_cells(chapter: str) -> list[dict]:
    "The code cells of a chapter's Exercises section."
    cells = json.loads((ROOT / "nbs" / f"{CHAPTERS[chapter]}.ipynb").read_text(encoding="utf-8"))["cells"]
    start = next(i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Exercises"))
    return [c for c in cells[start:-1] if c["cell_type"] == "code"]


def test_three_to_six_exercises_per_chapter():
    per_chapter = Counter(ex.chapter for ex in EXERCISES.values())
    assert set(per_chapter) == set(CHAPTERS)
    for chapter, n in per_chapter.items():
        assert 3 <= n <= 6, f"Chapter {chapter} has {n} exercises"
        assert len(exercises(chapter)) == n


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_every_stub_raises_and_every_worked_solution_passes(chapter, capsys):
    namespace, stubs, solutions = {}, 0, 0
    for cell in exercise_cells(chapter):
        src, tags = "".join(cell["source"]), cell.get("metadata", {}).get("tags", [])
        if "raises-exception" in tags:
            with pytest.raises(NotImplementedError):
                exec(src, namespace)
            stubs += 1
        else:
            exec(src, namespace)  # a solution cell: check raises if it is wrong
            solutions += "check(" in src
    assert stubs == solutions == len(exercises(chapter))
    assert capsys.readouterr().out.count("correct on all") == solutions


# Planted wrong solutions, written as a reader might write them (not the grader's own variants):
# (exercise, the mistake whose hint must appear, the wrong solution).
def _attention(X, Z, W, Mask, dim=0, scale=None, mask=None, bias=lambda b: b[:, None]):
    Q, K, V = W.W_q @ X + bias(W.b_q), W.W_k @ Z + bias(W.b_k), W.W_v @ Z + bias(W.b_v)
    S = (K.T @ Q).masked_fill(~(Mask if mask is None else mask(Mask)), -math.inf)
    return V @ (S / (scale or math.sqrt(Q.shape[0]))).softmax(dim)


def _ln(e, gamma, beta, eps, denominator):
    return (e - e.mean()) / denominator(e, eps) * gamma + beta


def _sinusoid(l_max, d_e, t0=1, i0=1, base=None, first=torch.sin, second=torch.cos):
    W = torch.zeros(d_e, l_max, dtype=torch.float64)
    for col in range(l_max):
        for i in range(d_e // 2):
            angle = torch.tensor((col + t0) / (base or l_max) ** (2 * (i + i0) / d_e))
            W[2 * i, col], W[2 * i + 1, col] = first(angle), second(angle)
    return W


def _rope(x, t, theta, d_r, pair=lambda i, half: (i, i + half), denominator=None):
    out, half = x.clone(), d_r // 2
    for i in range(half):
        angle = t * theta ** (-2 * i / (denominator or d_r))
        a, b = pair(i, half)
        out[a] = math.cos(angle) * x[a] - math.sin(angle) * x[b]
        out[b] = math.sin(angle) * x[a] + math.cos(angle) * x[b]
    return out


def _next_loss(P, x, pairs):
    return -sum(P[x[s], t].log() for s, t in pairs) if pairs else torch.tensor(0.0)


def _mlm(P, x, xt, m, keep, use_tilde=False):
    y = xt if use_tilde else x
    return -sum(P[y[t], t].log() for t in range(len(x)) if keep(xt[t] == m))


def _schedule(s, w, m, r, ramp=lambda s, w: (s + 1) / w, low=None, origin=None, shape=None):
    if s < w:
        return ramp(s, w)
    origin = w if origin is None else origin
    progress = min(1.0, (s - origin) / max(1, m - origin))
    low = r if low is None else low
    return low + (1 - low) * (shape(progress) if shape else 0.5 * (1 + math.cos(math.pi * progress)))


def _cached(q, K, V, diagonal, scale=True, masked=True):
    n, T = q.shape[0], K.shape[0]
    S = q @ K.T / (math.sqrt(q.shape[1]) if scale else 1.0)
    if masked:
        S = S.masked_fill(~torch.ones(n, T, dtype=torch.bool).tril(diagonal(n, T)), -math.inf)
    return S.softmax(-1) @ V


def _top_k(logits, k, keep=lambda k: k, renorm=True, largest=True):
    idx = logits.topk(keep(k), -1, largest=largest).indices
    keep_mask = torch.zeros_like(logits).scatter(-1, idx, 1.0).bool()
    if renorm:
        return logits.masked_fill(~keep_mask, -math.inf).softmax(-1)
    return logits.softmax(-1).masked_fill(~keep_mask, 0.0)


def _smooth(logits, y, eps, spread="all", uniform=True, denominator="kept"):
    keep = y != -100
    lp = logits[keep].log_softmax(-1)
    nll = -lp[torch.arange(len(lp)), y[keep]]
    n_v = logits.shape[-1]
    u = -lp.mean(-1) if spread == "all" else (-lp.sum(-1) - nll) / (n_v - 1)
    loss = (1 - eps) * nll + (eps * u if uniform else 0)
    return loss.sum() / (keep.sum() if denominator == "kept" else len(y))


def _global(gs):
    return torch.sqrt(sum((g * g).sum() for g in gs))


def _balanced(s, kinds=True, closed=True, ordered=True):
    if not ordered:
        return all(s.count(a) == s.count(b) for a, b in ("()", "[]"))
    stack = []
    for c in s:
        if c in "([":
            stack.append(c)
        elif not stack or (stack.pop() != {")": "(", "]": "["}[c] and kinds):
            return False
    return not stack or not closed


PLANTED = [
    ("chunk_documents", "spans documents",
     lambda docs, l: (lambda f: [f[i:i + l] for i in range(0, len(f), l)])(sum(docs, []))),
    ("chunk_documents", "drops the last chunk",
     lambda docs, l: [d[i:i + l] for d in docs for i in range(0, len(d), l) if len(d[i:i + l]) == l]),
    ("chunk_documents", "one token too long",
     lambda docs, l: [d[i:i + l + 1] for d in docs for i in range(0, len(d), l)]),
    ("chunk_documents", "sliding windows",
     lambda docs, l: [d[i:i + l] for d in docs if d for i in range(max(len(d) - l, 0) + 1)]),
    ("count_chunks", "concatenated, rounded up", lambda ls, l: math.ceil(sum(ls) / l)),
    ("count_chunks", "concatenated, rounded down", lambda ls, l: int(sum(ls) / l)),
    ("count_chunks", "rounded down per document", lambda ls, l: sum(int(n / l) for n in ls)),
    ("count_chunks", "one per document", lambda ls, l: len(ls)),
    ("is_balanced", "counts only", lambda s: _balanced(s, ordered=False)),
    ("is_balanced", "one kind of bracket", lambda s: _balanced(s, kinds=False)),
    ("is_balanced", "open at the end", lambda s: _balanced(s, closed=False)),
    ("merge_pair", "overlapping",
     lambda ids, p, n: [n if tuple(ids[i:i + 2]) == tuple(p) else ids[i] for i in range(len(ids))]),
    ("merge_pair", "right to left",
     lambda ids, p, n: _merge_from_right(ids, p, n)),
    ("merge_pair", "first only",
     lambda ids, p, n: (lambda s: ids if s is None else ids[:s] + [n] + ids[s + 2:])(
         next((i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == tuple(p)), None))),
    ("merge_pair", "drops the last id",
     lambda ids, p, n: _merge_pairs_only(ids, p, n)),
    ("most_frequent_pair", "unweighted",
     lambda wc: _top(Counter(pr for w in wc for pr in zip(w.encode(), w.encode()[1:])))),
    ("most_frequent_pair", "across words",
     lambda wc: (lambda b: _top(Counter(zip(b, b[1:]))))("".join(w * n for w, n in wc.items()).encode())),
    ("most_frequent_pair", "largest on a tie",
     lambda wc: max(_weighted(wc).items(), key=lambda kv: (kv[1], kv[0]))[0]),
    ("pad", "mask inverted",
     lambda seqs, pid: (_pad_right(seqs, pid)[0], _pad_right(seqs, pid)[1].logical_not())),
    ("pad", "left padding", lambda seqs, pid: _pad_left(seqs, pid)),
    ("attention", "softmax over rows", lambda X, Z, W, M: _attention(X, Z, W, M, dim=1)),
    ("attention", "no scaling", lambda X, Z, W, M: _attention(X, Z, W, M, scale=1.0)),
    ("attention", "scaled by d_attn", lambda X, Z, W, M: _attention(X, Z, W, M, scale=W.W_q.shape[0])),
    ("attention", "mask transposed", lambda X, Z, W, M: _attention(X, Z, W, M, mask=lambda m: m.T)),
    ("attention", "bias on the wrong axis",
     lambda X, Z, W, M: _attention(X, Z, W, M, bias=lambda b: b[None, :])),
    ("attention", "mask ignored", lambda X, Z, W, M: _attention(X, Z, W, M, mask=torch.ones_like)),
    ("causal_mask", "transposed", lambda l: torch.arange(l)[:, None] >= torch.arange(l)[None, :]),
    ("causal_mask", "off by one", lambda l: torch.arange(l)[:, None] < torch.arange(l)[None, :]),
    ("causal_mask", "nothing masked", lambda l: torch.ones(l, l) > 0),
    ("layer_norm", "eps outside the sqrt",
     lambda e, g, b, eps: _ln(e, g, b, eps, lambda e, eps: e.std(correction=0) + eps)),
    ("layer_norm", "unbiased variance",
     lambda e, g, b, eps: _ln(e, g, b, eps, lambda e, eps: (e.var() + eps).sqrt())),
    ("layer_norm", "no square root",
     lambda e, g, b, eps: _ln(e, g, b, eps, lambda e, eps: e.var(correction=0) + eps)),
    ("layer_norm", "gamma and beta swapped",
     lambda e, g, b, eps: F.layer_norm(e, e.shape, b, g, eps)),
    ("layer_norm", "not centred",
     lambda e, g, b, eps: e / (e.var(correction=0) + eps).sqrt() * g + b),
    ("sinusoid", "positions from 0", lambda l, d: _sinusoid(l, d, t0=0)),
    ("sinusoid", "i from 0", lambda l, d: _sinusoid(l, d, i0=0)),
    ("sinusoid", "base 10000", lambda l, d: _sinusoid(l, d, base=10000.0)),
    ("sinusoid", "sin and cos swapped", lambda l, d: _sinusoid(l, d, first=torch.cos, second=torch.sin)),
    ("sinusoid", "transposed", lambda l, d: _sinusoid(l, d).T.contiguous()),
    ("gelu", "tanh approximation",
     lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("gelu", "sigmoid approximation", lambda x: x / (1 + torch.exp(-1.702 * x))),
    ("gelu", "erf without the √2", lambda x: x * (1 + torch.erf(x)) / 2),
    ("gelu", "missing the factor x", lambda x: (1 + torch.erf(x / 2 ** 0.5)) / 2),
    ("gelu", "ReLU", lambda x: x.clamp(min=0)),
    ("embed", "positions from 1",
     lambda x, W_e, W_p: torch.stack([W_e[:, v] + W_p[:, t + 1] for t, v in enumerate(x)], 1)),
    ("embed", "no positions", lambda x, W_e, W_p: torch.stack([W_e[:, v] for v in x], 1)),
    ("embed", "transposed", lambda x, W_e, W_p: W_e.T[x] + W_p.T[:len(x)]),
    ("columns_that_change", "decoder sees everything", lambda a, l, k: list(range(l))),
    ("columns_that_change", "decoder: only column k",
     lambda a, l, k: [k] if a == "decoder" else list(range(l))),
    ("columns_that_change", "decoder: columns up to k",
     lambda a, l, k: list(range(k + 1)) if a == "decoder" else list(range(l))),
    ("columns_that_change", "decoder: from k + 1",
     lambda a, l, k: list(range(k + 1, l)) if a == "decoder" else list(range(l))),
    ("columns_that_change", "encoder: only column k",
     lambda a, l, k: list(range(k, l)) if a == "decoder" else [k]),
    ("columns_that_change", "encoder as a decoder", lambda a, l, k: list(range(k, l))),
    ("next_token_loss", "not shifted", lambda P, x: _next_loss(P, x, [(t, t) for t in range(len(x))])),
    ("next_token_loss", "shifted the wrong way",
     lambda P, x: _next_loss(P, x, [(t - 1, t) for t in range(1, len(x))])),
    ("next_token_loss", "first position left out",
     lambda P, x: _next_loss(P, x, [(t + 1, t) for t in range(1, len(x) - 1)])),
    ("next_token_loss", "mean",
     lambda P, x: F.nll_loss(P.log().T[:-1], torch.tensor(x[1:]))),
    ("next_token_loss", "no minus sign",
     lambda P, x: -F.nll_loss(P.log().T[:-1], torch.tensor(x[1:]), reduction="sum")),
    ("mlm_loss", "all positions", lambda P, x, xt, m: _mlm(P, x, xt, m, keep=lambda masked: True)),
    ("mlm_loss", "unmasked positions", lambda P, x, xt, m: _mlm(P, x, xt, m, keep=lambda masked: not masked)),
    ("mlm_loss", "target is the mask token",
     lambda P, x, xt, m: _mlm(P, x, xt, m, keep=bool, use_tilde=True)),
    ("loss_at_init", "l positions", lambda n, l: -l * math.log(1 / n)),
    ("loss_at_init", "per token", lambda n, l: math.log(n)),
    ("loss_at_init", "log base 2", lambda n, l: (l - 1) * math.log(n, 2)),
    ("loss_at_init", "probability, not log", lambda n, l: (l - 1) * (1 / n)),
    ("lr_multiplier", "warmup starts at 0", lambda s, w, m, r: _schedule(s, w, m, r, ramp=lambda s, w: s / w)),
    ("lr_multiplier", "decays to zero", lambda s, w, m, r: _schedule(s, w, m, r, low=0.0)),
    ("lr_multiplier", "cosine from step 0", lambda s, w, m, r: _schedule(s, w, m, r, origin=0)),
    ("lr_multiplier", "linear decay", lambda s, w, m, r: _schedule(s, w, m, r, shape=lambda p: 1 - p)),
    ("temperature", "p to the tau", lambda p, tau: p.pow(tau) / p.pow(tau).sum()),
    ("temperature", "p divided by tau", lambda p, tau: (p / tau).exp() / (p / tau).exp().sum()),
    ("temperature", "not normalised", lambda p, tau: torch.exp(p.log() / tau)),
    ("cached_attention", "cache offset", lambda q, K, V: _cached(q, K, V, lambda n, T: 0)),
    ("cached_attention", "offset off by one", lambda q, K, V: _cached(q, K, V, lambda n, T: T - n - 1)),
    ("cached_attention", "no mask", lambda q, K, V: _cached(q, K, V, None, masked=False)),
    ("cached_attention", "no scaling", lambda q, K, V: _cached(q, K, V, lambda n, T: T - n, scale=False)),
    ("top_k", "not renormalised", lambda z, k: _top_k(z, k, renorm=False)),
    ("top_k", "one too many", lambda z, k: _top_k(z, k, keep=lambda k: min(k + 1, z.shape[-1]))),
    ("top_k", "one too few", lambda z, k: _top_k(z, k, keep=lambda k: max(k - 1, 1))),
    ("top_k", "smallest k", lambda z, k: _top_k(z, k, largest=False)),
    ("smoothed_cross_entropy", "wrong tokens only", lambda z, y, eps: _smooth(z, y, eps, spread="others")),
    ("smoothed_cross_entropy", "no uniform term", lambda z, y, eps: _smooth(z, y, eps, uniform=False)),
    ("smoothed_cross_entropy", "averaged over all rows",
     lambda z, y, eps: _smooth(z, y, eps, denominator="all")),
    ("clip_grad_norm", "per tensor", lambda gs, m: [g * min(1, m / g.norm()) for g in gs]),
    ("clip_grad_norm", "always scaled", lambda gs, m: [g * (m / _global(gs)) for g in gs]),
    ("clip_grad_norm", "values clamped", lambda gs, m: [torch.clamp(g, -m, m) for g in gs]),
    ("clip_grad_norm", "norms added",
     lambda gs, m: [g * min(1, m / sum(h.norm() for h in gs)) for g in gs]),
    ("kv_cache_bytes", "keys only", lambda L, B, H, d, l, s: L * B * H * d * l * s),
    ("kv_cache_bytes", "one layer", lambda L, B, H, d, l, s: 2 * B * H * d * l * s),
    ("kv_cache_bytes", "one head", lambda L, B, H, d, l, s: 2 * L * B * d * l * s),
    ("kv_cache_bytes", "numbers, not bytes", lambda L, B, H, d, l, s: 2 * L * B * H * d * l),
    ("rms_norm", "eps outside the sqrt", lambda e, g, eps: e / (e.pow(2).mean().sqrt() + eps) * g),
    ("rms_norm", "centred", lambda e, g, eps: (e - e.mean()) / ((e - e.mean()).pow(2).mean() + eps).sqrt() * g),
    ("rms_norm", "no square root", lambda e, g, eps: e / (e.pow(2).mean() + eps) * g),
    ("rms_norm", "sum, not mean", lambda e, g, eps: e / (e.pow(2).sum() + eps).sqrt() * g),
    ("residual", "placements swapped",
     lambda p, x, f, n: x + f(n(x)) if p == "post" else n(x + f(x))),
    ("residual", "pre-LN normalises the output",
     lambda p, x, f, n: n(x + f(x)) if p == "post" else x + n(f(x))),
    ("residual", "pre-LN without the residual",
     lambda p, x, f, n: n(x + f(x)) if p == "post" else f(n(x))),
    ("residual", "post-LN outside the sum",
     lambda p, x, f, n: x + n(f(x)) if p == "post" else x + f(n(x))),
    ("deepnorm_constants", "swapped", lambda M: (1 / (8 * M) ** 0.25, (2 * M) ** 0.25)),
    ("deepnorm_constants", "square roots", lambda M: (math.sqrt(2 * M), 1 / math.sqrt(8 * M))),
    ("deepnorm_constants", "encoder-decoder's decoder", lambda M: ((3 * M) ** 0.25, (12 * M) ** -0.25)),
    ("rope", "neighbouring pairs", lambda x, t, th, d_r: _rope(x, t, th, d_r, pair=lambda i, h: (2 * i, 2 * i + 1))),
    ("rope", "rotated the wrong way", lambda x, t, th, d_r: _rope(x, -t, th, d_r)),
    ("rope", "frequencies over d", lambda x, t, th, d_r: _rope(x, t, th, d_r, denominator=len(x))),
    ("rope", "every dimension rotated", lambda x, t, th, d_r: _rope(x, t, th, len(x))),
    ("gqa_group", "interleaved", lambda h, H, H_kv: 1 + (h - 1) % H_kv),
    ("gqa_group", "rounded down", lambda h, H, H_kv: int(h * H_kv / H)),
    ("swiglu", "gate on the other branch", lambda e, Wg, W1, W2: W2 @ ((Wg @ e) * F.silu(W1 @ e))),
    ("swiglu", "sigmoid gate (GLU)", lambda e, Wg, W1, W2: W2 @ ((Wg @ e).sigmoid() * (W1 @ e))),
    ("swiglu", "activation after the product", lambda e, Wg, W1, W2: W2 @ F.silu((Wg @ e) * (W1 @ e))),
    ("swiglu", "no gate", lambda e, Wg, W1, W2: W2 @ F.silu(W1 @ e)),
]


def _merge_from_right(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and (ids[i - 1], ids[i]) == tuple(pair):
            out.insert(0, new_id)
            i -= 2
        else:
            out.insert(0, ids[i])
            i -= 1
    return out


def _merge_pairs_only(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        out.append(new_id if (ids[i], ids[i + 1]) == tuple(pair) else ids[i])
        i += 2 if (ids[i], ids[i + 1]) == tuple(pair) else 1
    return out


def _weighted(wc):
    counts = Counter()
    for w, n in wc.items():
        for pr in zip(w.encode(), w.encode()[1:]):
            counts[pr] += n
    return counts


def _top(counts):
    return min(counts, key=lambda pr: (-counts[pr], pr))


def _pad_right(seqs, pad_id):
    T = max(map(len, seqs))
    ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in seqs])
    return ids, ids.new_tensor([[0] * len(s) + [1] * (T - len(s)) for s in seqs]).bool()


def _pad_left(seqs, pad_id):
    T = max(map(len, seqs))
    ids = torch.tensor([[pad_id] * (T - len(s)) + s for s in seqs])
    return ids, ids.new_tensor([[1] * (T - len(s)) + [0] * len(s) for s in seqs]).bool()


@pytest.mark.parametrize("exercise,mistake,wrong", PLANTED, ids=[f"{e}:{m}" for e, m, _ in PLANTED])
def test_planted_mistake_fails_with_its_hint(exercise, mistake, wrong):
    with pytest.raises(AssertionError) as info:
        check(exercise, wrong)
    assert f"Hint: {hint(exercise, mistake)}" in str(info.value), str(info.value)


def test_every_known_mistake_is_planted():
    planted = {(e, m) for e, m, _ in PLANTED}
    known = {(ex.name, m.name) for ex in EXERCISES.values() for m in ex.mistakes}
    assert planted == known
    for ex in EXERCISES.values():
        assert len(ex.mistakes) >= 2, ex.name
        assert len({m.hint for m in ex.mistakes}) == len(ex.mistakes), f"{ex.name}: two hints are equal"


def perturbed(value, how: str):
    "The same structure and shape with different values (None if `value` has no values to change)."
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return None
        if value.dtype == torch.bool:
            return ~value if how == "random" else value.flatten().logical_xor(
                torch.arange(value.numel()) == 0).reshape(value.shape)
        if how == "random":
            return torch.rand_like(value.double()).to(value.dtype) + 0.01
        return value + 1e-3 * (torch.arange(value.numel()) == 0).reshape(value.shape).to(value.dtype)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + (1 if isinstance(value, int) else 1e-3)
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            new = perturbed(item, how)
            if new is not None:
                return type(value)([*value[:i], new, *value[i + 1:]])
    return None


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_and_batched_forms_pass(name, capsys):
    ex = EXERCISES[name]
    check(name, ex.reference)
    if ex.batched is not None:
        check(name, ex.batched)
    assert capsys.readouterr().out.count("correct on all") == 1 + (ex.batched is not None)


@pytest.mark.parametrize("name", list(EXERCISES))
@pytest.mark.parametrize("how", ["slightly", "random"])
def test_right_shape_wrong_values_never_passes(name, how):
    ref = EXERCISES[name].reference
    with pytest.raises(AssertionError):
        check(name, lambda *args: perturbed(ref(*args), how))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_one_wrong_case_is_enough_to_fail(name):
    ex = EXERCISES[name]
    for i, case in enumerate(ex.cases()):
        if perturbed(ex.reference(*case.args), "slightly") is None:
            continue  # nothing to get wrong (an empty answer)
        calls = []

        def candidate(*args):
            calls.append(1)
            answer = ex.reference(*args)
            return perturbed(answer, "slightly") if len(calls) == i + 1 else answer
        with pytest.raises(AssertionError, match=rf"wrong on 1 of"):
            check(name, candidate)


def test_checks_are_fast():
    slowest = {}
    for name, ex in EXERCISES.items():
        check(name, ex.reference)  # warm up
        start = time.perf_counter()
        check(name, ex.reference)
        with pytest.raises(AssertionError):  # a wrong answer: every known mistake is run too
            check(name, lambda *args: perturbed(ex.reference(*args), "random"))
        slowest[name] = time.perf_counter() - start
    assert max(slowest.values()) < 1.0, slowest


def test_stub_errors_and_unknown_names():
    def stub(*args):
        raise NotImplementedError("your code here")
    with pytest.raises(NotImplementedError):
        check("attention", stub)
    with pytest.raises(KeyError, match="no exercise"):
        check("no such exercise", stub)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        check("layer_norm", lambda *args: 1 / 0)


def test_the_issues_mistakes_are_all_caught():
    "The mistakes the course promises to recognise, by exercise."
    promised = {"layer_norm": "eps outside the sqrt", "rms_norm": "eps outside the sqrt",
                "attention": ["softmax over rows", "mask transposed", "no scaling", "bias on the wrong axis"],
                "causal_mask": ["transposed", "off by one"], "sinusoid": "positions from 0",
                "next_token_loss": "first position left out", "mlm_loss": "all positions",
                "temperature": "p to the tau", "cached_attention": "cache offset"}
    planted = {(e, m) for e, m, _ in PLANTED}
    for exercise, mistakes in promised.items():
        for m in [mistakes] if isinstance(mistakes, str) else mistakes:
            assert (exercise, m) in planted


@pytest.mark.parametrize("name", list(EXERCISES))
def test_an_answer_that_always_fails_or_returns_nothing_gets_no_hint(name):
    for answer, says in [(lambda *args: 1 / 0, "raised ZeroDivisionError"), (lambda *args: None, "returned None")]:
        with pytest.raises(AssertionError) as info:
            check(name, answer)
        assert "No known mistake matches" in str(info.value) and says in str(info.value)
