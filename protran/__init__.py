"""protran: measure and predict the hardware cost of FlexiBERT 2.0 architectures.

Runtimes run a built architecture (:func:`get_runtime`); :func:`measure_architecture` measures one
in its own process; power meters live in :mod:`protran.meters` and surrogates in
:mod:`protran.surrogates`; :class:`RunStore` keeps every measurement in SQLite; :func:`profile` runs
the active-learning profiler and :func:`replay` replays it on recorded data.
"""

_LAZY = {
    # run store
    "RunStore": "protran._store",
    "RunStoreError": "protran._store",
    "DatasetFormatError": "protran._store",
    "Run": "protran._store",
    "Measurement": "protran._store",
    "ModelRecord": "protran._store",
    "ProfileRow": "protran._store",
    "load_rows": "protran._store",
    "read_protran_json": "protran._store",
    # measurement protocol
    "MeasurementResult": "protran._protocol",
    "measure_architecture": "protran._protocol",
    "median_confidence_interval": "protran._protocol",
    "host_info": "protran._protocol",
    "software_versions": "protran._protocol",
    # runtimes
    "RUNTIME_NAMES": "protran._runtimes",
    "OPENVINO_PRECISIONS": "protran._runtimes",
    "Runtime": "protran._runtimes",
    "Session": "protran._runtimes",
    "TorchRuntime": "protran._runtimes",
    "OnnxRuntime": "protran._runtimes",
    "OpenVinoRuntime": "protran._runtimes",
    "RuntimeUnavailableError": "protran._runtimes",
    "available_runtimes": "protran._runtimes",
    "get_runtime": "protran._runtimes",
    # profiling, prediction and replay
    "ProfileConfig": "protran._profile",
    "ProfileSummary": "protran._profile",
    "Profiler": "protran._profile",
    "profile": "protran._profile",
    "measure_listed": "protran._profile",
    "ListedSummary": "protran._profile",
    "predict_specs": "protran._predict",
    "ActiveLearner": "protran._active",
    "ActiveStep": "protran._active",
    "TransferPrior": "protran._active",
    "run_active_learning": "protran._active",
    "replay": "protran._replay",
    "load_protran_dataset": "protran._replay",
    "DatasetRow": "protran._replay",
    "replay_files": "protran._replay",
    # meters
    "PowerMeter": "protran.meters",
    "PowerTrace": "protran.meters",
    "MeterError": "protran.meters",
    "MeterUnavailableError": "protran.meters",
    "available_meters": "protran.meters",
    "detect_meter": "protran.meters",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    # Imported on first use: torch, ONNX Runtime and OpenVINO take seconds to import.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'protran' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
