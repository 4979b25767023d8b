import pytest
import torch
import torch.nn.functional as F

from flexibert._features import count_parameters
from flexibert._model import build_classifier, build_mlm_model, build_model
from flexibert._spec import ArchSpec, LayerSpec
from flexibert._transfer import transfer_weights

torch.set_num_threads(1)

VOCAB = 60


def _spec(*layers) -> ArchSpec:
    return ArchSpec(tuple(LayerSpec(h, tuple(ops), tuple(ff)) for h, ops, ff in layers))


MIXED = _spec(
    (64, ("sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13", "sa_sdp"), (64, 32)),
    (32, ("sa_wma", "c_9"), (48,)),
)


def _ids(batch=2, seq=10):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["ordered", "random_projection"])
def test_same_architecture_copies_everything(mode):
    parent = build_model(MIXED, seed=0, vocab_size=VOCAB)
    child = build_model(MIXED, seed=1, vocab_size=VOCAB)
    assert transfer_weights(parent, child, MIXED, MIXED, mode=mode) == 1.0
    torch.testing.assert_close(child(_ids()), parent(_ids()))


def test_fraction_counts_parameter_elements():
    parent_spec = MIXED
    child_spec = ArchSpec(MIXED.layers + (MIXED.layers[-1],))  # one more layer of the same width
    parent = build_model(parent_spec, vocab_size=VOCAB)
    child = build_model(child_spec, vocab_size=VOCAB, seed=1)
    fraction = transfer_weights(parent, child)
    expected = count_parameters(parent_spec, vocab_size=VOCAB) / count_parameters(child_spec, vocab_size=VOCAB)
    assert fraction == pytest.approx(expected)
    torch.testing.assert_close(child.layers[1].heads[1].query.weight, parent.layers[1].heads[1].query.weight)


def test_heads_transfer_only_within_a_family():
    parent = build_model(_spec((32, ("sa_sdp", "sa_wma"), (32,))), vocab_size=VOCAB)
    child_spec = _spec((32, ("sa_wma", "l_dft"), (32,)))
    child = build_model(child_spec, seed=1, vocab_size=VOCAB)
    untouched_value = child.layers[0].heads[1].value.weight.clone()
    untouched_mix = child.layers[0].heads[0].mix.clone()
    transfer_weights(parent, child)
    first = child.layers[0].heads[0]
    torch.testing.assert_close(first.query.weight, parent.layers[0].heads[0].query.weight)
    assert torch.equal(first.mix, untouched_mix)  # sdp -> wma: no W to copy
    assert torch.equal(child.layers[0].heads[1].value.weight, untouched_value)  # sa -> l: skipped
    out = child.layers[0].attention_output.weight
    torch.testing.assert_close(out[:, :16], parent.layers[0].attention_output.weight[:, :16])
    assert not torch.equal(out[:, 16:], parent.layers[0].attention_output.weight[:, 16:])


def test_wma_and_conv_heads_transfer_across_sizes():
    parent = build_model(_spec((64, ("sa_wma", "c_5"), (32,))), vocab_size=VOCAB)
    child = build_model(_spec((64, ("sa_wma", "c_9", "c_9", "c_13"), (32,))), seed=1, vocab_size=VOCAB)
    transfer_weights(parent, child)
    wma_p, conv_p = parent.layers[0].heads[:2]
    wma_c, conv_c = child.layers[0].heads[:2]
    torch.testing.assert_close(wma_c.mix, wma_p.mix[:16, :16])
    torch.testing.assert_close(conv_c.query.weight, conv_p.query.weight[:16])
    # kernel of 5 resized to 9 by linear interpolation: every other tap is an original one
    torch.testing.assert_close(conv_c.key_depthwise.weight[:, :, ::2], conv_p.key_depthwise.weight)
    torch.testing.assert_close(conv_c.kernel_generator.weight[::2], conv_p.kernel_generator.weight[:, :16])
    assert torch.isfinite(child(_ids())).all()


def test_width_change_ordered_and_random_projection():
    parent_spec = _spec((32, ("sa_sdp", "c_5"), (64,)), (32, ("l_dft", "sa_sdp"), (64,)))
    child_spec = _spec((64, ("sa_sdp", "c_5"), (64,)), (48, ("l_dft", "sa_sdp"), (64, 32)))
    parent = build_model(parent_spec, vocab_size=VOCAB)

    ordered = build_model(child_spec, seed=1, vocab_size=VOCAB)
    transfer_weights(parent, ordered, parent_spec, child_spec, mode="ordered")
    word_parent = parent.embeddings.word_embeddings.weight
    torch.testing.assert_close(ordered.embeddings.word_embeddings.weight[:, :32], word_parent)

    projected = [build_model(child_spec, seed=1, vocab_size=VOCAB) for _ in range(3)]
    fractions = [transfer_weights(parent, model, mode="RP", seed=seed) for model, seed in zip(projected, (7, 7, 8))]
    assert fractions[0] == fractions[1] and 0.0 < fractions[0] < 1.0
    words = [model.embeddings.word_embeddings.weight[:, :32] for model in projected]
    torch.testing.assert_close(words[0], words[1])  # seeded
    assert not torch.allclose(words[0], words[2])
    assert not torch.allclose(words[0], word_parent)
    # R has entries N(0, 1/m): the column norms are preserved on average
    ratio = words[0].norm() / word_parent.norm()
    assert 0.6 < ratio < 1.4
    assert torch.isfinite(projected[0](_ids())).all()


def test_wrappers_transfer_their_heads():
    spec = MIXED
    parent = build_mlm_model(spec, vocab_size=VOCAB)
    child = build_mlm_model(spec, seed=1, vocab_size=VOCAB)
    assert transfer_weights(parent, child) == 1.0
    torch.testing.assert_close(child(_ids()), parent(_ids()))
    classifier_parent = build_classifier(spec, num_labels=3, vocab_size=VOCAB)
    classifier_child = build_classifier(spec, num_labels=2, seed=1, vocab_size=VOCAB)
    fraction = transfer_weights(classifier_parent, classifier_child)
    assert 0.9 < fraction < 1.0  # all but the classifier layer
    torch.testing.assert_close(classifier_child.encoder(_ids()), classifier_parent.encoder(_ids()))
    assert transfer_weights(parent, classifier_child) < fraction  # encoder only


def test_bad_arguments():
    parent = build_model(MIXED, vocab_size=VOCAB)
    child = build_model(MIXED, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="mode"):
        transfer_weights(parent, child, mode="nearest")
    with pytest.raises(ValueError, match="child_spec"):
        transfer_weights(parent, child, MIXED, _spec((32, ("sa_sdp",) * 2, (32,))))
    with pytest.raises(TypeError, match="FlexiBertEncoder"):
        transfer_weights(torch.nn.Linear(2, 2), child)


# -- transferred weights help a grown child ----------------------------------------------------------

MLM_VOCAB, SEQ, BATCH = 200, 32, 8
MASK_ID = MLM_VOCAB - 1


def _pattern_batch():
    """Arithmetic token progressions: a masked token is predictable from its neighbours."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randint(0, 150, (BATCH, 1), generator=generator)
    step = torch.randint(1, 4, (BATCH, 1), generator=generator)
    tokens = (start + step * torch.arange(SEQ)) % MASK_ID
    masked = torch.rand(BATCH, SEQ, generator=generator) < 0.15
    return tokens.masked_fill(masked, MASK_ID), tokens.masked_fill(~masked, -100)


def _mlm_loss(model, inputs, labels) -> torch.Tensor:
    return F.cross_entropy(model(inputs).flatten(0, 1), labels.flatten(), ignore_index=-100)


def _tiny(ops0, ff1=(512,)) -> ArchSpec:
    return _spec((128, ops0, (512,)), (128, ("sa_sdp", "sa_sdp"), ff1))


@pytest.fixture(scope="module")
def trained_parent():
    inputs, labels = _pattern_batch()
    parent = build_mlm_model(_tiny(("sa_sdp", "sa_sdp")), seed=0, vocab_size=MLM_VOCAB, max_positions=SEQ).train()
    optimizer = torch.optim.AdamW(parent.parameters(), lr=2e-3, foreach=False)
    for _ in range(30):
        optimizer.zero_grad()
        _mlm_loss(parent, inputs, labels).backward()
        optimizer.step()
    return parent.eval()


@pytest.mark.parametrize(
    "child_spec",
    [
        _tiny(("sa_sdp", "sa_sdp", "sa_sdp")),
        _tiny(("sa_sdp", "sa_sdp", "c_5")),
        _tiny(("sa_sdp", "sa_sdp"), (512, 256)),
    ],
    ids=["added_sdp_head", "added_conv_head", "added_ff_layer"],
)
@pytest.mark.parametrize("mode", ["ordered", "random_projection"])
def test_transfer_beats_fresh_initialisation(trained_parent, child_spec, mode):
    inputs, labels = _pattern_batch()
    with torch.no_grad():
        parent_loss = _mlm_loss(trained_parent, inputs, labels).item()
        child = build_mlm_model(child_spec, seed=1, vocab_size=MLM_VOCAB, max_positions=SEQ)
        fresh_loss = _mlm_loss(child, inputs, labels).item()
        fraction = transfer_weights(trained_parent, child, mode=mode)
        transferred_loss = _mlm_loss(child, inputs, labels).item()
    assert parent_loss < fresh_loss - 1.0  # the parent did learn
    assert 0.5 < fraction < 1.0
    assert transferred_loss < fresh_loss - 1.0
