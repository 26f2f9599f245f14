"""Benchmark transformer_nb's DTransformer against Hugging Face GPT-2 of the same configuration.

One process, one run: every ratio compares numbers measured side by side, alternating between the two
models so that a change in the machine's load affects both. Reports medians over repeats after warm-up.

    python benchmarks/bench.py            # full run (a few minutes on 2 CPU cores), writes RESULTS.md
    python benchmarks/bench.py --quick    # fewer repeats, for a smoke test

Measures: the machine's peak fp32 matmul rate; training throughput (forward + backward + AdamW step) at
two configurations with model FLOPs utilisation against that peak; generation throughput with and without
our KV cache and Hugging Face's `generate` with its cache; peak memory of one training step; and Chapter 10's
Llama-style configuration against Hugging Face's `LlamaForCausalLM` holding the same weights (training and
cached generation).
Needs `transformers` (a development dependency); builds every model from a config, downloads nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from transformer_nb.architectures import DTransformer, DTransformerConfig
from transformer_nb.inference import generate
from transformer_nb.practical import saved_activation_bytes, time_median

from bench_llama import llama_pair, train_step  # Chapter 10's pair (beside this file)


@dataclass
class Setting:
    name: str
    L: int
    H: int
    d_e: int
    T: int  # context length
    B: int  # batch size
    N_V: int = 65


SETTINGS = [Setting("tiny", L=4, H=4, d_e=128, T=128, B=16), Setting("shakespeare-char", L=6, H=6, d_e=384, T=256, B=8)]


# --- the two models ----------------------------------------------------------------------------------------

def ours(s: Setting, l_max: int | None = None) -> DTransformer:
    cfg = DTransformerConfig(N_V=s.N_V, l_max=l_max or s.T, d_e=s.d_e, H=s.H, L=s.L, activation="gelu_tanh")
    return DTransformer(cfg)


def hugging_face(s: Setting, l_max: int | None = None):
    import transformers
    cfg = transformers.GPT2Config(vocab_size=s.N_V, n_positions=l_max or s.T, n_embd=s.d_e, n_layer=s.L, n_head=s.H,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def logits_of(model, x):
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


# --- measurements ------------------------------------------------------------------------------------------

def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    return time_median(fn, repeats=repeats, warmup=warmup)  # Chapter 8's timer: warm-up, then the median


def peak_matmul_gflops(repeats: int) -> dict:
    "The best fp32 matmul rate over square sizes: the machine's practical peak."
    rates = {}
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rates[n] = 2 * n**3 / median_seconds(lambda: a @ b, repeats, warmup=3) / 1e9
    return {"gflops": max(rates.values()), "by_size": rates}


def train_step_fn(model, s: Setting):
    "A closure doing one training step: forward, cross-entropy, backward, AdamW."
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s.N_V, (s.B, s.T), generator=g)
    y = torch.randint(0, s.N_V, (s.B, s.T), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    model.train()

    def step():
        loss = F.cross_entropy(logits_of(model, x).reshape(-1, s.N_V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def model_flops_per_token(s: Setting, n_params: int) -> float:
    "Training FLOPs per token: 6 per non-embedding parameter plus attention's 12 L T d (PaLM's convention)."
    non_embedding = n_params - s.N_V * s.d_e - s.T * s.d_e
    return 6 * non_embedding + 12 * s.L * s.T * s.d_e


def training(s: Setting, repeats: int, rounds: int, peak: float) -> dict:
    torch.manual_seed(0)
    models = {"ours": ours(s), "hf": hugging_face(s)}
    steps = {k: train_step_fn(m, s) for k, m in models.items()}
    times = {k: [] for k in models}
    for _ in range(rounds):  # alternate, so that load changes hit both models alike
        for k in models:
            times[k].append(median_seconds(steps[k], repeats))
    result = {}
    for k, m in models.items():
        t = statistics.median(times[k])
        n_params = sum(p.numel() for p in m.parameters())
        flops = model_flops_per_token(s, n_params) * s.B * s.T / t
        result[k] = {"tokens_per_s": s.B * s.T / t, "step_ms": 1e3 * t, "mfu": flops / (peak * 1e9),
                     "params": n_params}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["hf"]["tokens_per_s"]
    return result


def peak_memory_mb(s: Setting) -> dict:
    """The memory a training step needs at its peak (the end of the forward pass), in MiB.

    Counted exactly rather than read off the process: the activations autograd saves for the backward pass
    (each storage once, the parameters themselves excluded), plus the parameters, their gradients and
    AdamW's two moment estimates. (On CPU the process's resident size says more about the allocator's
    caching than about the model.)"""
    out = {}
    x = torch.randint(0, s.N_V, (s.B, s.T), generator=torch.Generator().manual_seed(0))
    loss = lambda model, x: F.cross_entropy(logits_of(model, x).reshape(-1, s.N_V), x.reshape(-1))
    for kind in ("ours", "hf"):
        torch.manual_seed(0)
        model = ours(s) if kind == "ours" else hugging_face(s)
        activations = saved_activation_bytes(model, loss, x)  # Chapter 8: storages saved for backward
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        out[kind] = {"activations_mib": activations / 2**20, "params_grads_adam_mib": 4 * param_bytes / 2**20,
                     "step_peak_mib": (activations + 4 * param_bytes) / 2**20}
    return out


def generation(s: Setting, new_tokens: int, prompt_len: int, repeats: int) -> dict:
    "Greedy generation of new_tokens tokens from one prompt of prompt_len tokens, tokens per second."
    torch.manual_seed(0)
    l_max = prompt_len + new_tokens  # room for the whole output, so that no window slides
    mine, theirs = ours(s, l_max).eval(), hugging_face(s, l_max).eval()
    prompt = torch.randint(0, s.N_V, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    runs = {
        "ours, KV cache": lambda: generate(mine, prompt, new_tokens, greedy=True, use_cache=True),
        "ours, no cache": lambda: generate(mine, prompt, new_tokens, greedy=True, use_cache=False),
        "hf generate, cache": lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                      do_sample=False, use_cache=True),
    }
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):  # alternate, so that load changes hit the three alike
            for k, fn in runs.items():
                times[k].append(median_seconds(fn, 1, warmup=0))
    first = {k: statistics.median(t) for k, t in times.items()}
    result = {k: {"tokens_per_s": new_tokens / t, "seconds": t} for k, t in first.items()}
    result["cache_vs_hf"] = result["ours, KV cache"]["tokens_per_s"] / result["hf generate, cache"]["tokens_per_s"]
    result["cache_vs_no_cache"] = result["ours, KV cache"]["tokens_per_s"] / result["ours, no cache"]["tokens_per_s"]
    return result


def llama(repeats: int, rounds: int, B: int, T: int, new_tokens: int) -> dict:
    "A Llama-style DTransformer against LlamaForCausalLM with the same weights: training and generation."
    mine, theirs = llama_pair()
    x = torch.randint(0, 65, (B, T), generator=torch.Generator().manual_seed(0))
    steps = {"ours": train_step(mine.train(), x, lambda m, x: m(x)),
             "hf": train_step(theirs.train(), x, lambda m, x: m(x).logits)}
    train = {k: [] for k in steps}
    for _ in range(rounds):  # alternate, so that load changes hit both models alike
        for k, fn in steps.items():
            train[k].append(median_seconds(fn, repeats))
    mine.eval(), theirs.eval()
    prompt = torch.arange(1, 17)[None]
    gens = {"ours": lambda: generate(mine, prompt, new_tokens, greedy=True),
            "hf": lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                          max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                          do_sample=False, pad_token_id=0)}
    gen = {k: [] for k in gens}
    with torch.no_grad():
        for _ in range(rounds):
            for k, fn in gens.items():
                gen[k].append(median_seconds(fn, repeats, warmup=1))
    out = {"train_tokens_per_s": {k: B * T / statistics.median(v) for k, v in train.items()},
           "gen_tokens_per_s": {k: new_tokens / statistics.median(v) for k, v in gen.items()},
           "setup": f"L=6, d_e=384, H=6, H_kv=2, d_mlp=1024, N_V=65; training B={B}, T={T}; "
                    f"generation batch 1, 16-token prompt, {new_tokens} new tokens, greedy"}
    out["train_ratio"] = out["train_tokens_per_s"]["ours"] / out["train_tokens_per_s"]["hf"]
    out["gen_ratio"] = out["gen_tokens_per_s"]["ours"] / out["gen_tokens_per_s"]["hf"]
    return out


# --- report ------------------------------------------------------------------------------------------------

TARGETS = {"train_ratio": 1.15, "mfu_large": 0.75, "gen_vs_hf": 1.2, "gen_vs_no_cache": 5.0,
           "llama_train": 1.1, "llama_gen": 1.2}


def machine() -> dict:
    import transformers
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": date.today().isoformat(), "cpu": cpu, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def markdown(res: dict) -> str:
    m, peak = res["machine"], res["peak"]["gflops"]
    lines = [f"Measured on {m['date']}: {m['cpu']}, {m['threads']} threads, Python {m['python']}, "
             f"torch {m['torch']}, transformers {m['transformers']}. Peak fp32 matmul: {peak:.1f} GFLOP/s.", "",
             "| Training (fwd + bwd + AdamW) | ours tokens/s | HF GPT-2 tokens/s | ours / HF | ours MFU | HF MFU |",
             "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        r = res["training"][s.name]
        lines.append(f"| {s.name} (L={s.L}, H={s.H}, d_e={s.d_e}, T={s.T}, B={s.B}) | {r['ours']['tokens_per_s']:.0f} "
                     f"| {r['hf']['tokens_per_s']:.0f} | {r['ratio']:.2f}× | {100 * r['ours']['mfu']:.0f}% "
                     f"| {100 * r['hf']['mfu']:.0f}% |")
    g = res["generation"]
    lines += ["", f"| Generation ({res['generation_setup']}) | tokens/s |", "|---|---|"]
    for k in ("ours, KV cache", "ours, no cache", "hf generate, cache"):
        lines.append(f"| {k} | {g[k]['tokens_per_s']:.0f} |")
    lines += [f"| ours with cache / HF | {g['cache_vs_hf']:.2f}× |",
              f"| ours with cache / ours without | {g['cache_vs_no_cache']:.1f}× |", "",
              "| Peak memory of a training step (shakespeare-char) | ours | HF GPT-2 |", "|---|---|---|"]
    mem = res["memory"]
    for key, label in (("activations_mib", "activations saved for backward"),
                       ("params_grads_adam_mib", "parameters, gradients, AdamW moments"),
                       ("step_peak_mib", "peak of the step (the sum)")):
        lines.append(f"| {label} (MiB) | {mem['ours'][key]:.1f} | {mem['hf'][key]:.1f} |")
    ll = res["llama"]
    lines += ["", f"| Llama-style vs LlamaForCausalLM ({ll['setup']}) | ours | HF | ours / HF |",
              "|---|---|---|---|",
              f"| training tokens/s | {ll['train_tokens_per_s']['ours']:.0f} | {ll['train_tokens_per_s']['hf']:.0f} "
              f"| {ll['train_ratio']:.2f}× |",
              f"| generation tokens/s (cache) | {ll['gen_tokens_per_s']['ours']:.0f} "
              f"| {ll['gen_tokens_per_s']['hf']:.0f} | {ll['gen_ratio']:.2f}× |"]
    t = res["targets"]
    lines += ["", "| Target | Measured | Met |", "|---|---|---|"]
    for name, (value, goal) in t.items():
        lines.append(f"| {name} ≥ {goal} | {value:.2f} | {'yes' if value >= goal else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test, not for quoting)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                    help="where to write the markdown results (the JSON goes beside it)")
    args = ap.parse_args(argv)
    repeats, rounds = (2, 1) if args.quick else (5, 3)
    res = {"machine": machine(), "peak": peak_matmul_gflops(repeats)}
    print(f"peak fp32 matmul {res['peak']['gflops']:.1f} GFLOP/s", flush=True)
    res["training"] = {}
    for s in SETTINGS:
        res["training"][s.name] = r = training(s, repeats, rounds, res["peak"]["gflops"])
        print(f"training {s.name}: ours {r['ours']['tokens_per_s']:.0f} tok/s, HF {r['hf']['tokens_per_s']:.0f} "
              f"tok/s, ratio {r['ratio']:.2f}", flush=True)
    big = SETTINGS[1]
    new, prompt = (64, 16) if args.quick else (256, 16)
    res["generation_setup"] = f"{big.name}, batch 1, {prompt}-token prompt, {new} new tokens, greedy"
    res["generation"] = generation(big, new, prompt, repeats=1 if args.quick else 3)
    print(f"generation: {json.dumps({k: round(v['tokens_per_s'], 1) for k, v in res['generation'].items() if isinstance(v, dict)})}",
          flush=True)
    res["memory"] = peak_memory_mb(big)
    res["llama"] = llama(repeats, rounds, *((2, 64, 32) if args.quick else (8, 256, 128)))
    print(f"llama: training ratio {res['llama']['train_ratio']:.2f}, generation ratio "
          f"{res['llama']['gen_ratio']:.2f}", flush=True)
    res["targets"] = {
        "training ours/HF, tiny": (res["training"]["tiny"]["ratio"], TARGETS["train_ratio"]),
        "training ours/HF, shakespeare-char": (res["training"][big.name]["ratio"], TARGETS["train_ratio"]),
        "MFU vs measured peak, shakespeare-char": (res["training"][big.name]["ours"]["mfu"], TARGETS["mfu_large"]),
        "generation with cache / HF": (res["generation"]["cache_vs_hf"], TARGETS["gen_vs_hf"]),
        "generation with cache / without": (res["generation"]["cache_vs_no_cache"], TARGETS["gen_vs_no_cache"]),
        "Llama-style training ours/HF": (res["llama"]["train_ratio"], TARGETS["llama_train"]),
        "Llama-style generation with cache ours/HF": (res["llama"]["gen_ratio"], TARGETS["llama_gen"]),
    }
    table = markdown(res)
    print(table)
    if not args.quick:
        args.out.write_text("# Benchmark results\n\nReproduce with `python benchmarks/bench.py` (in the dev "
                            "environment).\n\n" + table + "\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    return res


if __name__ == "__main__":
    main()
