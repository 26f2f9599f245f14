"""What the tests of Chapter 10's families share: a Hugging Face model built from a small random config
(never downloaded) with every parameter moved away from its initial value, a left-padded batch, and the
check that two models hold the same tensors."""
import torch

DROP = object()  # a field the family's config does not have


def random_hf_model(config: str, model: str, fields: dict, dtype=torch.float32, seed: int = 0,
                    std: float = 0.15, keep=lambda name: False):
    """transformers.<model>(<config>(**fields)) with weights of order `std` (logits of order 1) and biases
    and norm scales moved from their initial 0 and 1; parameters named by `keep` stay as built."""
    import transformers
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in fields.items() if v is not DROP}
    hf = getattr(transformers, model)(getattr(transformers, config)(**kwargs))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if keep(name):
                continue
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return hf.to(dtype).eval()


def left_padded_batch(vocab_size: int, T: int):
    "Three rows of T ids, the second with 5 and the third with 2 padding tokens (id 0) on the left."
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab_size, (3, T), generator=g)
    padding = torch.zeros(3, T, dtype=torch.bool)
    padding[1, :5] = padding[2, :2] = True
    return ids.masked_fill(padding, 0), padding


def assert_same_tensors(theirs, mine) -> None:
    "The two models' state dicts: the same keys, every tensor bit for bit."
    a, b = theirs.state_dict(), mine.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
