"""The vectorised feature table: bit for bit the per-architecture formulas, for every feature set."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flexibert import (
    ArchSpec,
    DesignSpace,
    InvalidArchitectureError,
    LayerSpec,
    activation_memory_bytes,
    count_parameters,
    decode,
    embed,
    estimate_flops,
    sample_architectures,
)
from flexibert._spec import conv_kernel_size
from flexibert.embeddings import repair_embeddings
from flexibert.feature_table import (
    ANALYTIC_FEATURE_NAMES,
    COST_FEATURE_NAMES,
    FEATURE_SETS,
    FeatureTable,
    feature_matrix,
    feature_names,
    feature_table,
    spec_columns,
)
from protran.surrogates import featurize

SPACE = DesignSpace.default()
WORKLOADS = [(1, 128), (4, 64)]
OUTSIDE = [  # not in the default space: a kernel size, a head count and a feed-forward width it lacks
    ArchSpec((LayerSpec(256, ("sa_sdp", "c_7", "c_7", "l_dft"), (256,)),)),
    ArchSpec((LayerSpec(768, ("sa_sdp",) * 3, (3072,)), LayerSpec(128, ("l_dct", "l_dct"), (256,)),
              LayerSpec(128, ("c_5",), (100,)))),
]


# -- the reference: the feature sets as first written, one architecture at a time, in plain Python ----

ANALYTIC = ("log10_params", "log10_flops", "log10_activation_bytes", "num_layers", "mean_hidden_size",
            "max_hidden_size", "total_heads", "heads_sa_sdp", "heads_sa_wma", "heads_l_dft", "heads_l_dct",
            "heads_conv", "mean_conv_kernel", "total_ff_width", "mean_ff_depth")
COSTS = ("params_millions", "gflops", "activation_mb", "num_layers", "total_heads", "total_hidden_size")


def _analytic_row(spec, batch_size, seq_len):
    params, flops = count_parameters(spec), estimate_flops(spec, batch_size, seq_len)
    memory = activation_memory_bytes(spec, batch_size, seq_len)
    ops = [op for layer in spec.layers for op in layer.ops]
    kernels = [conv_kernel_size(op) for op in ops if op.startswith("c_")]
    hidden = spec.hidden_sizes
    values = {
        "log10_params": math.log10(params), "log10_flops": math.log10(flops),
        "log10_activation_bytes": math.log10(memory), "num_layers": spec.num_layers,
        "mean_hidden_size": sum(hidden) / len(hidden), "max_hidden_size": max(hidden), "total_heads": len(ops),
        **{f"heads_{op}": ops.count(op) for op in ("sa_sdp", "sa_wma", "l_dft", "l_dct")},
        "heads_conv": len(kernels), "mean_conv_kernel": sum(kernels) / len(kernels) if kernels else 0.0,
        "total_ff_width": sum(sum(layer.ff_dims) for layer in spec.layers),
        "mean_ff_depth": sum(len(layer.ff_dims) for layer in spec.layers) / spec.num_layers,
    }
    return [float(values[name]) for name in ANALYTIC]


def _cost_row(spec, batch_size, seq_len):
    return [count_parameters(spec) / 1e6, estimate_flops(spec, batch_size, seq_len) / 1e9,
            activation_memory_bytes(spec, batch_size, seq_len) / 1e6, spec.num_layers,
            sum(layer.n_heads for layer in spec.layers), sum(spec.hidden_sizes)]


def _reference(specs, features, batch_size, seq_len):
    if features == "costs":
        return np.array([_cost_row(s, batch_size, seq_len) for s in specs], dtype=float)
    blocks = []
    if features in ("embedding", "both"):
        blocks.append(np.array([embed(s) for s in specs], dtype=float))
    if features in ("analytic", "both"):
        blocks.append(np.array([_analytic_row(s, batch_size, seq_len) for s in specs], dtype=float))
    return np.hstack(blocks)


def _assert_bit_equal(actual, expected):
    assert actual.dtype == expected.dtype == np.float64 and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


# -- tests ----------------------------------------------------------------------------------------------


def test_feature_names_are_the_first_ones_in_their_order():
    assert ANALYTIC_FEATURE_NAMES == ANALYTIC and COST_FEATURE_NAMES == COSTS
    assert FEATURE_SETS == ("embedding", "analytic", "both", "costs")
    assert feature_names("both") == [f"embedding_{i}" for i in range(37)] + list(ANALYTIC)
    with pytest.raises(ValueError, match="unknown feature set"):
        feature_names("pixels")


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 128), (32, 64)])
def test_fast_features_equal_featurize_bit_for_bit(batch_size, seq_len):
    specs = sample_architectures(80, method="random", seed=batch_size)
    X = np.array([embed(spec) for spec in specs])
    table = FeatureTable(SPACE, batch_size, seq_len)
    for features in ("costs", "both"):
        assert np.array_equal(table.featurize(X, features),
                              featurize(specs, features=features, batch_size=batch_size, seq_len=seq_len))
    assert np.array_equal(table.columns(X)["params"], [count_parameters(spec) for spec in specs])


@pytest.fixture(scope="module")
def specs():
    return sample_architectures(300, method="random", seed=7)


@pytest.mark.parametrize(("batch_size", "seq_len"), WORKLOADS)
def test_every_feature_set_equals_the_per_architecture_formulas(specs, batch_size, seq_len):
    X = np.array([embed(spec) for spec in specs])
    table = feature_table(SPACE, batch_size, seq_len)
    columns = spec_columns(specs, batch_size, seq_len)
    for features in FEATURE_SETS:
        expected = _reference(specs, features, batch_size, seq_len)
        _assert_bit_equal(table.featurize(X, features), expected)
        _assert_bit_equal(featurize(specs, features=features, batch_size=batch_size, seq_len=seq_len), expected)
        _assert_bit_equal(feature_matrix(columns, features, X), expected)
        assert expected.shape[1] == len(feature_names(features))


@pytest.mark.parametrize(("batch_size", "seq_len"), WORKLOADS)
def test_table_columns_equal_the_per_architecture_columns(specs, batch_size, seq_len):
    table = feature_table(SPACE, batch_size, seq_len).columns(np.array([embed(spec) for spec in specs]))
    reference = spec_columns(specs, batch_size, seq_len)
    assert table.keys() == reference.keys()
    for name, values in table.items():
        assert values.dtype == np.int64 and np.array_equal(values, reference[name]), name


def test_architectures_outside_the_space_use_the_per_architecture_formulas():
    specs = OUTSIDE + sample_architectures(10, method="random", seed=10)
    for features in ("analytic", "costs"):
        expected = _reference(specs, features, 2, 64)
        _assert_bit_equal(featurize(specs, features=features, batch_size=2, seq_len=64), expected)
    for features in ("embedding", "both"):
        with pytest.raises(InvalidArchitectureError):
            featurize(specs, features=features)


def test_a_narrow_space_without_some_head_types(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text(
        "encoder_layers: [2, 4]\nhidden_size: [128, 256]\nattention_heads: [2, 4]\n"
        "operation_types: [sa_sdp, l_dft, c_5]\nfeed_forward_depth: [1, 2]\nfeed_forward_dims: [512, 1024]\n"
    )
    space = DesignSpace.from_yaml(path)
    specs = sample_architectures(40, method="random", seed=0, space=space)
    X = np.array([embed(spec, space) for spec in specs])
    table = feature_table(space, 2, 32)
    for features in ("analytic", "costs"):
        _assert_bit_equal(table.featurize(X, features), _reference(specs, features, 2, 32))
    assert table.featurize(X, "both").shape == (40, 13 + len(ANALYTIC))


def test_tables_are_kept_and_workloads_checked():
    assert feature_table(None, 3, 16) is feature_table(SPACE, 3, 16)
    assert feature_table(SPACE, 3, 16) is not feature_table(SPACE, 3, 32)
    with pytest.raises(ValueError, match="batch_size"):
        feature_table(SPACE, 0, 16)
    with pytest.raises(ValueError, match="seq_len"):
        FeatureTable(SPACE, 1, -4)
    with pytest.raises(ValueError, match="needs the embeddings"):
        feature_matrix(spec_columns(OUTSIDE), "both")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (5, 37), elements=st.floats(-3, 25000, allow_nan=False)),
       st.sampled_from(WORKLOADS))
def test_any_repaired_matrix_has_the_per_architecture_features(Z, workload):
    X = repair_embeddings(Z)
    specs = [decode(row) for row in X]
    table = feature_table(SPACE, *workload)
    for features in ("analytic", "costs"):
        _assert_bit_equal(table.featurize(X, features), _reference(specs, features, *workload))
