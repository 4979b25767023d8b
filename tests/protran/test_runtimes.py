"""Runtimes: each prepares and runs a small model, and all of them agree with each other."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from flexibert import ArchSpec, LayerSpec
from flexibert._model import build_model
from protran._runtimes import (
    BASE_RUNTIME_NAMES,
    RUNTIME_NAMES,
    OnnxRuntime,
    OpenVinoRuntime,
    Runtime,
    RuntimeUnavailableError,
    TorchRuntime,
    available_runtimes,
    get_runtime,
)

SPEC = ArchSpec((
    LayerSpec(128, ("sa_sdp", "sa_wma", "l_dft", "c_5"), (256,)),
    LayerSpec(256, ("l_dct", "c_13"), (512,)),
))
BATCH_SIZE, SEQ_LEN, VOCAB_SIZE = 2, 16, 1000


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """One session per runtime on the same model, single-threaded; closed after the module."""
    model = build_model(SPEC, seed=0, vocab_size=VOCAB_SIZE)
    opened = {}
    for name in BASE_RUNTIME_NAMES:
        workdir = tmp_path_factory.mktemp(name)
        opened[name] = get_runtime(name).prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1, workdir=workdir)
    yield opened
    for session in opened.values():
        session.close()


@pytest.mark.parametrize("name", BASE_RUNTIME_NAMES)
def test_session_runs_the_fixed_input(sessions, name):
    session = sessions[name]
    assert session.runtime == name
    assert (session.batch_size, session.seq_len) == (BATCH_SIZE, SEQ_LEN)
    assert session.input_ids.dtype == np.int64 and session.input_ids.max() < VOCAB_SIZE
    first, second = session.run(), session.run()
    assert first.shape == (BATCH_SIZE, SEQ_LEN, 256) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert np.isfinite(first).all() and first.std() > 0.1  # LayerNorm output, not zeros
    assert session.prepare_s > 0


def test_all_runtimes_agree_with_eager_torch(sessions):
    ids = torch.from_numpy(sessions["torch"].input_ids)
    np.testing.assert_array_equal(ids.numpy(), sessions["openvino"].input_ids)
    with torch.no_grad():
        expected = build_model(SPEC, seed=0, vocab_size=VOCAB_SIZE)(ids).numpy()
    for name, session in sessions.items():
        assert np.abs(session.run() - expected).max() < 1e-4, name


@pytest.mark.parametrize("name", BASE_RUNTIME_NAMES)
def test_infer_runs_new_ids_in_the_compiled_shape(sessions, name):
    session = sessions[name]
    original = session.input_ids.copy()
    other = (original + 7) % VOCAB_SIZE
    with torch.no_grad():
        expected = build_model(SPEC, seed=0, vocab_size=VOCAB_SIZE)(torch.from_numpy(other)).numpy()
    assert np.abs(session.infer(other) - expected).max() < 1e-4
    np.testing.assert_array_equal(session.input_ids, original)  # run() still times the prepared input
    with pytest.raises(ValueError, match="prepared shape"):
        session.infer(other[:, :-1])


def test_sessions_report_threads_and_graph_size(sessions):
    assert sessions["torch"].thread_settings["torch.num_threads"] == 1
    assert sessions["torch"].graph_node_count is None
    onnx = sessions["onnxruntime"]
    assert onnx.thread_settings["intra_op_num_threads"] == 1
    assert onnx.thread_settings["inter_op_num_threads"] == 1
    assert onnx.thread_settings["providers"] == ["CPUExecutionProvider"]
    assert (onnx.workdir / "model.onnx").is_file() and (onnx.workdir / "model.optimized.onnx").is_file()
    openvino = sessions["openvino"]
    assert openvino.thread_settings["INFERENCE_NUM_THREADS"] == 1
    assert openvino.thread_settings["INFERENCE_PRECISION_HINT"] == "f32"
    for session in (onnx, openvino):
        assert isinstance(session.graph_node_count, int) and session.graph_node_count > 10


def test_input_is_seeded_and_model_can_be_built_from_a_spec():
    runtime = get_runtime("torch")
    spec = ArchSpec((LayerSpec(128, ("sa_sdp", "l_dct"), (256,)), LayerSpec(128, ("c_9", "c_9"), (256,))))
    with runtime.prepare(spec, 1, 8, input_seed=3, vocab_size=VOCAB_SIZE) as first:
        with runtime.prepare(spec.to_model_dict(), 1, 8, input_seed=3, vocab_size=VOCAB_SIZE) as second:
            np.testing.assert_array_equal(first.input_ids, second.input_ids)
            np.testing.assert_array_equal(first.run(), second.run())
        with runtime.prepare(spec, 1, 8, input_seed=4, vocab_size=VOCAB_SIZE) as other:
            assert not np.array_equal(first.input_ids, other.input_ids)


def test_torch_threads_are_restored_on_close():
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "sa_sdp"), (256,)),)), vocab_size=VOCAB_SIZE)
    session = TorchRuntime().prepare(model, 1, 8, num_threads=target)
    assert torch.get_num_threads() == target == session.thread_settings["torch.num_threads"]
    session.close()
    assert torch.get_num_threads() == before


def test_temporary_workdir_is_removed_on_close():
    model = build_model(ArchSpec((LayerSpec(128, ("sa_sdp", "sa_sdp"), (256,)),)), vocab_size=VOCAB_SIZE)
    session = get_runtime("torch").prepare(model, 1, 8)
    workdir = session.workdir
    assert workdir.is_dir()
    session.close()
    assert not workdir.exists()


def test_lookup_and_options():
    assert BASE_RUNTIME_NAMES == ("torch", "onnxruntime", "openvino")
    assert RUNTIME_NAMES[:3] == BASE_RUNTIME_NAMES
    assert [get_runtime(name).name for name in RUNTIME_NAMES] == list(RUNTIME_NAMES)
    assert set(BASE_RUNTIME_NAMES) <= set(available_runtimes())
    assert get_runtime("openvino", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; choose one of torch, onnxruntime, openvino, "):
        get_runtime("tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoRuntime(precision="int8")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        OnnxRuntime(device="tpu")
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        get_runtime("torch").prepare(SPEC, num_threads=0)
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        get_runtime("torch").prepare(SPEC, seq_len=-1)
    with pytest.raises(ValueError, match="vocab_size applies when building"):
        get_runtime("torch").prepare(build_model(SPEC, vocab_size=VOCAB_SIZE), vocab_size=VOCAB_SIZE)


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_versions_name_the_runtime_library(name):
    versions = get_runtime(name).versions()
    assert "python" in versions and get_runtime(name).variant.base_runtime in versions
    assert all(isinstance(value, str) and value for value in versions.values())


def test_missing_library_is_reported(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a)
    )
    runtime = get_runtime("openvino")
    assert not runtime.is_available()
    with pytest.raises(
        RuntimeUnavailableError, match=r"runtime 'openvino' needs the Python package\(s\) \['openvino'\]"
    ):
        runtime.prepare(SPEC)


def test_missing_gpu_is_reported():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    runtime = get_runtime("onnxruntime", device="cuda")
    assert not runtime.is_available()
    with pytest.raises(RuntimeUnavailableError, match="no CUDAExecutionProvider"):
        runtime.prepare(SPEC)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeUnavailableError, match="torch sees no CUDA GPU"):
            TorchRuntime(device="cuda").prepare(SPEC)


def test_runtime_is_a_small_base_class():
    class Custom(Runtime):
        name = "custom"
        libraries = ("numpy",)

        def _prepare(self, model, input_ids, num_threads, workdir):
            raise NotImplementedError

    assert Custom().is_available()
    assert "numpy" in Custom().versions()
