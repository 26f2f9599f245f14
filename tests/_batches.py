"""A helper shared by the test files (not a test module itself)."""
import torch


def padded_batch(lengths, N_V, seed):
    "Random token sequences of the given lengths, right-padded with id 0, and the padding mask (True = padding)."
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(0, N_V, (len(lengths), T), generator=g)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return ids.masked_fill(pad, 0), pad
