"""protran: measure and predict the hardware cost of FlexiBERT 2.0 architectures.

Runtimes run a built architecture (:func:`get_runtime`); :func:`measure_architecture` measures one
in its own process; power meters live in :mod:`protran.meters` and surrogates in
:mod:`protran.surrogates`; :class:`RunStore` keeps every measurement in SQLite; :func:`profile` runs
the active-learning profiler and :func:`replay` replays it on recorded data.

Every name is imported on first use (:mod:`flexibert.lazy`): torch, ONNX Runtime and OpenVINO take
seconds to import. To publish a name, add it to its module's list below and to the matching import
under ``TYPE_CHECKING`` (a test checks that the two agree).
"""

from typing import TYPE_CHECKING

from flexibert.lazy import attach

if TYPE_CHECKING:
    from protran._accuracy import (
        ACCURACY_FEATURES,
        DEFAULT_TASK,
        AccuracyFormatError,
        LambdaMARTRanker,
        accuracy_features,
        accuracy_training_set,
        import_accuracy,
        leave_some_out,
        leave_some_out_splits,
        load_accuracy,
        load_accuracy_files,
        make_accuracy_surrogate,
        ranking_metrics,
    )
    from protran._accuracy_model import (
        STRUCTURE_FEATURE_NAMES,
        AccuracyModel,
        MeanModel,
        SourceFit,
        fit_accuracy_model,
        noise_weights,
        structure_features,
        structure_features_of_embeddings,
    )
    from protran._active import ActiveLearner, ActiveStep, TransferPrior, run_active_learning
    from protran._drift import OutputDrift, drift_report, load_mlm_checkpoint, output_drift
    from protran._files import FileKind, file_kind
    from protran._graphs import (
        GRAPH_FEATURE_NAMES,
        GRAPH_OP_GROUPS,
        CompiledGraphStats,
        GraphCacheWarning,
        cache_graph_stats_from_rows,
        cache_graph_stats_from_store,
        compiled_graph_stats,
        graph_cache_dir,
    )
    from protran._pareto import (
        REFERENCE_POINT,
        Frontier,
        FrontierPoint,
        SearchSettings,
        hypervolume,
        is_non_dominated,
        search_frontier,
        search_frontiers,
    )
    from protran._plots import legend_label, plot_frontiers
    from protran._profile import (
        ListedSummary,
        ProfileConfig,
        Profiler,
        ProfileSummary,
        bracket_baseline,
        correct_run,
        drift_baseline,
        drift_factor,
        measure_listed,
        profile,
        reference_baseline,
        reference_spec,
    )
    from protran._protocol import (
        MeasurementResult,
        host_info,
        measure_architecture,
        median_confidence_interval,
        reference_latency,
        software_versions,
    )
    from protran._proxy import ProxyConfig, measure_proxies, rank_correlation
    from protran._replay import held_out_split, measure_matrix, replay, replay_files
    from protran._runtimes import (
        BASE_RUNTIME_NAMES,
        OPENVINO_PRECISIONS,
        PRECISION_VARIANTS,
        RUNTIME_NAMES,
        OnnxRuntime,
        OnnxRuntimeInt8,
        OpenVinoBf16,
        OpenVinoInt8,
        OpenVinoRuntime,
        Runtime,
        RuntimeUnavailableError,
        RuntimeVariant,
        Session,
        TorchF16,
        TorchRuntime,
        available_runtimes,
        get_runtime,
    )
    from protran._store import (
        AccuracyRecord,
        DatasetFormatError,
        Lease,
        Measurement,
        ModelRecord,
        ProfileRow,
        Run,
        RunLeasedError,
        RunStore,
        RunStoreError,
        UnknownRunError,
        load_rows,
        read_protran_json,
    )
    from protran._suggest import TrainingSuggestion, suggest_training
    from protran._training_free import (
        TrainingFreeCombination,
        load_training_free_combination,
        metric_features,
        training_free_combination_path,
        training_free_metrics,
        training_free_probe,
        training_free_probe_settings,
        training_free_scores,
    )
    from protran._transfer import (
        PREDICTABLE_R2,
        PRIOR_MIN_ROWS,
        PRIOR_SEED_SAMPLES,
        PriorResidual,
        cross_validated_r2,
        prior_converged,
    )
    from protran.meters import (
        MeterError,
        MeterUnavailableError,
        PowerMeter,
        PowerTrace,
        available_meters,
        detect_meter,
    )
    from protran.models import (
        Constraints,
        DeviceProfile,
        FittedModels,
        fit_models,
        load_models,
        load_profiles,
        target_label,
        target_parts,
    )

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        # run store
        "protran._store": [
            "AccuracyRecord",
            "DatasetFormatError",
            "Lease",
            "Measurement",
            "ModelRecord",
            "ProfileRow",
            "Run",
            "RunLeasedError",
            "RunStore",
            "RunStoreError",
            "UnknownRunError",
            "load_rows",
            "read_protran_json",
        ],
        # measurement protocol
        "protran._protocol": [
            "MeasurementResult",
            "host_info",
            "measure_architecture",
            "median_confidence_interval",
            "reference_latency",
            "software_versions",
        ],
        # runtimes
        "protran._runtimes": [
            "BASE_RUNTIME_NAMES",
            "OPENVINO_PRECISIONS",
            "PRECISION_VARIANTS",
            "RUNTIME_NAMES",
            "OnnxRuntime",
            "OnnxRuntimeInt8",
            "OpenVinoBf16",
            "OpenVinoInt8",
            "OpenVinoRuntime",
            "Runtime",
            "RuntimeUnavailableError",
            "RuntimeVariant",
            "Session",
            "TorchF16",
            "TorchRuntime",
            "available_runtimes",
            "get_runtime",
        ],
        # output drift of reduced-precision runtimes
        "protran._drift": ["OutputDrift", "drift_report", "load_mlm_checkpoint", "output_drift"],
        # profiling, active learning and replay
        "protran._profile": [
            "ListedSummary",
            "ProfileConfig",
            "ProfileSummary",
            "Profiler",
            "bracket_baseline",
            "correct_run",
            "drift_baseline",
            "drift_factor",
            "measure_listed",
            "profile",
            "reference_baseline",
            "reference_spec",
        ],
        "protran._active": ["ActiveLearner", "ActiveStep", "TransferPrior", "run_active_learning"],
        "protran._replay": ["held_out_split", "measure_matrix", "replay", "replay_files"],
        "protran._transfer": ["PREDICTABLE_R2", "PRIOR_MIN_ROWS", "PRIOR_SEED_SAMPLES", "PriorResidual",
                              "cross_validated_r2", "prior_converged"],
        # accuracy data, accuracy models and proxies
        "protran._accuracy": [
            "ACCURACY_FEATURES",
            "DEFAULT_TASK",
            "AccuracyFormatError",
            "LambdaMARTRanker",
            "accuracy_features",
            "accuracy_training_set",
            "import_accuracy",
            "leave_some_out",
            "leave_some_out_splits",
            "load_accuracy",
            "load_accuracy_files",
            "make_accuracy_surrogate",
            "ranking_metrics",
        ],
        "protran._accuracy_model": [
            "STRUCTURE_FEATURE_NAMES",
            "AccuracyModel",
            "MeanModel",
            "SourceFit",
            "fit_accuracy_model",
            "noise_weights",
            "structure_features",
            "structure_features_of_embeddings",
        ],
        "protran._proxy": [
            "ProxyConfig",
            "measure_proxies",
            "rank_correlation",
        ],
        "protran._training_free": [
            "TrainingFreeCombination",
            "load_training_free_combination",
            "metric_features",
            "training_free_combination_path",
            "training_free_metrics",
            "training_free_probe",
            "training_free_probe_settings",
            "training_free_scores",
        ],
        # fitted models and frontiers
        "protran.models": [
            "Constraints",
            "DeviceProfile",
            "FittedModels",
            "fit_models",
            "load_models",
            "load_profiles",
            "target_label",
            "target_parts",
        ],
        "protran._pareto": [
            "REFERENCE_POINT",
            "Frontier",
            "FrontierPoint",
            "SearchSettings",
            "hypervolume",
            "is_non_dominated",
            "search_frontier",
            "search_frontiers",
        ],
        "protran._suggest": ["TrainingSuggestion", "suggest_training"],
        "protran._plots": ["legend_label", "plot_frontiers"],
        "protran._files": ["FileKind", "file_kind"],
        # compiled graphs of a runtime (the costs+graph features)
        "protran._graphs": [
            "GRAPH_FEATURE_NAMES",
            "GRAPH_OP_GROUPS",
            "CompiledGraphStats",
            "GraphCacheWarning",
            "cache_graph_stats_from_rows",
            "cache_graph_stats_from_store",
            "compiled_graph_stats",
            "graph_cache_dir",
        ],
        # meters
        "protran.meters": [
            "MeterError",
            "MeterUnavailableError",
            "PowerMeter",
            "PowerTrace",
            "available_meters",
            "detect_meter",
        ],
    },
)
