"""Chapter 10's speed check: a Llama-style DTransformer (loaded from a Hugging Face LlamaForCausalLM built
from a random config, so both hold the same weights) against that LlamaForCausalLM, side by side.

    python benchmarks/bench_llama.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_llama.py --quick    # a smoke test

Measures training throughput (forward + backward + AdamW) and greedy generation with the cache (ours:
`generate`; theirs: `generate`), alternating between the two models so that a change in the machine's load
affects both, and prints the medians and the ratios. Downloads nothing.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from transformer_nb.families import from_hf
from transformer_nb.inference import generate
from transformer_nb.practical import time_median


def llama_pair(L=6, d_e=384, H=6, H_kv=2, d_mlp=1024, N_V=65, l_max=512):
    "A random LlamaForCausalLM and our DTransformer holding the same weights."
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=N_V, hidden_size=d_e, intermediate_size=d_mlp, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=H_kv, max_position_embeddings=l_max,
        bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = transformers.LlamaForCausalLM(cfg)
    ours = from_hf(hf)
    for m in ours.modules():  # our own norm precision (from_hf copies Hugging Face's float32)
        if hasattr(m, "compute_dtype"):
            m.compute_dtype = None
    return ours, hf


def train_step(model, x, logits_of):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        logits = logits_of(model, x)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeats, rounds, B, T, new = (1, 1, 2, 64, 16) if args.quick else (3, 3, 8, 256, 128)
    ours, hf = llama_pair()
    x = torch.randint(0, 65, (B, T))
    steps = {"ours": train_step(ours.train(), x, lambda m, x: m(x)),
             "hf": train_step(hf.train(), x, lambda m, x: m(x).logits)}
    train = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            train[k].append(time_median(fn, repeats))
    ours.eval(), hf.eval()
    prompt = [list(range(1, 17))]

    def hf_generate():
        with torch.no_grad():
            hf.generate(torch.tensor(prompt), max_new_tokens=new, do_sample=False, pad_token_id=0)
    gens = {"ours": lambda: generate(ours, prompt, new, greedy=True), "hf": hf_generate}
    gen = {k: [] for k in gens}
    for _ in range(rounds):
        for k, fn in gens.items():
            gen[k].append(time_median(fn, repeats))
    t = {k: B * T / statistics.median(v) for k, v in train.items()}
    g = {k: new / statistics.median(v) for k, v in gen.items()}
    print(f"training tokens/s: ours {t['ours']:.0f}, LlamaForCausalLM {t['hf']:.0f}, "
          f"ratio {t['ours'] / t['hf']:.2f} (target >= 1.1)")
    print(f"generation tokens/s: ours {g['ours']:.0f}, generate {g['hf']:.0f}, "
          f"ratio {g['ours'] / g['hf']:.2f} (target >= 1.2)")
    return t, g


if __name__ == "__main__":
    main()
