"""Reduced-precision runtimes: each variant runs a tiny model close to f32, says what it is, is reported
unavailable with a reason where it cannot run, lands in a measurement's record; output drift and the
``protran drift`` command."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from flexibert import ArchSpec, LayerSpec, PretrainConfig, build_mlm_model, load_corpus, model_hash, pretrain
from flexibert._model import build_model
from protran import RunStore, measure_architecture, output_drift
from protran._runtimes import (
    PRECISION_VARIANTS,
    RUNTIME_NAMES,
    RuntimeUnavailableError,
    calibration_batches,
    get_runtime,
)
from protran.cli import main

SPEC = ArchSpec((
    LayerSpec(128, ("sa_sdp", "sa_wma", "l_dft", "c_5"), (256,)),
    LayerSpec(256, ("l_dct", "c_13"), (512,)),
))
BATCH_SIZE, SEQ_LEN, VOCAB_SIZE = 2, 16, 1000
MLM_SPEC = ArchSpec((LayerSpec(64, ("sa_sdp", "sa_sdp"), (128,)), LayerSpec(64, ("l_dft", "c_5"), (128,))))
CPU_VARIANTS = ("onnxruntime-int8", "openvino-int8", "openvino-bf16")
DRIFT_KEYS = {"base_runtime", "precision", "calibration", "hidden_cosine", "mlm_loss_f32", "mlm_loss",
              "mlm_loss_increase_rel"}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(np.mean((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)))


def _available_or_skip(name: str):
    runtime = get_runtime(name)
    reason = runtime.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} cannot run here: {reason}")
    return runtime


@pytest.fixture(scope="module")
def reference():
    model = build_model(SPEC, seed=0, vocab_size=VOCAB_SIZE)
    with get_runtime("torch").prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1) as session:
        return model, session.input_ids, session.run()


def test_variants_are_runtimes_of_their_own_name():
    assert set(PRECISION_VARIANTS) <= set(RUNTIME_NAMES)
    for name, (base, precision) in PRECISION_VARIANTS.items():
        variant = get_runtime(name).variant
        assert (variant.name, variant.base_runtime, variant.precision) == (name, base, precision)
        assert variant.calibration and variant.as_dict()["calibration"] == variant.calibration
    assert get_runtime("onnxruntime").variant.as_dict() == {
        "name": "onnxruntime", "base_runtime": "onnxruntime", "precision": "f32", "calibration": "none"}
    assert get_runtime("openvino", precision="bf16").variant.precision == "bf16"
    assert "per-channel" in get_runtime("onnxruntime-int8").variant.calibration
    assert get_runtime("openvino-int8").variant.calibration == "nncf: 16 sequences of the shipped corpus, seed 0"


@pytest.mark.parametrize("name", CPU_VARIANTS)
def test_variant_runs_close_to_f32_but_not_in_f32(reference, name, tmp_path):
    runtime = _available_or_skip(name)
    model, input_ids, expected = reference
    with runtime.prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1, workdir=tmp_path) as session:
        np.testing.assert_array_equal(session.input_ids, input_ids)
        output = session.run()
        assert session.runtime == name and session.variant == runtime.variant
        assert isinstance(session.graph_node_count, int) and session.graph_node_count > 10
        np.testing.assert_array_equal(session.infer(input_ids), output)
    assert output.shape == expected.shape and output.dtype == np.float32
    assert _cosine(output, expected) > 0.9  # random weights: well above what garbage gives (about 0)
    assert np.abs(output - expected).max() > 1e-4  # it did not quietly run in f32


def test_onnxruntime_int8_runs_the_quantised_graph(reference, tmp_path):
    import onnx

    model = reference[0]
    with get_runtime("onnxruntime-int8").prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1, workdir=tmp_path) as s:
        assert s.thread_settings["intra_op_num_threads"] == 1
        optimized = onnx.load(str(tmp_path / "model.optimized.onnx"), load_external_data=False)
        assert len(optimized.graph.node) == s.graph_node_count
    op_types = {node.op_type for node in optimized.graph.node}
    assert op_types & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, op_types
    assert (tmp_path / "model.int8.onnx").is_file()


def test_onnxruntime_int8_leaves_the_projection_of_concatenated_heads_in_f32(reference, tmp_path):
    """SPEC's layers mix operation types, so their heads are concatenated before the output projection;
    that MatMul stays f32 (one activation scale for DFT and attention heads rounds the small ones away),
    the feed-forward ones are quantised."""
    import onnx

    model = reference[0]
    with get_runtime("onnxruntime-int8").prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1, workdir=tmp_path):
        pass
    graph = onnx.load(str(tmp_path / "model.int8.onnx"), load_external_data=False).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    projections = [node for node in graph.node if node.op_type == "MatMul" and "attention_output" in node.name]
    assert len(projections) == len(SPEC.layers)
    assert all(producers.get(node.input[0]) == "Concat" for node in projections)
    quantised = [node.name for node in graph.node if node.op_type in {"MatMulInteger", "DynamicQuantizeMatMul"}]
    assert any("feed_forward" in name for name in quantised), quantised
    assert not any("attention_output" in name for name in quantised), quantised


def test_openvino_int8_calibrates_on_seeded_corpus_sequences():
    if importlib.util.find_spec("tokenizers") is None:
        pytest.skip("tokenizers is not installed (edgetran[train])")
    batches = calibration_batches(4, 16, vocab_size=500, sequences=10, seed=0)
    assert len(batches) == 2 and all(b.shape == (4, 16) and b.dtype == np.int64 for b in batches)
    assert all(int(b.max()) < 500 for b in batches) and all((b[:, 0] == 2).all() for b in batches)  # [CLS]
    again = calibration_batches(4, 16, vocab_size=500, sequences=10, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(batches[0], calibration_batches(4, 16, vocab_size=500, sequences=10, seed=1)[0])
    assert len(calibration_batches(32, 16, vocab_size=500, sequences=16)) == 1  # at least one whole batch


def test_torch_f16_needs_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime = get_runtime("torch-f16")
    assert not runtime.is_available()
    assert "CUDA GPU" in runtime.unavailable_reason()
    with pytest.raises(RuntimeUnavailableError, match="runtime 'torch-f16' runs float16 on a CUDA GPU"):
        runtime.prepare(SPEC, vocab_size=VOCAB_SIZE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_torch_f16_runs_on_the_gpu(reference):
    model, input_ids, expected = reference
    with get_runtime("torch-f16").prepare(model, BATCH_SIZE, SEQ_LEN) as session:
        assert _cosine(session.run(), expected) > 0.9
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was


def test_openvino_bf16_needs_a_cpu_with_bf16(monkeypatch):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    import openvino as ov

    real_core = ov.Core

    class CoreWithoutBf16:
        def __init__(self):
            self._core = real_core()
            self.available_devices = self._core.available_devices

        def get_property(self, device, name):
            value = self._core.get_property(device, name)
            return [c for c in value if c != "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else value

    monkeypatch.setattr(ov, "Core", CoreWithoutBf16)
    runtime = get_runtime("openvino-bf16")
    assert not runtime.is_available()
    reason = runtime.unavailable_reason()
    assert "needs a CPU with bf16 support" in reason and "\n" not in reason
    with pytest.raises(RuntimeUnavailableError, match="needs a CPU with bf16 support"):
        runtime.prepare(SPEC, vocab_size=VOCAB_SIZE)


def test_missing_nncf_is_reported(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))
    runtime = get_runtime("openvino-int8")
    assert not runtime.is_available()
    with pytest.raises(RuntimeUnavailableError, match=r"\['nncf'\].*edgetran\[openvino\]"):
        runtime.prepare(SPEC)


def test_a_measurement_records_the_variant(tmp_path):
    spec = ArchSpec((LayerSpec(128, ("sa_sdp", "c_5"), (256,)),))
    result = measure_architecture(spec, "onnxruntime-int8", batch_size=1, seq_len=16, num_threads=1,
                                  vocab_size=500, time_cap_s=1.0, target_rel_ci=0.5, min_repeats=5, warmup=1)
    assert result.status in ("ok", "unstable"), result.error
    assert result.runtime == "onnxruntime-int8"
    assert result.versions["runtime_variant"] == get_runtime("onnxruntime-int8").variant.as_dict()
    with RunStore(tmp_path / "store.sqlite") as store:
        run_id = store.create_run("ci-cpu", "onnxruntime-int8", batch_size=1, seq_len=16, num_threads=1)
        store.add_measurement(run_id, result)
        (stored,) = store.measurements(run_id=run_id)
    assert stored.versions["runtime_variant"]["precision"] == "int8"


def test_protran_measure_with_a_variant_records_it_in_the_run_store(tmp_path, capsys):
    archs = tmp_path / "one.json"
    archs.write_text(json.dumps({"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[256]] * 2}))
    assert main(["measure", str(archs), "--device", "ci-cpu", "--runtime", "onnxruntime-int8", "--seq-len", "16",
                 "--vocab-size", "500", "--time-cap-s", "1", "--target-rel-ci", "0.5", "--meter", "none",
                 "--reference-every", "0", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured_ok"] + summary["unstable"] == 1, summary
    with RunStore(tmp_path / "ci-cpu.sqlite", readonly=True) as store:
        (run,) = store.runs()
        (row,) = store.measurements(run_id=run.id)
    assert run.runtime == row.runtime == "onnxruntime-int8"
    for versions in (run.versions, row.versions):
        assert versions["runtime_variant"]["base_runtime"] == "onnxruntime"
        assert versions["runtime_variant"]["precision"] == "int8"


# -- output drift -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny masked-language model pre-trained for a few steps on the shipped corpus."""
    if importlib.util.find_spec("tokenizers") is None:
        pytest.skip("tokenizers is not installed (edgetran[train])")
    corpus = load_corpus(seq_len=16)
    model = build_mlm_model(MLM_SPEC, seed=0, vocab_size=corpus.vocab_size, max_positions=32)
    folder = tmp_path_factory.mktemp("pretrain")
    pretrain(model, corpus, PretrainConfig(max_steps=4, batch_size=8, warmup_steps=1, lr=1e-3, log_every=2),
             checkpoint_dir=folder)
    return folder / "checkpoint.pt", model, corpus


def test_output_drift_of_a_variant(checkpoint):
    _, model, corpus = checkpoint
    drift = output_drift(model, "onnxruntime-int8", corpus.validation[:6], batch_size=2, seed=0)
    assert (drift.runtime, drift.base_runtime, drift.precision) == ("onnxruntime-int8", "onnxruntime", "int8")
    assert drift.sequences == 6 and drift.calibration.startswith("dynamic")
    assert 0.9 < drift.hidden_cosine <= 1.0 + 1e-9
    assert 0 < drift.mlm_loss_f32 < 20 and 0 < drift.mlm_loss < 20
    assert drift.mlm_loss_increase_rel == pytest.approx((drift.mlm_loss - drift.mlm_loss_f32) / drift.mlm_loss_f32)
    assert set(drift.report_entry()) == DRIFT_KEYS
    with pytest.raises(TypeError, match="masked-language model"):
        output_drift(model.encoder, "onnxruntime-int8", corpus.validation[:2])


def test_drift_command_writes_the_report(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = checkpoint[0]
    out = tmp_path / "drift.json"
    assert main(["drift", "--checkpoint", str(path), "--runtime", "onnxruntime-int8", "--runtime", "torch-f16",
                 "--seq-len", "16", "--sequences", "4", "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert set(report) == {"model", "sequences", "runtimes"}
    assert report["model"] == {"checkpoint": str(path), "arch_hash": model_hash(MLM_SPEC)}
    assert report["sequences"] == 4
    assert list(report["runtimes"]) == ["onnxruntime-int8", "torch-f16"]
    entry = report["runtimes"]["onnxruntime-int8"]
    assert set(entry) == DRIFT_KEYS and entry["precision"] == "int8" and entry["hidden_cosine"] > 0.9
    unavailable = report["runtimes"]["torch-f16"]
    assert unavailable["available"] is False and "CUDA" in unavailable["reason"]
    assert set(unavailable) == {"available", "reason"}


def test_drift_command_refuses_a_bad_checkpoint_in_one_line(checkpoint, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for argv in (["--checkpoint", str(garbage)], ["--checkpoint", str(tmp_path / "missing.pt")]):
        assert main(["drift", *argv, "--runtime", "onnxruntime-int8"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("protran: error:") and "\n" not in err and "Traceback" not in err
    older = tmp_path / "older.pt"
    state = torch.load(checkpoint[0], weights_only=True)
    del state["architecture"]
    torch.save(state, older)
    assert main(["drift", "--checkpoint", str(older), "--runtime", "onnxruntime-int8"]) == 2
    assert "--arch" in capsys.readouterr().err


def test_protran_profile_with_openvino_int8(tmp_path, capsys):
    _available_or_skip("openvino-int8")
    space = tmp_path / "tiny.yaml"
    space.write_text("encoder_layers: [2]\nhidden_size: [128]\nattention_heads: [2, 4]\n"
                     "operation_types: [sa_sdp, c_5]\nfeed_forward_depth: [1]\nfeed_forward_dims: [256]\n")
    assert main(["profile", "--device", "ci-cpu", "--runtime", "openvino-int8", "--space", str(space),
                 "--seed-samples", "2", "--max-samples", "2", "--seq-len", "16", "--vocab-size", "500",
                 "--time-cap-s", "1", "--target-rel-ci", "0.5", "--meter", "none", "--surrogate", "gbdt",
                 "--reference-every", "0", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runtime"] == "openvino-int8" and summary["measured_ok"] + summary["unstable"] == 2, summary
    with RunStore(tmp_path / "ci-cpu.sqlite", readonly=True) as store:
        rows = store.measurements()
    assert {row.versions["runtime_variant"]["calibration"] for row in rows} == {
        "nncf: 16 sequences of the shipped corpus, seed 0"}
