"""Chapter 10's speed check: a Llama-style DTransformer (loaded from a Hugging Face LlamaForCausalLM built
from a random config, so both hold the same weights) against that LlamaForCausalLM, side by side.

    python benchmarks/bench_llama.py            # this comparison alone (bench.py also runs it)
    python benchmarks/bench_llama.py --quick    # a smoke test

Measures training throughput (forward + backward + AdamW) and greedy generation with the cache (ours:
`generate`; theirs: `generate`), alternating between the two models so that a change in the machine's load
affects both, and prints the medians and the ratios. Downloads nothing.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from transformer_nb.families import from_hf


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
    "This comparison alone (bench.py runs it with the rest and records it in RESULTS.md)."
    import bench  # beside this file; it imports the pair from here
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = bench.llama(*((1, 1, 2, 64, 16) if args.quick else (5, 3, 8, 256, 128)))
    print(f"{res['setup']}\n"
          f"training tokens/s: ours {res['train_tokens_per_s']['ours']:.0f}, LlamaForCausalLM "
          f"{res['train_tokens_per_s']['hf']:.0f}, ratio {res['train_ratio']:.2f} (target >= 1.1)\n"
          f"generation tokens/s: ours {res['gen_tokens_per_s']['ours']:.0f}, generate "
          f"{res['gen_tokens_per_s']['hf']:.0f}, ratio {res['gen_ratio']:.2f} (target >= 1.2)")
    return res


if __name__ == "__main__":
    main()
