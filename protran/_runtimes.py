"""Inference runtimes that run a FlexiBERT encoder: torch (eager), ONNX Runtime and OpenVINO, each in
f32, and their reduced-precision variants.

A :class:`Runtime` turns an architecture (or a built ``nn.Module``) into a :class:`Session` in
:meth:`Runtime.prepare`, which does everything that must not be timed: building, exporting, quantising
and compiling. :meth:`Session.run` then runs one inference on a fixed, seeded input.

Every runtime describes itself as a :class:`RuntimeVariant`: its name, the f32 runtime it derives from,
its precision and how it was calibrated. The variants (see :data:`PRECISION_VARIANTS`) are runtimes of
their own name, so a run store, a surrogate or a frontier of ``onnxruntime-int8`` never mixes with one of
``onnxruntime``:

* ``onnxruntime-int8``: ONNX Runtime's dynamic quantisation of the exported graph. Only MatMul weights
  are quantised (int8, per output channel); quantising every op type also turns convolutions into
  ``ConvInteger``, which gives away most of the speed-up on mixed layers (``benchmarks/precision.py``).
* ``openvino-int8``: NNCF post-training quantisation of the OpenVINO model (transformer preset),
  calibrated on seeded sequences of the shipped corpus at the profiled shape; what stays in floating
  point runs in f32.
* ``openvino-bf16``: OpenVINO with ``INFERENCE_PRECISION_HINT`` bf16, only on CPUs that support it.
* ``torch-f16``: eager torch in float16 on a CUDA GPU.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import importlib.metadata
import importlib.util
import logging
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flexibert import ArchSpec, EdgetranError, ExportError
from protran.vocabulary import (
    BASE_RUNTIME_NAMES,  # noqa: F401  (published by protran with the other names)
    OPENVINO_PRECISIONS,
    PRECISION_VARIANTS,
    RUNTIME_NAMES,
)


class RuntimeUnavailableError(EdgetranError, RuntimeError):
    """The library or the device a runtime needs is not present on this machine."""


@dataclass(frozen=True)
class RuntimeVariant:
    """What a runtime computes in: ``name`` (the runtime's), ``base_runtime`` (the f32 runtime it derives
    from: torch, onnxruntime or openvino), ``precision`` (f32, bf16, f16 or int8) and ``calibration``
    (how the reduced precision was set up; "none" for f32)."""

    name: str
    base_runtime: str
    precision: str
    calibration: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Session(abc.ABC):
    """A model ready to run in one runtime, on one fixed input.

    Attributes: ``runtime`` (name), ``input_ids`` (int64 ``[batch, seq]``), ``thread_settings``
    (what the runtime reports it applied), ``graph_node_count`` (nodes of the compiled graph, None
    where the runtime has no graph: of the graph actually run, quantised for an int8 variant),
    ``prepare_s`` (seconds spent in preparation), ``export_s`` (the part of it spent exporting and
    quantising; 0 for torch) and ``variant`` (the :class:`RuntimeVariant` of the runtime that prepared it).
    """

    runtime: str
    variant: RuntimeVariant

    def __init__(self, input_ids: np.ndarray, thread_settings: dict[str, Any], workdir: Path | None = None) -> None:
        self.input_ids = input_ids
        self.thread_settings = thread_settings
        self.workdir = workdir
        self.graph_node_count: int | None = None
        self.prepare_s: float = float("nan")
        self.export_s: float = 0.0
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @abc.abstractmethod
    def run(self) -> np.ndarray:
        """One inference on :attr:`input_ids`; returns the hidden states as float32 numpy."""

    def infer(self, input_ids: np.ndarray) -> np.ndarray:
        """One inference on other token ids of the prepared shape (int64 ``[batch, seq]``, the shape the
        compiled graph is fixed to; serving requests, drift); returns the hidden states as float32
        numpy. Not for timing: :meth:`run` is."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        if ids.shape != self.input_ids.shape:
            raise ValueError(f"input_ids must have the prepared shape {tuple(self.input_ids.shape)}, got {ids.shape}")
        return self._infer(ids)

    @abc.abstractmethod
    def _infer(self, input_ids: np.ndarray) -> np.ndarray:
        ...

    def close(self) -> None:
        """Release the model and any temporary files."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"threads={self.thread_settings}, graph_node_count={self.graph_node_count})"
        )


class Runtime(abc.ABC):
    """One inference runtime. Subclasses set ``name`` and ``libraries`` and implement ``_prepare``."""

    name: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]]  # import names; the first is the runtime itself

    @property
    def variant(self) -> RuntimeVariant:
        """The precision this runtime computes in and how it was calibrated (f32, none, by default)."""
        return RuntimeVariant(self.name, self.name, "f32", "none")

    def unavailable_reason(self) -> str | None:
        """Why this runtime cannot run here (one line), or None when it can."""
        try:
            self._check_available()
        except RuntimeUnavailableError as error:
            return str(error)
        return None

    def is_available(self) -> bool:
        """Whether the libraries (and the device) this runtime needs are present: :meth:`_check_available`,
        the one check, which :meth:`unavailable_reason` and :meth:`prepare` use too."""
        return self.unavailable_reason() is None

    def versions(self) -> dict[str, str]:
        """Versions of the libraries involved, plus Python's; for the measurement record."""
        found = {"python": platform.python_version()}
        for module in dict.fromkeys(("torch", *self.libraries)):
            try:
                found[module] = _distribution_version(module)
            except importlib.metadata.PackageNotFoundError:
                continue
        return found

    def prepare(
        self,
        spec_or_model,
        batch_size: int = 1,
        seq_len: int = 128,
        num_threads: int | None = None,
        workdir: str | Path | None = None,
        *,
        input_seed: int = 0,
        model_seed: int = 0,
        vocab_size: int | None = None,
    ) -> Session:
        """Build (from an ArchSpec / model_dict, with ``model_seed``), export and compile; not timed.

        ``num_threads`` None leaves the runtime's default. Exported files go to ``workdir`` (default:
        a temporary directory removed by :meth:`Session.close`). ``vocab_size`` applies to specs only.
        """
        self._check_available()
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads <= 0):
            raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
        from flexibert import as_model, check_shape, example_input_ids, vocab_size_of

        check_shape(batch_size, seq_len)
        if vocab_size is not None and not isinstance(spec_or_model, (ArchSpec, dict)):
            raise ValueError("vocab_size applies when building from an ArchSpec or model_dict, not to a built model")
        start = time.perf_counter()
        options = {} if vocab_size is None else {"vocab_size": vocab_size}
        model = as_model(spec_or_model, seed=model_seed, **options).eval()
        ids = example_input_ids(batch_size, seq_len, vocab_size_of(model), seed=input_seed).numpy()
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix=f"edgetran-{self.name}-")
            workdir = tmp.name
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            session = self._prepare(model, ids, num_threads, workdir)
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise
        session._tmp = tmp
        session.workdir = workdir
        session.runtime = self.name
        session.variant = self.variant
        session.prepare_s = time.perf_counter() - start
        return session

    @abc.abstractmethod
    def _prepare(self, model, input_ids: np.ndarray, num_threads: int | None, workdir: Path) -> Session:
        ...

    def _check_available(self) -> None:
        missing = [module for module in self.libraries if importlib.util.find_spec(module) is None]
        if missing:
            raise RuntimeUnavailableError(
                f"runtime '{self.name}' needs the Python package(s) {missing}, which are not installed; "
                f"install them (e.g. pip install {' '.join(_DISTRIBUTIONS.get(m, m) for m in missing)})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# What installs a missing library: OpenVINO and NNCF are the [openvino] extra, tokenizers the [train]
# extra; the rest are core dependencies.
_DISTRIBUTIONS = {
    "onnxruntime": "onnxruntime", "openvino": "'edgetran[openvino]'", "onnx": "onnx", "torch": "torch==2.13.0",
    "nncf": "'edgetran[openvino]'", "tokenizers": "'edgetran[train]'",
}


def _distribution_version(module: str) -> str:
    for distribution in (module, f"{module}-gpu", f"{module}-cpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise importlib.metadata.PackageNotFoundError(module)


# -- torch ---------------------------------------------------------------------------------------


class TorchSession(Session):
    runtime = "torch"

    def __init__(self, model, input_ids: np.ndarray, device: str, previous_threads: int | None, settings) -> None:
        super().__init__(input_ids, settings)
        import torch

        self._torch = torch
        self._device = device
        self._model = model.to(device)
        self._ids = torch.from_numpy(input_ids).to(device)
        self._previous_threads = previous_threads

    def run(self) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self._model(self._ids)
        return output.float().cpu().numpy()  # .cpu() waits for a GPU to finish

    def _infer(self, input_ids: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self._model(torch.from_numpy(np.ascontiguousarray(input_ids)).to(self._device))
        return output.float().cpu().numpy()

    def close(self) -> None:
        if self._previous_threads is not None:
            self._torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
        super().close()


class TorchRuntime(Runtime):
    """Eager PyTorch. ``num_threads`` is applied with ``torch.set_num_threads`` (process-wide) and
    restored when the session is closed."""

    name = "torch"
    libraries = ("torch",)

    def __init__(self, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device

    def _check_available(self) -> None:
        super()._check_available()
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailableError("runtime 'torch' was asked for device 'cuda', but torch sees no CUDA GPU")

    def _prepare(self, model, input_ids, num_threads, workdir) -> Session:
        import torch

        previous = None
        if num_threads is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(num_threads)
        settings = {"torch.num_threads": torch.get_num_threads(), "device": self.device}
        return TorchSession(model, input_ids, self.device, previous, settings)

    def __repr__(self) -> str:
        return f"TorchRuntime(device={self.device!r})"


# -- ONNX Runtime --------------------------------------------------------------------------------


class OnnxRuntimeSession(Session):
    runtime = "onnxruntime"

    def __init__(self, session, input_ids: np.ndarray, settings, graph_node_count: int | None) -> None:
        super().__init__(input_ids, settings)
        self._session = session
        self._feed = {session.get_inputs()[0].name: input_ids}
        self.graph_node_count = graph_node_count
        self.providers = session.get_providers()

    def run(self) -> np.ndarray:
        return self._session.run(None, self._feed)[0]

    def _infer(self, input_ids: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._session.get_inputs()[0].name: input_ids})[0]

    def close(self) -> None:
        self._session = None
        super().close()


class OnnxRuntime(Runtime):
    """ONNX Runtime on the exported ONNX model (opset 18), all graph optimisations on, one
    inter-op thread; ``device='cuda'`` uses the CUDA execution provider."""

    name = "onnxruntime"
    libraries = ("onnxruntime", "onnx")

    def __init__(self, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device

    def _providers(self) -> list[str]:
        import onnxruntime as ort

        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailableError(
                "runtime 'onnxruntime' was asked for device 'cuda', but this onnxruntime build has no "
                f"CUDAExecutionProvider (available: {ort.get_available_providers()}); install onnxruntime-gpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def _check_available(self) -> None:
        super()._check_available()
        self._providers()

    def _prepare(self, model, input_ids, num_threads, workdir) -> Session:
        import onnx
        import onnxruntime as ort

        from flexibert import export_onnx

        providers = self._providers()
        batch_size, seq_len = input_ids.shape
        start = time.perf_counter()
        # The tracing exporter is several times faster than dynamo and exact at static shapes; fall back
        # to dynamo for a model it cannot handle.
        try:
            path = export_onnx(model, workdir / "model.onnx", batch_size=batch_size, seq_len=seq_len,
                               exporter="tracing")
        except ExportError:
            path = export_onnx(model, workdir / "model.onnx", batch_size=batch_size, seq_len=seq_len)
        path = self._runnable_model(model, path, workdir)
        export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = num_threads or 0  # 0: one per physical core
        options.log_severity_level = 3  # errors only
        optimized = workdir / "model.optimized.onnx"
        options.optimized_model_filepath = str(optimized)
        # Weights go beside the optimized graph, so that models over protobuf's 2 GiB limit save too.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", optimized.name + ".data"
        )
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:
            raise ExportError(f"onnxruntime could not load the exported ONNX model {path}: {error}") from error
        node_count = len(onnx.load(str(optimized), load_external_data=False).graph.node) if optimized.exists() else None
        settings = {
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "providers": session.get_providers(),
        }
        prepared = OnnxRuntimeSession(session, input_ids, settings, node_count)
        prepared.export_s = export_s
        return prepared

    def _runnable_model(self, model, path: Path, workdir: Path) -> Path:
        """The ONNX file the session runs: the export itself (a variant transforms it here)."""
        return path

    def __repr__(self) -> str:
        return f"OnnxRuntime(device={self.device!r})"


# -- OpenVINO ------------------------------------------------------------------------------------


class OpenVinoSession(Session):
    runtime = "openvino"

    def __init__(self, compiled, input_ids: np.ndarray, settings) -> None:
        super().__init__(input_ids, settings)
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.graph_node_count = len(compiled.get_runtime_model().get_ops())

    def run(self) -> np.ndarray:
        self._request.infer({0: self.input_ids})
        return self._request.get_output_tensor(0).data.copy()

    def _infer(self, input_ids: np.ndarray) -> np.ndarray:
        self._request.infer({0: input_ids})
        return self._request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._request = None
        self._compiled = None
        super().close()


class OpenVinoRuntime(Runtime):
    """OpenVINO on the CPU plugin, compiled from the saved IR for latency (one stream).

    ``precision`` sets ``INFERENCE_PRECISION_HINT``; the default "f32" keeps outputs within ~1e-5
    of torch, while the plugin's own default on CPUs with bf16 support is bf16 (errors ~1e-2).
    """

    name = "openvino"
    libraries = ("openvino",)

    def __init__(self, precision: str = "f32", device: str = "CPU") -> None:
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"precision must be one of {list(OPENVINO_PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.device = device

    def _check_available(self) -> None:
        super()._check_available()
        import openvino as ov

        available = ov.Core().available_devices
        if self.device not in available:
            raise RuntimeUnavailableError(
                f"runtime '{self.name}' has no device '{self.device}' here (available: {available})")

    def _prepare(self, model, input_ids, num_threads, workdir) -> Session:
        import openvino as ov

        from flexibert import export_openvino

        core = ov.Core()
        batch_size, seq_len = input_ids.shape
        start = time.perf_counter()
        path = export_openvino(model, workdir / "model.xml", batch_size=batch_size, seq_len=seq_len)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = num_threads
        read = self._runnable_model(model, core.read_model(str(path)), input_ids)
        export_s = time.perf_counter() - start
        try:
            compiled = core.compile_model(read, self.device, config)
        except Exception as error:
            raise ExportError(
                f"openvino could not compile the exported IR {path} for {self.device}: {error}"
            ) from error
        settings = {
            "INFERENCE_NUM_THREADS": compiled.get_property("INFERENCE_NUM_THREADS"),
            "INFERENCE_PRECISION_HINT": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "NUM_STREAMS": int(compiled.get_property("NUM_STREAMS")),
        }
        prepared = OpenVinoSession(compiled, input_ids, settings)
        prepared.export_s = export_s
        return prepared

    @property
    def variant(self) -> RuntimeVariant:
        return RuntimeVariant(self.name, "openvino", self.precision, "none")

    def _runnable_model(self, model, read_model, input_ids: np.ndarray):
        """The OpenVINO model that is compiled: the IR as read (a variant transforms it here)."""
        return read_model

    def __repr__(self) -> str:
        return f"OpenVinoRuntime(precision={self.precision!r}, device={self.device!r})"


def _type_name(element_type) -> str:
    """ov.Type.f32 -> 'f32'."""
    get_name = getattr(element_type, "get_type_name", None)
    return get_name() if callable(get_name) else str(element_type)


# -- reduced-precision variants ----------------------------------------------------------------------

#: Sequences of the shipped corpus that calibrate ``openvino-int8``, and the seed that draws them.
CALIBRATION_SEQUENCES = 16
CALIBRATION_SEED = 0


class OnnxRuntimeInt8(OnnxRuntime):
    """ONNX Runtime on the exported graph after dynamic int8 quantisation
    (``onnxruntime.quantization.quantize_dynamic``), with the session options of ``onnxruntime``.

    Only MatMul nodes with a matrix of weights are quantised, int8 per output channel (symmetric);
    activations are quantised per tensor at run time (uint8). In ``benchmarks/precision.py``, quantising
    every op type was no faster on attention layers and gave away most of the gain on convolutions
    (``ConvInteger``); per-channel weights ran as fast as per-tensor ones, closer to f32; and
    ``reduce_range`` changed nothing in speed and added error on this CPU (avx512), so it is off.
    """

    name = "onnxruntime-int8"

    @property
    def variant(self) -> RuntimeVariant:
        return RuntimeVariant(
            self.name, *PRECISION_VARIANTS[self.name],
            "dynamic: MatMul weights int8 per-channel, activations quantised at run time (uint8 per tensor); "
            "mixed layers' output projections f32",
        )

    def _runnable_model(self, model, path: Path, workdir: Path) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = workdir / "model.int8.onnx"
        # The quantiser logs a warning on the root logger that pre-processing might help; it does not here.
        with _quiet_root_logger():
            try:
                quantize_dynamic(
                    path, quantized, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                    op_types_to_quantize=["MatMul"], nodes_to_exclude=_f32_matmuls(path),
                    use_external_data_format=_weight_bytes(model) > 2**30,
                )
            except Exception as error:
                raise ExportError(f"onnxruntime could not quantise the exported ONNX model {path}: {error}") from error
        return quantized

    def __repr__(self) -> str:
        return f"OnnxRuntimeInt8(device={self.device!r})"


def _f32_matmuls(path: Path) -> list[str]:
    """MatMul nodes ``onnxruntime-int8`` leaves in f32:

    - those whose constant weight is not a matrix (a weighted-multiplicative attention's ``[1, d, d]``):
      ONNX Runtime's per-channel integer MatMul refuses them at run time;
    - those that read a ``Concat`` (the output projection of a layer whose heads are of several
      operation types, concatenated): the heads' scales differ by orders of magnitude (a DFT head's
      outputs are sums over the whole sequence), and the one per-tensor activation scale of dynamic
      quantisation rounds the small heads away. On ``benchmarks/precision.py``'s trained model this
      one projection per mixed layer was the whole MLM-loss increase (+4.3 % of its +4.5 %; every other
      MatMul alone: < 0.01 %).
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {tensor.name: len(tensor.dims) for tensor in graph.initializer}
    producers = {output: node.op_type for node in graph.node for output in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul"
            and (shapes.get(node.input[1], 2) != 2 or producers.get(node.input[0]) == "Concat")]


class OpenVinoInt8(OpenVinoRuntime):
    """OpenVINO after NNCF post-training quantisation (``nncf.quantize``, transformer model type).

    Calibration: ``calibration_sequences`` blocks of the shipped corpus's training split (tokenised with
    the shipped tokenizer, cut at the profiled sequence length), drawn with ``calibration_seed`` and fed
    in batches of the profiled batch size. Token ids beyond a model's vocabulary (a model built with a
    smaller one) become ``[UNK]``. What stays in floating point is compiled with precision hint f32.
    """

    name = "openvino-int8"
    libraries = ("openvino", "nncf", "tokenizers")

    def __init__(self, device: str = "CPU", calibration_sequences: int = CALIBRATION_SEQUENCES,
                 calibration_seed: int = CALIBRATION_SEED) -> None:
        super().__init__("f32", device)
        if not isinstance(calibration_sequences, int) or calibration_sequences <= 0:
            raise ValueError(f"calibration_sequences must be a positive int, got {calibration_sequences!r}")
        self.calibration_sequences = calibration_sequences
        self.calibration_seed = int(calibration_seed)

    @property
    def variant(self) -> RuntimeVariant:
        return RuntimeVariant(
            self.name, *PRECISION_VARIANTS[self.name],
            f"nncf: {self.calibration_sequences} sequences of the shipped corpus, seed {self.calibration_seed}",
        )

    def _runnable_model(self, model, read_model, input_ids: np.ndarray):
        import nncf

        from flexibert import vocab_size_of

        batch_size, seq_len = input_ids.shape
        batches = calibration_batches(batch_size, seq_len, vocab_size_of(model), self.calibration_sequences,
                                      self.calibration_seed)
        with _quiet_nncf(nncf):
            try:
                return nncf.quantize(read_model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                     subset_size=len(batches))
            except Exception as error:
                raise ExportError(f"nncf could not quantise the OpenVINO model: {error}") from error

    def __repr__(self) -> str:
        return (f"OpenVinoInt8(device={self.device!r}, calibration_sequences={self.calibration_sequences}, "
                f"calibration_seed={self.calibration_seed})")


class OpenVinoBf16(OpenVinoRuntime):
    """OpenVINO with ``INFERENCE_PRECISION_HINT`` bf16: available only where the CPU plugin lists BF16
    among its optimisation capabilities (elsewhere OpenVINO would quietly run f32)."""

    name = "openvino-bf16"

    def __init__(self, device: str = "CPU") -> None:
        super().__init__("bf16", device)

    @property
    def variant(self) -> RuntimeVariant:
        return RuntimeVariant(self.name, *PRECISION_VARIANTS[self.name],
                              "none: OpenVINO casts weights and activations to bf16")

    def _check_available(self) -> None:
        super()._check_available()
        import openvino as ov

        capabilities = list(ov.Core().get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        if "BF16" not in capabilities:
            raise RuntimeUnavailableError(
                f"runtime '{self.name}' needs a CPU with bf16 support, and this {self.device} has none "
                f"(OpenVINO capabilities: {', '.join(capabilities)}); use 'openvino' (f32) or 'openvino-int8'")

    def __repr__(self) -> str:
        return f"OpenVinoBf16(device={self.device!r})"


class TorchF16(TorchRuntime):
    """Eager torch in float16 on a CUDA GPU (the model is copied and cast; token ids stay int64).
    Unavailable without CUDA: float16 matrix multiplies on a CPU are emulated and slow."""

    name = "torch-f16"

    def __init__(self) -> None:
        super().__init__("cuda")

    @property
    def variant(self) -> RuntimeVariant:
        return RuntimeVariant(self.name, *PRECISION_VARIANTS[self.name],
                              "none: weights and activations cast to float16")

    def _check_available(self) -> None:
        # The libraries, then CUDA with a message that names float16 (TorchRuntime's would not).
        Runtime._check_available(self)
        import torch

        if not torch.cuda.is_available():
            raise RuntimeUnavailableError(
                f"runtime '{self.name}' runs float16 on a CUDA GPU, and torch sees none here; use 'torch' (f32)")

    def _prepare(self, model, input_ids, num_threads, workdir) -> Session:
        return super()._prepare(copy.deepcopy(model).half(), input_ids, num_threads, workdir)

    def __repr__(self) -> str:
        return "TorchF16()"


def calibration_batches(batch_size: int, seq_len: int, vocab_size: int, sequences: int = CALIBRATION_SEQUENCES,
                        seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """Seeded blocks of the shipped corpus's training split as int64 ``[batch_size, seq_len]`` batches:
    ``sequences`` of them, rounded down to whole batches (at least one batch)."""
    from flexibert import load_corpus

    batch_size, seq_len = int(batch_size), int(seq_len)
    corpus = load_corpus(seq_len=max(seq_len, 2))
    blocks = corpus.train.numpy()[:, :seq_len]
    count = max(batch_size, sequences - sequences % batch_size)
    chosen = np.random.default_rng(seed).choice(len(blocks), size=min(count, len(blocks)), replace=False)
    ids = blocks[np.sort(chosen)]
    ids = np.where(ids < vocab_size, ids, corpus.special_tokens.unk).astype(np.int64)
    return [ids[start:start + batch_size] for start in range(0, len(ids) - batch_size + 1, batch_size)]


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _quiet_nncf(nncf):
    """NNCF logs and draws progress bars on stdout; a measurement's stdout carries only its reply."""
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def _weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


# -- lookup --------------------------------------------------------------------------------------

_RUNTIMES: dict[str, type[Runtime]] = {
    "torch": TorchRuntime,
    "onnxruntime": OnnxRuntime,
    "openvino": OpenVinoRuntime,
    "onnxruntime-int8": OnnxRuntimeInt8,
    "openvino-int8": OpenVinoInt8,
    "openvino-bf16": OpenVinoBf16,
    "torch-f16": TorchF16,
}


def get_runtime(name: str, **options: Any) -> Runtime:
    """The runtime called ``name`` (one of :data:`RUNTIME_NAMES`), built with ``options``
    (e.g. ``device="cuda"`` for onnxruntime, ``precision="bf16"`` for openvino)."""
    if name not in _RUNTIMES:
        raise ValueError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIME_NAMES)}")
    return _RUNTIMES[name](**options)


def available_runtimes() -> list[str]:
    """Names of the runtimes whose libraries (and, for a variant, hardware support) are present."""
    return [name for name in RUNTIME_NAMES if get_runtime(name).is_available()]
