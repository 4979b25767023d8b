"""Embedding matrices: repair of any real matrix into valid embeddings, and seeded random starts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flexibert import DesignSpace, decode, embed, embedding_bounds, is_valid_embedding, sample_architectures
from flexibert.embeddings import random_embeddings, repair_embeddings

SPACE = DesignSpace.default()
UPPER = np.array([high for _, high in embedding_bounds(SPACE)])


def test_repair_turns_any_vector_into_a_valid_embedding():
    rng = np.random.default_rng(0)
    X = repair_embeddings(rng.uniform(-5, 30000, size=(200, SPACE.embedding_length)))
    assert all(is_valid_embedding(row) for row in X)


def test_repair_keeps_valid_embeddings_and_rounds_to_the_nearest():
    X = random_embeddings(100, seed=1)
    np.testing.assert_array_equal(repair_embeddings(X), X)
    rng = np.random.default_rng(2)
    used = np.array([[i < 1 + 3 * decode(row).num_layers for i in range(len(row))] for row in X])
    noisy = X + used * rng.uniform(-0.45, 0.45, X.shape)  # less than half a step in every used entry
    np.testing.assert_array_equal(repair_embeddings(noisy), X)


def test_repair_clips_each_entry_and_zeroes_slots_past_the_layer_count():
    Z = np.full((2, SPACE.embedding_length), 1e6)
    Z[0, 0], Z[1, 0] = 0.2, -7  # both two layers: 7 used entries
    X = repair_embeddings(Z)
    assert X.dtype == np.int64
    expected = np.concatenate([[0], UPPER[1:7], np.zeros(SPACE.embedding_length - 7, dtype=np.int64)])
    np.testing.assert_array_equal(X, [expected, expected])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.just(SPACE.embedding_length)),
              elements=st.floats(allow_nan=False, allow_infinity=True)))
def test_repair_of_any_real_matrix_decodes_and_is_idempotent(Z):
    X = repair_embeddings(Z)
    assert X.shape == Z.shape and X.dtype == np.int64
    assert np.all((X >= 0) & (X <= UPPER))
    assert all(is_valid_embedding(row) for row in X)
    np.testing.assert_array_equal(repair_embeddings(X), X)
    np.testing.assert_array_equal(repair_embeddings(X.astype(float)), X)


def test_random_embeddings_are_the_seeded_random_sample():
    X = random_embeddings(20, seed=3)
    assert X.dtype == np.int64 and X.shape == (20, SPACE.embedding_length)
    expected = [embed(spec) for spec in sample_architectures(20, method="random", seed=3)]
    np.testing.assert_array_equal(X, expected)
    assert len({row.tobytes() for row in X}) == 20
    X[:] = 0  # each call gets its own array
    np.testing.assert_array_equal(random_embeddings(20, seed=3, space=SPACE), expected)
    assert not np.array_equal(random_embeddings(20, seed=4), expected)
    with pytest.raises(TypeError, match="seed"):
        random_embeddings(20, seed=np.random.default_rng(3))
