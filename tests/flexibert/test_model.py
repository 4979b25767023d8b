import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from flexibert._model import build_classifier, build_mlm_model, build_model
from flexibert._ops import (
    DynamicConvHead,
    ScaledDotProductHead,
    WeightedMultiplicativeHead,
    cosine_mix,
    dct_matrix,
    fourier_mix,
    run_head_group,
)
from flexibert._spec import ArchSpec, LayerSpec

torch.set_num_threads(1)

ALL_OPS = ("sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13")
VOCAB = 50


def _spec(*layers) -> ArchSpec:
    return ArchSpec(tuple(LayerSpec(h, tuple(ops), tuple(ff)) for h, ops, ff in layers))


MIXED = _spec(
    (128, ALL_OPS + ("sa_sdp", "c_5", "l_dft", "sa_wma", "c_13"), (256,)),
    (256, ("sa_wma", "c_9"), (128, 64)),
    (256, ("l_dct", "sa_sdp", "c_7", "l_dft"), (64, 32, 64)),
)


def _ids(batch=2, seq=12, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_output_shape_dtype_and_structure():
    model = build_model(MIXED, vocab_size=VOCAB)
    out = model(_ids())
    assert out.shape == (2, 12, 256) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert [len(layer.heads) for layer in model.layers] == [12, 2, 4]
    assert model.layers[0].op_types == MIXED.layers[0].ops
    assert model.layers[2].op_types == ("sa_sdp", "l_dft", "l_dct", "c_7")
    # 128 / 12 heads -> head dim 10, concatenated to 120 < 128
    assert model.layers[0].attention_output.in_features == 120
    assert isinstance(model.projections[0], torch.nn.Linear)
    assert (model.projections[0].in_features, model.projections[0].out_features) == (128, 256)
    assert isinstance(model.projections[1], torch.nn.Identity)


def test_accepts_model_dict():
    tiny = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
    model = build_model(tiny, vocab_size=VOCAB)
    assert model(_ids()).shape == (2, 12, 128)


def test_deterministic_for_a_seed_and_differs_between_seeds():
    state = torch.random.get_rng_state()
    a = build_model(MIXED, seed=3, vocab_size=VOCAB)
    b = build_model(MIXED, seed=3, vocab_size=VOCAB)
    c = build_model(MIXED, seed=4, vocab_size=VOCAB)
    assert torch.equal(torch.random.get_rng_state(), state), "building must not touch the global RNG"
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.embeddings.word_embeddings.weight, c.embeddings.word_embeddings.weight)
    ids = _ids()
    assert torch.equal(a(ids), b(ids))
    assert not torch.allclose(a(ids), c(ids))


def test_eval_is_deterministic_and_train_uses_dropout():
    model = build_model(MIXED, vocab_size=VOCAB)
    ids = _ids()
    assert not model.training
    assert torch.equal(model(ids), model(ids))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(ids), model(ids))


@pytest.mark.parametrize("hidden", [128, 768])
@pytest.mark.parametrize("op", ALL_OPS)
def test_every_op_gives_finite_output(op, hidden):
    spec = _spec((hidden, (op, op), (256,)))
    model = build_model(spec, vocab_size=VOCAB, max_positions=16)
    out = model(_ids(batch=2, seq=9))
    assert out.shape == (2, 9, hidden)
    assert torch.isfinite(out).all()
    assert out.std() > 0.1  # LayerNorm output: not collapsed


def test_fused_heads_equal_heads_run_one_by_one():
    model = build_model(MIXED, vocab_size=VOCAB)
    layer = model.layers[0]
    hidden = torch.randn(2, 11, 128, generator=torch.Generator().manual_seed(1))
    fused = torch.cat([run_head_group(layer.heads[a:b], hidden) for a, b in layer._groups], dim=-1)
    single = torch.cat([head(hidden) for head in layer.heads], dim=-1)
    assert fused.shape == (2, 11, 120)
    torch.testing.assert_close(fused, single, atol=1e-5, rtol=1e-5)


def test_fourier_mix_matches_fft():
    values = torch.randn(2, 3, 37, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.fft.fft2(values).real
    torch.testing.assert_close(fourier_mix(values), expected, atol=1e-9, rtol=1e-9)
    values32 = torch.randn(1, 128, 64, generator=torch.Generator().manual_seed(1))
    expected32 = torch.fft.fft2(values32.double()).real.float()
    scale = expected32.abs().max()
    assert (fourier_mix(values32) - expected32).abs().max() / scale < 1e-5


def test_cosine_mix_matches_scipy_dct():
    values = np.random.default_rng(0).normal(size=(2, 33, 20))
    expected = scipy.fft.dctn(values, type=2, norm="ortho", axes=(-2, -1))
    got = cosine_mix(torch.tensor(values, dtype=torch.float32)).numpy()
    assert np.abs(got - expected).max() < 1e-5
    basis = dct_matrix(64, dtype=torch.float64)
    torch.testing.assert_close(basis @ basis.T, torch.eye(64, dtype=torch.float64))


def _attention_reference(head, hidden, mix=None):
    q, k, v = head.query(hidden), head.key(hidden), head.value(hidden)
    if mix is not None:
        q = q @ mix
    scores = q @ k.transpose(-1, -2) / math.sqrt(head.head_dim)
    return torch.softmax(scores, dim=-1) @ v


def test_self_attention_heads_match_formula_and_use_context():
    model = build_model(_spec((64, ("sa_sdp", "sa_wma"), (32,))), vocab_size=VOCAB)
    sdp, wma = model.layers[0].heads
    assert isinstance(sdp, ScaledDotProductHead) and isinstance(wma, WeightedMultiplicativeHead)
    hidden = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sdp(hidden), _attention_reference(sdp, hidden), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(wma(hidden), _attention_reference(wma, hidden, wma.mix), atol=1e-6, rtol=1e-5)
    # The context must reach the output: changing the values changes the encoder output.
    ids = _ids()
    before = model(ids)
    with torch.no_grad():
        sdp.value.weight.mul_(3.0)
    assert not torch.allclose(before, model(ids))


def test_dynamic_conv_matches_unfold_reference():
    head = DynamicConvHead(16, 8, 5)
    hidden = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(3))
    query = head.query(hidden)
    key = head.key_pointwise(head.key_depthwise(hidden.transpose(1, 2))).transpose(1, 2)
    weights = torch.softmax(head.kernel_generator(query * key), dim=-1)  # [B, S, k]
    padded = F.pad(head.value(hidden), (0, 0, 2, 2))
    windows = padded.unfold(1, 5, 1)  # [B, S, d, k]
    expected = (windows * weights[:, :, None, :]).sum(-1)
    torch.testing.assert_close(head(hidden), expected, atol=1e-6, rtol=1e-5)


def test_attention_mask_hides_padding_from_self_attention():
    model = build_model(_spec((64, ("sa_sdp", "sa_wma"), (32,)), (32, ("sa_sdp",) * 2, (32,))), vocab_size=VOCAB)
    ids = _ids(batch=1, seq=6)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    torch.testing.assert_close(model(padded, mask)[:, :6], model(ids), atol=1e-5, rtol=1e-5)
    out = build_model(MIXED, vocab_size=VOCAB)(padded, mask)
    assert torch.isfinite(out).all()


def test_mlm_and_classifier_wrap_the_same_encoder():
    ids = _ids()
    encoder = build_model(MIXED, seed=5, vocab_size=VOCAB)
    mlm = build_mlm_model(MIXED, seed=5, vocab_size=VOCAB)
    classifier = build_classifier(MIXED, num_labels=3, seed=5, vocab_size=VOCAB)
    assert mlm(ids).shape == (2, 12, VOCAB)
    assert classifier(ids).shape == (2, 3)
    torch.testing.assert_close(mlm.encoder(ids), encoder(ids))
    torch.testing.assert_close(classifier.encoder(ids), encoder(ids))


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(MIXED, vocab_size=0)
    with pytest.raises(ValueError, match="num_labels"):
        build_classifier(MIXED, num_labels=0)
    with pytest.raises(TypeError, match="ArchSpec"):
        build_model("not a spec")
    model = build_model(MIXED, vocab_size=VOCAB, max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model(_ids(seq=9))
