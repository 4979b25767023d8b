import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from flexibert._features import (
    ANALYTIC_FEATURE_NAMES,
    activation_memory_bytes,
    analytic_feature_vector,
    analytic_features,
    count_parameters,
    estimate_flops,
)
from flexibert._model import build_model
from flexibert._spec import ArchSpec, LayerSpec, conv_kernel_size

torch.set_num_threads(1)

ALL_OPS = ("sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13")
VOCAB = 50


def _spec(*layers) -> ArchSpec:
    return ArchSpec(tuple(LayerSpec(h, tuple(ops), tuple(ff)) for h, ops, ff in layers))


SPECS = [
    _spec((128, ("sa_sdp", "sa_sdp"), (512,)), (128, ("sa_sdp", "sa_sdp"), (512,))),  # BERT-Tiny
    _spec((128, ALL_OPS + ALL_OPS[:5], (256, 512)), (256, ("c_13",) * 12, (256,))),  # 128/12 -> 10
    _spec((512, ("sa_wma", "l_dft", "l_dct", "c_9"), (1024, 256, 2048)), (256, ("l_dft",) * 8, (256, 256))),
    _spec((768, ALL_OPS + ("sa_sdp",), (3072,)), (768, ("sa_sdp", "c_5"), (512,)), (128, ("l_dct",) * 2, (256,))),
    _spec((256, ("sa_sdp", "c_7", "c_7", "l_dft"), (256,))),  # a kernel outside the default space
]


def _built_parameters(spec, **kwargs) -> int:
    return sum(p.numel() for p in build_model(spec, **kwargs).parameters())


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_count_parameters_is_exact(spec):
    assert count_parameters(spec, vocab_size=VOCAB, max_positions=64) == _built_parameters(
        spec, vocab_size=VOCAB, max_positions=64
    )


def test_count_parameters_default_sizes_and_model_dict():
    spec = SPECS[0]
    assert count_parameters(spec) == _built_parameters(spec)
    assert count_parameters(spec.to_model_dict()) == count_parameters(spec)


def _dynamic_mixing_flops(spec, batch_size, seq_len) -> int:
    """The per-position kernel mixing of conv heads is element-wise in torch, so the counter skips it."""
    tokens = batch_size * seq_len
    return sum(
        2 * tokens * layer.head_dim * conv_kernel_size(op)
        for layer in spec.layers
        for op in layer.ops
        if op.startswith("c_")
    )


@pytest.mark.parametrize("spec", SPECS[1:], ids=range(1, len(SPECS)))
def test_estimate_flops_matches_torch_flop_counter(spec):
    model = build_model(spec, vocab_size=VOCAB, max_positions=64)
    batch_size, seq_len = 2, 9
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch_size, seq_len, dtype=torch.long))
    counted = counter.get_total_flops() + _dynamic_mixing_flops(spec, batch_size, seq_len)
    assert estimate_flops(spec, batch_size, seq_len) == counted


def test_flops_scale_with_batch_and_sequence():
    spec = SPECS[0]
    assert estimate_flops(spec, batch_size=4, seq_len=32) == 4 * estimate_flops(spec, batch_size=1, seq_len=32)
    assert estimate_flops(spec, seq_len=256) > 2 * estimate_flops(spec, seq_len=128)  # quadratic attention


class _LiveActivationBytes(TorchDispatchMode):
    """Tracks bytes of live tensors created by torch ops (weights excluded) and their peak."""

    def __init__(self, skip_storages: set[int]) -> None:
        super().__init__()
        self.skip = skip_storages
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.live or key in self.skip or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(tensor, self._release, key)
        return out


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_activation_memory_is_close_to_a_traced_peak(spec):
    model = build_model(spec, vocab_size=VOCAB, max_positions=64)
    tracker = _LiveActivationBytes({p.untyped_storage().data_ptr() for p in model.parameters()})
    with torch.no_grad(), tracker:
        model(torch.zeros(2, 64, dtype=torch.long))
    ratio = activation_memory_bytes(spec, batch_size=2, seq_len=64) / tracker.peak
    assert 0.6 < ratio < 1.6


def test_activation_memory_grows_with_input():
    spec = SPECS[1]
    small = activation_memory_bytes(spec, batch_size=1, seq_len=64)
    assert activation_memory_bytes(spec, batch_size=2, seq_len=64) > small
    assert activation_memory_bytes(spec, batch_size=1, seq_len=128) > small
    assert small >= 4 * 64 * 256  # at least the float32 output


def test_analytic_features_and_vector():
    spec = SPECS[3]
    summary = analytic_features(spec, batch_size=2, seq_len=64)
    assert summary == {
        "params": count_parameters(spec),
        "flops": estimate_flops(spec, 2, 64),
        "activation_bytes": activation_memory_bytes(spec, 2, 64),
    }
    vector = analytic_feature_vector(spec, batch_size=2, seq_len=64)
    assert len(vector) == len(ANALYTIC_FEATURE_NAMES)
    named = dict(zip(ANALYTIC_FEATURE_NAMES, vector))
    assert named["log10_params"] == pytest.approx(math.log10(summary["params"]))
    assert named["num_layers"] == 3
    assert named["total_heads"] == 12
    assert named["heads_sa_sdp"] == 3 and named["heads_sa_wma"] == 1 and named["heads_l_dft"] == 1
    assert named["heads_l_dct"] == 3 and named["heads_conv"] == 4
    assert named["mean_conv_kernel"] == pytest.approx((5 + 9 + 13 + 5) / 4)
    assert named["max_hidden_size"] == 768
    assert named["total_ff_width"] == 3072 + 512 + 256
    assert len(analytic_feature_vector(SPECS[0])) == len(vector)  # fixed length


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        estimate_flops(SPECS[0], batch_size=0)
    with pytest.raises(ValueError, match="seq_len"):
        activation_memory_bytes(SPECS[0], seq_len=-1)
