"""flexibert: the FlexiBERT 2.0 design space and everything about one architecture.

An architecture is an immutable :class:`ArchSpec`, validated against a :class:`DesignSpace`. From it
come the 37-integer embedding (:func:`embed` / :func:`decode`), the reference hash
(:func:`model_hash`), analytic costs (:func:`analytic_features`), a PyTorch model
(:func:`build_model`), exports to ONNX, OpenVINO IR and TorchScript, and weight transfer between
neighbouring architectures (:func:`transfer_weights`).
"""

from flexibert._embedding import decode, embed, embedding_bounds, is_valid_embedding, model_hash
from flexibert._errors import ExportError, InvalidArchitectureError
from flexibert._sampling import (
    MODEL_TYPES,
    SAMPLING_METHODS,
    diversity_report,
    model_type,
    normalized_embeddings,
    sample_architectures,
)
from flexibert._space import DesignSpace
from flexibert._spec import ArchSpec, LayerSpec

# Names that need torch are imported on first use, so that the design-space tools and the
# command-line help start instantly.
_LAZY = {
    "EXPORT_FORMATS": "flexibert._export",
    "export": "flexibert._export",
    "export_onnx": "flexibert._export",
    "export_openvino": "flexibert._export",
    "export_torchscript": "flexibert._export",
    "export_formats": "flexibert._export",
    "example_input_ids": "flexibert._export",
    "ANALYTIC_FEATURE_NAMES": "flexibert._features",
    "activation_memory_bytes": "flexibert._features",
    "analytic_feature_vector": "flexibert._features",
    "analytic_features": "flexibert._features",
    "count_parameters": "flexibert._features",
    "estimate_flops": "flexibert._features",
    "FlexiBertEncoder": "flexibert._model",
    "FlexiBertForMaskedLM": "flexibert._model",
    "FlexiBertForSequenceClassification": "flexibert._model",
    "build_classifier": "flexibert._model",
    "build_mlm_model": "flexibert._model",
    "build_model": "flexibert._model",
    "transfer_weights": "flexibert._transfer",
    "TextCorpus": "flexibert._data",
    "SpecialTokens": "flexibert._data",
    "GlueTask": "flexibert._data",
    "GlueExamples": "flexibert._data",
    "GlueTaskData": "flexibert._data",
    "GLUE_TASKS": "flexibert._data",
    "load_tokenizer": "flexibert._data",
    "train_tokenizer": "flexibert._data",
    "load_corpus": "flexibert._data",
    "read_documents": "flexibert._data",
    "mlm_batches": "flexibert._data",
    "mask_tokens": "flexibert._data",
    "load_glue_tsv": "flexibert._data",
    "load_glue_task": "flexibert._data",
    "PretrainConfig": "flexibert._training",
    "FinetuneConfig": "flexibert._training",
    "TrainResult": "flexibert._training",
    "TuningResult": "flexibert._training",
    "pretrain": "flexibert._training",
    "evaluate_mlm": "flexibert._training",
    "finetune": "flexibert._training",
    "glue_metrics": "flexibert._training",
    "tune_finetuning": "flexibert._training",
    "load_checkpoint": "flexibert._training",
    "resolve_device": "flexibert._training",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flexibert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

__all__ = [
    "ANALYTIC_FEATURE_NAMES",
    "EXPORT_FORMATS",
    "GLUE_TASKS",
    "MODEL_TYPES",
    "SAMPLING_METHODS",
    "ArchSpec",
    "DesignSpace",
    "ExportError",
    "FinetuneConfig",
    "FlexiBertEncoder",
    "FlexiBertForMaskedLM",
    "FlexiBertForSequenceClassification",
    "GlueExamples",
    "GlueTask",
    "GlueTaskData",
    "InvalidArchitectureError",
    "LayerSpec",
    "PretrainConfig",
    "SpecialTokens",
    "TextCorpus",
    "TrainResult",
    "TuningResult",
    "activation_memory_bytes",
    "analytic_feature_vector",
    "analytic_features",
    "build_classifier",
    "build_mlm_model",
    "build_model",
    "count_parameters",
    "decode",
    "diversity_report",
    "embed",
    "embedding_bounds",
    "estimate_flops",
    "evaluate_mlm",
    "example_input_ids",
    "export",
    "export_formats",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "finetune",
    "glue_metrics",
    "is_valid_embedding",
    "load_checkpoint",
    "load_corpus",
    "load_glue_task",
    "load_glue_tsv",
    "load_tokenizer",
    "mask_tokens",
    "mlm_batches",
    "model_hash",
    "model_type",
    "normalized_embeddings",
    "pretrain",
    "read_documents",
    "resolve_device",
    "sample_architectures",
    "train_tokenizer",
    "transfer_weights",
    "tune_finetuning",
]
