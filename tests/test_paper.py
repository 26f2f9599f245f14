"""The generated pages (notation, paper-to-code index, errata) come from records that must match the code."""
from pathlib import Path

import pytest

import types

from transformer_nb import components
from transformer_nb.paper import DEVIATIONS, NOTATION, algorithms, resolve
from transformer_nb.registry import algorithm, notebook_of
from transformer_nb.registry import algorithms as tagged_in

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted({c for s in NOTATION for c in s.code}))
def test_every_code_name_in_the_notation_exists(name):
    resolve(name)


def test_resolve_rejects_names_that_do_not_exist():
    with pytest.raises(AttributeError):
        resolve("components.LayerNorm.delta")
    with pytest.raises(AttributeError):
        resolve("components.no_such_function")


def test_every_registered_algorithm_points_at_real_code():
    entries = algorithms()
    assert [e.number for e in entries] == sorted(e.number for e in entries)
    for e in entries:
        assert e.reference.paper_algorithm == e
        resolve(e.batched)
        notebook = notebook_of(e.reference)
        assert notebook.startswith(f"{e.chapter:02d}") and (ROOT / "nbs" / f"{notebook}.ipynb").exists(), notebook


def test_all_fifteen_algorithms_are_registered():
    assert [e.number for e in algorithms()] == list(range(1, 16))


def test_algorithm_numbers_outside_the_paper_are_refused():
    with pytest.raises(ValueError, match="Algorithms 1-15"):
        algorithm(16, "Nope", batched="components.LayerNorm")


def test_every_deviation_names_an_existing_chapter():
    for d in DEVIATIONS:
        assert (ROOT / "nbs" / f"{d.where.split('#')[0]}.ipynb").exists(), d.where


def test_notebook_of_finds_the_source_notebook():
    from transformer_nb.components import LayerNorm, attention_ref
    assert notebook_of(attention_ref) == "05_components"
    assert notebook_of(LayerNorm) == "05_components"
    assert notebook_of(resolve("architectures.DTransformer")) == "06_architectures"


def test_a_notebook_copy_does_not_change_the_package_entries():
    before = algorithms()

    @algorithm(1, "Token embedding", batched="components.TokenEmbedding")
    def token_embedding_ref(v, W_e):  # what running Chapter 5's cell in a notebook defines, in __main__
        return W_e[:, v]
    token_embedding_ref.__module__ = "__main__"
    assert algorithms() == before and before[0].reference is components.token_embedding_ref


def test_algorithms_counts_only_what_a_module_defines():
    from transformer_nb import architectures, training
    assert [e.number for e in tagged_in(training)] == [11, 12, 13]  # not the forms training imports
    assert [e.number for e in tagged_in(architectures)] == [8, 9, 10]
    clash = types.ModuleType("clash")
    for name in ("a", "b"):
        fn = algorithm(3, "Attention", batched="components.attention")(lambda: None)
        fn.__module__, fn.__name__ = "clash", name
        setattr(clash, name, fn)
    with pytest.raises(ValueError, match="tagged twice"):
        tagged_in(clash)
