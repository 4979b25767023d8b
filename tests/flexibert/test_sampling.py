import json
import math
from collections import Counter

import numpy as np
import pytest

from flexibert import ArchSpec, DesignSpace, decode, embed, model_hash
from flexibert._sampling import (
    MODEL_TYPES,
    SAMPLING_METHODS,
    diversity_report,
    model_type,
    normalized_embeddings,
    sample_architectures,
)

BERT_TINY = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
BERT_MINI = {"l": 4, "o": [["sa_sdp_64"] * 4] * 4, "h": [256] * 4, "f": [[1024]] * 4}
BERT_BASE = {"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12}

TINY_SPACE = DesignSpace(
    encoder_layers=(1, 2),
    hidden_size=(128,),
    attention_heads=(2, 4),
    operation_types=("sa_sdp",),
    feed_forward_depth=(1,),
    feed_forward_dims=(256,),
)


def hashes(specs):
    return [model_hash(spec) for spec in specs]


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_samplers_return_n_distinct_valid_specs(method):
    space = DesignSpace.default()
    specs = sample_architectures(12, method=method, seed=3)
    assert len(specs) == 12
    assert len(set(hashes(specs))) == 12
    for spec in specs:
        assert isinstance(spec, ArchSpec)
        assert space.contains(spec)
        assert decode(embed(spec)) == spec


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_samplers_are_deterministic_per_seed_and_differ_across_seeds(method):
    first = hashes(sample_architectures(6, method=method, seed=7))
    assert hashes(sample_architectures(6, method=method, seed=7)) == first
    assert hashes(sample_architectures(6, method=method, seed=8)) != first
    generator_draw = hashes(sample_architectures(6, method=method, seed=np.random.default_rng(7)))
    assert generator_draw == hashes(sample_architectures(6, method=method, seed=np.random.default_rng(7)))


def test_generator_state_advances_between_calls():
    rng = np.random.default_rng(0)
    assert hashes(sample_architectures(4, "random", seed=rng)) != hashes(sample_architectures(4, "random", seed=rng))


@pytest.mark.parametrize("seed", [None, 1.5, "0", True])
def test_seed_must_be_int_or_generator(seed):
    with pytest.raises(TypeError, match="seed"):
        sample_architectures(2, seed=seed)


@pytest.mark.parametrize("n", [0, -1, 2.0])
def test_n_must_be_positive_int(n):
    with pytest.raises(ValueError, match="n must be"):
        sample_architectures(n)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown sampling method 'grid'"):
        sample_architectures(2, method="grid")


def layer_head_counts(specs):
    return Counter(heads for spec in specs for heads in spec.head_counts)


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_stratified_sampling_yields_every_head_count(method):
    counts = layer_head_counts(sample_architectures(16, method=method, seed=0))
    assert set(counts) == {2, 4, 8, 12}
    # Each head count is drawn with probability 1/4 per layer.
    total = sum(counts.values())
    assert all(count > total / 8 for count in counts.values())


def test_unstratified_sampling_is_dominated_by_12_heads():
    counts = layer_head_counts(sample_architectures(32, method="random", seed=0, stratify_heads=False))
    assert counts[12] / sum(counts.values()) > 0.7


def test_lhs_split_gives_narrow_then_wide_halves():
    specs = sample_architectures(16, method="lhs_split", seed=0)
    widths = [model_type(spec).split("_")[1] for spec in specs]
    assert widths == ["narrow"] * 8 + ["wide"] * 8
    reference_like = sample_architectures(16, method="lhs_split", seed=0, stratify_heads=False)
    assert [model_type(spec).split("_")[1] for spec in reference_like] == widths


@pytest.mark.parametrize("method", ["lhs", "hammersly"])
def test_layer_counts_are_balanced(method):
    # 12 points over 6 layer counts: a Latin hypercube and the i/n coordinate give each count twice.
    counts = Counter(spec.num_layers for spec in sample_architectures(12, method=method, seed=5))
    assert counts == {layers: 2 for layers in (2, 4, 6, 8, 10, 12)}


@pytest.mark.parametrize("method", [m for m in SAMPLING_METHODS if m != "lhs_split"])
def test_small_space_is_exhausted_without_duplicates(method):
    specs = sample_architectures(TINY_SPACE.size, method=method, seed=1, space=TINY_SPACE)
    assert len(set(hashes(specs))) == TINY_SPACE.size == 6
    assert all(TINY_SPACE.contains(spec) for spec in specs)


def test_too_many_samples_are_refused():
    with pytest.raises(ValueError, match="cannot draw 7 distinct architectures"):
        sample_architectures(7, space=TINY_SPACE)
    with pytest.raises(ValueError, match="narrow"):
        sample_architectures(6, method="lhs_split", space=TINY_SPACE)


def test_custom_space_is_respected():
    space = DesignSpace.from_dict({**DesignSpace.default().to_dict(), "encoder_layers": [2, 4], "hidden_size": [256]})
    specs = sample_architectures(8, method="sobol", seed=0, space=space)
    assert {spec.num_layers for spec in specs} <= {2, 4}
    assert {h for spec in specs for h in spec.hidden_sizes} == {256}
    assert len(embed(specs[0], space)) == space.embedding_length == 13


# -- model type -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_dict, expected",
    [
        (BERT_TINY, "shallow_narrow"),
        (BERT_MINI, "shallow_narrow"),
        (BERT_BASE, "deep_wide"),
        ({"l": 8, "o": [["c_9_128"] * 4] * 8, "h": [512] * 8, "f": [[256]] * 8}, "deep_narrow"),
        ({"l": 6, "o": [["l_dft_64"] * 2] * 5 + [["l_dct_64"] * 8], "h": [128] * 5 + [512], "f": [[256]] * 6},
         "shallow_wide"),
    ],
)
def test_model_type_rule(model_dict, expected):
    assert model_type(ArchSpec.from_model_dict(model_dict)) == expected
    assert model_type(model_dict) == expected


def test_model_type_matches_every_row_of_the_public_data(shared_data):
    files = sorted((shared_data / "protran").glob("*.json")) + sorted((shared_data / "flexibert").glob("*.json"))
    assert files, f"no data files under {shared_data}"
    checked = Counter()
    for path in files:
        for key, row in json.loads(path.read_text()).items():
            spec = ArchSpec.from_model_dict(row["model_dict"])
            assert model_type(spec) == row["model_type"], f"{path.name} {key}"
            checked[row["model_type"]] += 1
    assert set(checked) == set(MODEL_TYPES)
    assert sum(checked.values()) == 663


# -- diversity report -----------------------------------------------------------------------------


def test_diversity_report_shape():
    specs = sample_architectures(10, method="halton", seed=2)
    report = diversity_report(specs)
    assert report["n"] == 10
    assert report["distances"].shape == (45,)
    assert report["min"] <= report["median"] <= report["max"]
    assert report["min"] <= report["mean"] <= report["max"]
    assert report["min"] > 0  # distinct architectures have distinct embeddings
    assert set(report["model_types"]) == set(MODEL_TYPES)
    assert sum(report["model_types"].values()) == 10
    assert sum(report["layers"].values()) == 10
    assert sum(report["heads"].values()) == sum(spec.num_layers for spec in specs)


def test_diversity_distance_uses_embeddings_normalised_by_upper_bounds():
    tiny, mini = ArchSpec.from_model_dict(BERT_TINY), ArchSpec.from_model_dict(BERT_MINI)
    normalised = normalized_embeddings([tiny, mini])
    assert normalised.shape == (2, 37)
    assert normalised.min() >= 0 and normalised.max() <= 1
    # Tiny [0, 0, 1, 0, 0, 1, 0, ...] vs Mini [1, 1, 2, 28] * 4 layers; upper bounds 5, 3, 257, 21804.
    squares = (1 / 5) ** 2 + 4 * (1 / 3) ** 2 + 4 * (28 / 21804) ** 2 + 2 * (1 / 257) ** 2 + 2 * (2 / 257) ** 2
    assert diversity_report([tiny, mini])["max"] == pytest.approx(math.sqrt(squares))


def test_diversity_report_needs_two_architectures():
    with pytest.raises(ValueError, match="at least 2"):
        diversity_report([ArchSpec.from_model_dict(BERT_TINY)])
