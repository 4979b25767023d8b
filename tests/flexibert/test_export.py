"""Export to ONNX, OpenVINO IR and TorchScript: parity with eager torch, and clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flexibert import ArchSpec, ExportError, LayerSpec, _export
from flexibert._export import (
    EXPORT_FORMATS,
    example_input_ids,
    export,
    export_formats,
    export_onnx,
    export_openvino,
    export_torchscript,
)
from flexibert._model import build_model

SEQ_LEN = 16
VOCAB_SIZE = 1000
TOLERANCE = 1e-4

# Together: every op, every hidden size (128/256/512/768), 2/4/8/12 heads, feed-forward depth 1-3,
# widths growing and shrinking between layers (and one unchanged), and 128/12 heads (n·d < h).
ARCHITECTURES = {
    "grow-128-256": ArchSpec((
        LayerSpec(128, ("sa_sdp", "sa_wma", "l_dft", "l_dct"), (512,)),
        LayerSpec(256, ("sa_sdp", "c_5", "c_9", "c_13"), (256, 512)),
    )),
    "grow-512-768": ArchSpec((
        LayerSpec(512, ("sa_sdp", "sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13"), (1024, 256, 512)),
        LayerSpec(768, ("sa_wma", "l_dft", "c_9", "c_13"), (256,)),
    )),
    "shrink-256-128-128": ArchSpec((
        LayerSpec(256, ("l_dct", "c_13"), (2048,)),
        LayerSpec(128, ("sa_sdp", "sa_sdp", "sa_wma", "sa_wma", "l_dft", "l_dft", "l_dct", "l_dct", "c_5", "c_5",
                        "c_9", "c_13"), (256, 256)),
        LayerSpec(128, ("sa_wma", "l_dft"), (512,)),
    )),
}


def test_architectures_cover_the_design_space_axes():
    layers = [layer for spec in ARCHITECTURES.values() for layer in spec.layers]
    assert {op for layer in layers for op in layer.ops} == {"sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13"}
    assert {layer.hidden_size for layer in layers} == {128, 256, 512, 768}
    assert {len(layer.ff_dims) for layer in layers} == {1, 2, 3}
    assert {layer.n_heads for layer in layers} == {2, 4, 8, 12}


@pytest.fixture(scope="module")
def built():
    """{name: (model, input_ids, eager output)}, built once for the module."""
    torch.set_num_threads(1)
    result = {}
    for name, spec in ARCHITECTURES.items():
        model = build_model(spec, seed=0, vocab_size=VOCAB_SIZE)
        ids = example_input_ids(1, SEQ_LEN, VOCAB_SIZE)
        with torch.no_grad():
            result[name] = (model, ids, model(ids).numpy())
    return result


def _run_onnx(path, ids):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("input_ids", "tensor(int64)", [1, SEQ_LEN])
    assert out.name == "hidden_states"
    return session.run(None, {"input_ids": ids.numpy()})[0]


def _run_openvino(path, ids):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    assert model.inputs[0].get_any_name() == "input_ids"
    assert model.outputs[0].get_any_name() == "hidden_states"
    assert model.inputs[0].get_element_type() == ov.Type.i64
    assert path.with_suffix(".bin").is_file()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return compiled({"input_ids": ids.numpy()})["hidden_states"]


def _run_torchscript(path, ids):
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still loads and runs
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(ids).numpy()


_EXPORT_AND_RUN = {
    "onnx": (export_onnx, "model.onnx", _run_onnx),
    "openvino": (export_openvino, "model.xml", _run_openvino),
    "torchscript": (export_torchscript, "model.pt", _run_torchscript),
}


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_exported_model_matches_eager_torch(built, tmp_path, name, fmt):
    model, ids, expected = built[name]
    exporter, file_name, run = _EXPORT_AND_RUN[fmt]
    path = exporter(model, tmp_path / file_name, batch_size=1, seq_len=SEQ_LEN)
    assert path == tmp_path / file_name and path.is_file()
    actual = run(path, ids)
    assert actual.shape == expected.shape == (1, SEQ_LEN, ARCHITECTURES[name].layers[-1].hidden_size)
    assert actual.dtype == np.float32
    assert np.abs(actual - expected).max() < TOLERANCE


def test_export_builds_a_spec_or_model_dict_with_seed_zero(tmp_path):
    spec = ArchSpec((LayerSpec(128, ("sa_sdp", "c_5"), (256,)), LayerSpec(256, ("l_dft", "l_dft"), (512,))))
    ids = example_input_ids(1, SEQ_LEN, 30522)
    with torch.no_grad():
        expected = build_model(spec, seed=0)(ids).numpy()
    for index, source in enumerate((spec, spec.to_model_dict())):
        path = export_torchscript(source, tmp_path / f"model{index}.pt", seq_len=SEQ_LEN)
        np.testing.assert_allclose(_run_torchscript(path, ids), expected, atol=1e-6)


def test_export_keeps_training_mode_and_exports_in_eval_mode(tmp_path):
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "l_dct"), (256,)),)), vocab_size=VOCAB_SIZE).train()
    ids = example_input_ids(1, SEQ_LEN, VOCAB_SIZE)
    path = export_torchscript(model, tmp_path / "model.pt", seq_len=SEQ_LEN)
    assert model.training
    first, second = _run_torchscript(path, ids), _run_torchscript(path, ids)
    np.testing.assert_array_equal(first, second)  # no dropout in the exported graph


def test_onnx_weights_beyond_the_single_file_limit_go_beside_the_model(tmp_path, monkeypatch):
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "l_dft"), (256,)),)), vocab_size=VOCAB_SIZE)
    monkeypatch.setattr(_export, "SINGLE_FILE_LIMIT_BYTES", 1000)
    path = export_onnx(model, tmp_path / "model.onnx", seq_len=SEQ_LEN)
    data = tmp_path / "model.onnx.data"
    assert data.is_file() and data.stat().st_size > path.stat().st_size
    ids = example_input_ids(1, SEQ_LEN, VOCAB_SIZE)
    with torch.no_grad():
        expected = model(ids).numpy()
    assert np.abs(_run_onnx(path, ids) - expected).max() < TOLERANCE


def test_export_helper_writes_each_requested_format(tmp_path):
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "c_9"), (256,)),)), vocab_size=VOCAB_SIZE)
    paths = export(model, tmp_path / "new" / "dir", formats=("torchscript",), seq_len=SEQ_LEN)
    assert paths == {"torchscript": tmp_path / "new" / "dir" / "model.pt"}
    assert paths["torchscript"].is_file()
    assert export_formats() == ("onnx", "openvino", "torchscript")
    with pytest.raises(ValueError, match="unknown export format.*'tflite'"):
        export(model, tmp_path, formats=("onnx", "tflite"))


# -- errors ----------------------------------------------------------------------------------------


class _Head(nn.Module):
    op_type = "toy_linear"

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden):
        return self.linear(hidden)


class _UnexportableHead(_Head):
    """SVD has neither an ONNX function nor an OpenVINO conversion rule."""

    op_type = "toy_svd"

    def forward(self, hidden):
        return torch.linalg.svd(self.linear(hidden))[0]


class _Layer(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList([_Head(hidden_size), _UnexportableHead(hidden_size)])

    def forward(self, hidden):
        return torch.cat([head(hidden) for head in self.heads], dim=-1)


class _ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(50, 8)
        self.layers = nn.ModuleList([_Layer(8)])

    def forward(self, input_ids):
        hidden = self.embeddings(input_ids)
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


@pytest.mark.parametrize(
    "exporter, file_name, runtime, cause",
    [(export_onnx, "m.onnx", "ONNX", "svd"), (export_openvino, "m.xml", "OpenVINO", "svd")],
)
def test_export_error_names_runtime_and_op(tmp_path, exporter, file_name, runtime, cause):
    with pytest.raises(ExportError) as caught:
        exporter(_ToyModel(), tmp_path / file_name, seq_len=4)
    message = str(caught.value)
    assert message.startswith(f"{runtime} export failed at op 'toy_svd' (layer 0, head 1): ")
    assert cause in message
    assert "\x1b[" not in message and len(message) < 600


def test_export_error_without_a_culprit_names_the_runtime(tmp_path, monkeypatch):
    def broken_trace(*args, **kwargs):
        raise RuntimeError("tracer unavailable")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    with pytest.raises(ExportError, match=r"^TorchScript export failed: tracer unavailable$"):
        export_torchscript(_ToyModel(), tmp_path / "m.pt", seq_len=4)


def test_bad_output_paths_give_clear_errors(tmp_path):
    model = _ToyModel()
    with pytest.raises(FileNotFoundError, match="directory .*missing' does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        export_torchscript(model, not_a_dir / "m.pt")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        export_onnx(model, tmp_path)
    with pytest.raises(ValueError, match=r"must end with '\.xml'"):
        export_openvino(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == [not_a_dir]


def test_bad_shapes_and_inputs_give_clear_errors(tmp_path):
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "sa_sdp"), (256,)),)), vocab_size=50, max_positions=8)
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        export_torchscript(model, tmp_path / "m.pt", seq_len=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        export_torchscript(model, tmp_path / "m.pt", batch_size=1.5)
    with pytest.raises(ValueError, match="does not run in torch.*exceeds max_positions"):
        export_torchscript(model, tmp_path / "m.pt", seq_len=16)
    with pytest.raises(TypeError, match="expected an ArchSpec, a model_dict or a torch.nn.Module"):
        export_torchscript("sa_sdp", tmp_path / "m.pt")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_tracing_onnx_exporter_matches_eager_torch(built, tmp_path, name):
    """The profiler's faster exporter must be as exact as the default one."""
    model, ids, expected = built[name]
    path = export_onnx(model, tmp_path / "model.onnx", batch_size=1, seq_len=SEQ_LEN, exporter="tracing")
    assert np.abs(_run_onnx(path, ids) - expected).max() < TOLERANCE


def test_unknown_onnx_exporter_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        export_onnx(ARCHITECTURES[next(iter(ARCHITECTURES))], tmp_path / "m.onnx", exporter="fast")
