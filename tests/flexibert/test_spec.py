"""ArchSpec: conversion to and from model_dict, validation with errors naming layer and field."""

import copy

import pytest

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError, LayerSpec

MIXED = {
    "l": 2,
    "o": [["sa_sdp_10"] * 6 + ["l_dct_10"] * 6, ["sa_wma_128", "c_13_128"]],
    "h": [128, 256],
    "f": [[256, 4096, 512], [1024]],
}


def test_round_trip_and_shape():
    spec = ArchSpec.from_model_dict(MIXED)
    assert spec.to_model_dict() == MIXED
    assert spec.num_layers == 2
    assert spec.hidden_sizes == [128, 256]
    assert spec.head_counts == [12, 2]
    assert spec.layers[0].head_dim == 10  # floor(128 / 12), as in the reference data
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert hash(spec) == hash(ArchSpec.from_model_dict(copy.deepcopy(MIXED)))


def test_spec_is_immutable():
    spec = ArchSpec.from_model_dict(MIXED)
    with pytest.raises(AttributeError):
        spec.layers = ()
    with pytest.raises(AttributeError):
        spec.layers[0].hidden_size = 512


def test_heads_are_kept_in_canonical_order():
    layer = LayerSpec(256, ("c_5", "l_dft", "sa_wma", "sa_sdp"), (512,))
    assert layer.ops == ("sa_sdp", "sa_wma", "l_dft", "c_5")


def _broken(**changes):
    model_dict = copy.deepcopy(MIXED)
    for key, value in changes.items():
        model_dict[key] = value
    return model_dict


@pytest.mark.parametrize(
    "model_dict, message",
    [
        (_broken(h=[128, 300], o=[MIXED["o"][0], ["sa_wma_150", "c_13_150"]]), r"layer 1, field 'h': hidden size 300"),
        (_broken(o=[MIXED["o"][0], ["sa_sdp_85"] * 3]), r"layer 1, field 'o': 3 heads"),
        (_broken(o=[MIXED["o"][0], ["sa_foo_128", "c_5_128"]]), r"layer 1, field 'o': unknown operation type"),
        (_broken(o=[MIXED["o"][0], ["sa_sdp_64", "c_5_64"]]), r"layer 1, field 'o': .*head dim 64"),
        (_broken(f=[[256], [1024, 1024, 1024, 1024]]), r"layer 1, field 'f': a stack of 4"),
        (_broken(f=[[300], [1024]]), r"layer 0, field 'f': feed-forward width 300"),
        (_broken(l=3), r"field 'o': expected a list with one entry per layer \(3\)"),
        ({"l": 3, "o": [["sa_sdp_64"] * 2] * 3, "h": [128] * 3, "f": [[512]] * 3}, r"field 'l': 3 layers"),
        ({"o": [], "h": [], "f": []}, r"field 'l' is missing"),
        (_broken(f=[[256], [-5]]), r"layer 1, field 'f'"),
    ],
)
def test_invalid_specs_name_layer_and_field(model_dict, message):
    with pytest.raises(InvalidArchitectureError, match=message):
        ArchSpec.from_model_dict(model_dict)


def test_widened_space_accepts_what_default_rejects():
    wide = DesignSpace.from_dict({**DesignSpace.default().to_dict(), "hidden_size": [128, 256, 300, 512, 768]})
    model_dict = _broken(h=[128, 300], o=[MIXED["o"][0], ["sa_wma_150", "c_13_150"]])
    assert ArchSpec.from_model_dict(model_dict, space=wide).hidden_sizes == [128, 300]
    with pytest.raises(InvalidArchitectureError):
        ArchSpec.from_model_dict(model_dict)


def test_bad_space_files_are_reported(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("encoder_layers: [2]\n")
    with pytest.raises(ValueError, match="missing field"):
        DesignSpace.from_yaml(path)
    with pytest.raises(ValueError, match="convolution kernels must be odd"):
        DesignSpace.from_dict({**DesignSpace.default().to_dict(), "operation_types": ["sa_sdp", "c_4"]})
    with pytest.raises(ValueError, match="unknown"):
        DesignSpace.from_dict({**DesignSpace.default().to_dict(), "operation_types": ["sa_xyz"]})
