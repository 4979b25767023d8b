"""The named choices of flexibert that command lines offer, importable without torch.

Export formats and weight-transfer modes are defined beside code that needs torch
(``flexibert._export``, ``flexibert._transfer``); an argparse parser that imported them from there
would load torch for ``--help``. They are spelled out here once, and the tests check that each module
that implements a choice offers exactly these names.
"""

from __future__ import annotations

#: Samplers of :func:`flexibert.sample_architectures`.
SAMPLING_METHODS: tuple[str, ...] = ("random", "lhs", "lhs_split", "sobol", "halton", "hammersly")
#: Shallow/deep x narrow/wide, as :func:`flexibert.model_type` names an architecture.
MODEL_TYPES: tuple[str, ...] = ("shallow_narrow", "shallow_wide", "deep_narrow", "deep_wide")
#: Files :func:`flexibert.export` writes.
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "openvino", "torchscript")
#: How :func:`flexibert.transfer_weights` fills blocks whose widths differ.
TRANSFER_MODES: tuple[str, ...] = ("ordered", "random_projection")
