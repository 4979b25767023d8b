import numpy as np
import pytest
import torch

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError
from flexibert._model import build_mlm_model
from gptran._mutations import (
    GROW_ATTENTION,
    PRUNE_FEED_FORWARD,
    feed_forward_growths,
    feed_forward_magnitudes,
    grow_attention_heads,
    growable_head_slots,
    head_gradient_norms,
    head_magnitudes,
    inherit_weights,
    prune_attention_heads,
    prune_feed_forward,
)

torch.set_num_threads(1)

SPACE = DesignSpace.default()
VOCAB = 40
TINY = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]})
MIXED = ArchSpec.from_model_dict({
    "l": 2,
    "o": [["sa_sdp_32", "sa_wma_32", "l_dft_32", "c_5_32"], ["sa_sdp_10"] * 8 + ["l_dct_10"] * 4],
    "h": [128, 128],
    "f": [[256, 1024], [4096, 4096, 4096]],
})


def _model(spec, seed=0):
    return build_mlm_model(spec, seed=seed, vocab_size=VOCAB, max_positions=32)


def _ids(seed=0):
    return torch.randint(5, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))


def test_growing_heads_reaches_the_next_allowed_count_and_keeps_parent_heads_in_place():
    mutation = grow_attention_heads(MIXED, 0, "sa_sdp", SPACE)
    layer = mutation.child.layers[0]
    assert layer.n_heads == 8 and layer.head_dim == 16
    assert layer.ops == ("sa_sdp",) * 5 + ("sa_wma", "l_dft", "c_5")
    # parent sdp head 0 stays first; the four new sdp heads follow it; the others shift by four
    assert mutation.head_sources == (0, None, None, None, None, 1, 2, 3)
    assert mutation.child.layers[1] == MIXED.layers[1]


def test_twelve_heads_and_two_heads_are_the_limits():
    with pytest.raises(InvalidArchitectureError, match="cannot grow"):
        grow_attention_heads(MIXED, 1, "sa_sdp", SPACE)
    with pytest.raises(InvalidArchitectureError, match="cannot shrink"):
        prune_attention_heads(TINY, 0, [1.0, 2.0], SPACE)
    assert {layer for layer, _ in growable_head_slots(MIXED, SPACE)} == {0}
    assert len(growable_head_slots(TINY, SPACE)) == 2 * len(SPACE.operation_types)


def test_pruning_heads_removes_the_lowest_scores():
    mutation = prune_attention_heads(MIXED, 1, [5, 1, 5, 5, 0.5, 5, 5, 5, 2, 0.1, 5, 5], SPACE)
    assert mutation.child.layers[1].n_heads == 8
    assert mutation.head_sources == (0, 2, 3, 5, 6, 7, 10, 11)
    assert mutation.child.layers[1].ops == ("sa_sdp",) * 6 + ("l_dct",) * 2


def test_feed_forward_growths_widen_or_append_within_the_space():
    growths = {m.description: m for m in feed_forward_growths(MIXED, SPACE)}
    assert set(growths) == {
        "layer 0: widen ff[0] 256 -> 512",
        "layer 0: widen ff[1] 1024 -> 2048",
        "layer 0: append ff[2] of 1024",
    }  # layer 1 is already 3 x 4096
    assert growths["layer 0: append ff[2] of 1024"].child.layers[0].ff_dims == (256, 1024, 1024)
    for mutation in growths.values():
        assert SPACE.contains(mutation.child)


def test_pruning_feed_forward_narrows_the_weakest_position_or_drops_it():
    positions = [[0.9, 0.1], [0.5, 0.5, 0.5]]
    units = [[np.arange(256.0), np.arange(1024.0)], [np.ones(4096)] * 3]
    narrow = prune_feed_forward(MIXED, positions, units, SPACE)
    assert narrow.child.layers[0].ff_dims == (256, 512)
    assert narrow.ff_kept_units == tuple(range(512, 1024))  # the strongest half
    # position (0, 0) is already at the smallest width: it can only be dropped
    drop = prune_feed_forward(MIXED, [[0.01, 0.9], [0.5] * 3], units, SPACE)
    assert drop.child.layers[0].ff_dims == (1024,) and drop.ff_change == ("drop", 0)
    single = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[256], [256]]})
    assert prune_feed_forward(single, [[0.1], [0.2]], [[np.ones(256)], [np.ones(256)]], SPACE) is None


def test_scores_have_one_entry_per_head_and_position():
    model = _model(MIXED)
    assert [len(row) for row in head_magnitudes(model)] == [4, 12]
    positions, units = feed_forward_magnitudes(model)
    assert [len(row) for row in positions] == [2, 3]
    assert units[0][1].shape == (1024,)

    def loss(m):
        return m(_ids()).logsumexp(-1).mean()

    norms = head_gradient_norms(model, loss)
    assert [len(row) for row in norms] == [4, 12] and all(v > 0 for row in norms for v in row)
    assert all(p.grad is None for p in model.parameters())
    assert norms == head_gradient_norms(model, loss)  # deterministic: no dropout


def test_grown_child_keeps_parent_heads_and_fresh_new_heads():
    mutation = grow_attention_heads(TINY, 1, "l_dft", SPACE)
    parent, child = _model(TINY), _model(mutation.child, seed=1)
    fresh = child.encoder.layers[1].heads[2].value.weight.clone()
    inherit_weights(parent, child, mutation)
    p_layer, c_layer = parent.encoder.layers[1], child.encoder.layers[1]
    for j in (0, 1):  # head dim 64 -> 32: the top-left block of each parent head
        torch.testing.assert_close(c_layer.heads[j].query.weight, p_layer.heads[j].query.weight[:32])
        torch.testing.assert_close(
            c_layer.attention_output.weight[:, 32 * j:32 * (j + 1)],
            p_layer.attention_output.weight[:, 64 * j:64 * j + 32],
        )
    assert torch.equal(c_layer.heads[2].value.weight, fresh)
    torch.testing.assert_close(
        child.encoder.layers[0].heads[1].key.weight, parent.encoder.layers[0].heads[1].key.weight
    )


def test_pruned_heads_are_matched_by_identity_not_position():
    spec = ArchSpec.from_model_dict(
        {"l": 2, "o": [["sa_sdp_32"] * 2 + ["l_dft_32"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
    )
    parent = _model(spec)
    mutation = prune_attention_heads(spec, 0, [0.1, 0.2, 1.0, 1.0], SPACE)
    assert mutation.child.layers[0].ops == ("l_dft", "l_dft")
    child = _model(mutation.child, seed=1)
    inherit_weights(parent, child, mutation)
    torch.testing.assert_close(
        child.encoder.layers[0].heads[1].value.weight[:32], parent.encoder.layers[0].heads[3].value.weight
    )


def test_narrowed_feed_forward_keeps_the_chosen_units():
    parent = _model(TINY)
    positions, units = feed_forward_magnitudes(parent)
    mutation = prune_feed_forward(TINY, positions, units, SPACE)
    assert mutation.mode == PRUNE_FEED_FORWARD
    layer = mutation.layer
    child = _model(mutation.child, seed=1)
    inherit_weights(parent, child, mutation)
    keep = torch.tensor(mutation.ff_kept_units)
    p_linears, c_linears = (
        parent.encoder.layers[layer].feed_forward.linears, child.encoder.layers[layer].feed_forward.linears
    )
    torch.testing.assert_close(c_linears[0].weight, p_linears[0].weight[keep])
    torch.testing.assert_close(c_linears[1].weight, p_linears[1].weight[:, keep])


def test_appended_position_starts_as_identity_and_dropped_one_is_bridged():
    parent = _model(TINY)
    append = next(m for m in feed_forward_growths(TINY, SPACE) if m.ff_change == ("append", 1) and m.layer == 0)
    child = _model(append.child, seed=1)
    inherit_weights(parent, child, append)
    linears = child.encoder.layers[0].feed_forward.linears
    torch.testing.assert_close(linears[1].weight, torch.eye(512))
    torch.testing.assert_close(linears[2].weight, parent.encoder.layers[0].feed_forward.linears[1].weight)

    spec = append.child
    drop = prune_feed_forward(spec, [[0.5, 0.01], [0.5]], [[np.ones(512)] * 2, [np.ones(512)]], SPACE, rank=0)
    assert drop.ff_change == ("narrow", 1)  # 512 can still narrow to 256 before being dropped
    small = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512, 256], [512]]})
    parent = _model(small, seed=3)
    drop = prune_feed_forward(small, [[0.9, 0.01], [0.5]], [[np.ones(512), np.ones(256)], [np.ones(512)]], SPACE)
    assert drop.ff_change == ("drop", 1) and drop.child.layers[0].ff_dims == (512,)
    child = _model(drop.child, seed=4)
    inherit_weights(parent, child, drop)
    p = parent.encoder.layers[0].feed_forward.linears
    c = child.encoder.layers[0].feed_forward.linears
    torch.testing.assert_close(c[0].weight, p[0].weight)
    torch.testing.assert_close(c[1].weight, p[2].weight @ p[1].weight)
    torch.testing.assert_close(c[1].bias, p[2].weight @ p[1].bias + p[2].bias)


def test_same_spec_changes_nothing_outside_the_mutated_layer():
    mutation = grow_attention_heads(TINY, 0, "c_9", SPACE)
    assert mutation.mode == GROW_ATTENTION
    parent, child = _model(TINY), _model(mutation.child, seed=5)
    inherit_weights(parent, child, mutation, mode="random_projection")
    for name, value in parent.state_dict().items():
        if not name.startswith("encoder.layers.0."):
            torch.testing.assert_close(child.state_dict()[name], value, msg=name)
    with pytest.raises(ValueError, match="do not match"):
        inherit_weights(child, parent, mutation)
