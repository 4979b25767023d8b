"""flexibert: the FlexiBERT 2.0 design space and everything about one architecture.

An architecture is an immutable :class:`ArchSpec`, validated against a :class:`DesignSpace`. From it
come the 37-integer embedding (:func:`embed` / :func:`decode`), the reference hash
(:func:`model_hash`), analytic costs (:func:`analytic_features`), a PyTorch model
(:func:`build_model`), exports to ONNX, OpenVINO IR and TorchScript, and weight transfer between
neighbouring architectures (:func:`transfer_weights`).

The design-space names are imported with the package; the names that need torch are imported on
first use (:mod:`flexibert.lazy`), so that the design-space tools and the command-line help start
instantly.
"""

from typing import TYPE_CHECKING

from flexibert._embedding import decode, embed, embedding_bounds, is_valid_embedding, model_hash
from flexibert._errors import EdgetranError, ExportError, InvalidArchitectureError
from flexibert._sampling import (
    MODEL_TYPES,
    SAMPLING_METHODS,
    diversity_report,
    model_type,
    narrow_limit,
    normalized_embeddings,
    sample_architectures,
)
from flexibert._space import DesignSpace
from flexibert._spec import DEFAULT_MAX_POSITIONS, DEFAULT_VOCAB_SIZE, ArchSpec, LayerSpec, as_spec
from flexibert.choices import EXPORT_FORMATS
from flexibert.lazy import attach

if TYPE_CHECKING:
    from flexibert._data import (
        CORPUS_DIR,
        DATASETS_DIR,
        GLUE_TASKS,
        IGNORE_INDEX,
        GlueExamples,
        GlueTask,
        GlueTaskData,
        SpecialTokens,
        TextCorpus,
        derive_seed,
        load_corpus,
        load_glue_task,
        load_glue_tsv,
        load_tokenizer,
        mask_tokens,
        mlm_batches,
        pack_blocks,
        read_documents,
        train_tokenizer,
    )
    from flexibert._export import (
        as_model,
        check_shape,
        example_input_ids,
        export,
        export_formats,
        export_onnx,
        export_openvino,
        export_torchscript,
        vocab_size_of,
    )
    from flexibert._features import (
        ANALYTIC_FEATURE_NAMES,
        activation_memory_bytes,
        analytic_feature_vector,
        analytic_features,
        count_parameters,
        embedding_parameters,
        estimate_flops,
    )
    from flexibert._model import (
        EncoderLayer,
        FlexiBertEncoder,
        FlexiBertForMaskedLM,
        FlexiBertForSequenceClassification,
        build_classifier,
        build_mlm_model,
        build_model,
    )
    from flexibert._ops import DynamicConvHead, dynamic_conv_weights, self_attention_weights
    from flexibert._ray import RayExecutor, RayExecutorError, ray_executor
    from flexibert._training import (
        FinetuneConfig,
        PretrainConfig,
        TrainResult,
        TuningResult,
        evaluate_mlm,
        finetune,
        glue_metrics,
        load_checkpoint,
        load_mlm_checkpoint,
        pretrain,
        resolve_device,
        tune_finetuning,
    )
    from flexibert._transfer import copy_block, copy_head_weights, transfer_weights
    from flexibert.embeddings import random_embeddings, repair_embeddings
    from flexibert.feature_table import FeatureTable, feature_table

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "flexibert._data": [
            "CORPUS_DIR",
            "DATASETS_DIR",
            "GLUE_TASKS",
            "IGNORE_INDEX",
            "GlueExamples",
            "GlueTask",
            "GlueTaskData",
            "SpecialTokens",
            "TextCorpus",
            "derive_seed",
            "load_corpus",
            "load_glue_task",
            "load_glue_tsv",
            "load_tokenizer",
            "mask_tokens",
            "mlm_batches",
            "pack_blocks",
            "read_documents",
            "train_tokenizer",
        ],
        "flexibert._export": [
            "as_model",
            "check_shape",
            "example_input_ids",
            "export",
            "export_formats",
            "export_onnx",
            "export_openvino",
            "export_torchscript",
            "vocab_size_of",
        ],
        "flexibert._features": [
            "ANALYTIC_FEATURE_NAMES",
            "activation_memory_bytes",
            "analytic_feature_vector",
            "analytic_features",
            "count_parameters",
            "embedding_parameters",
            "estimate_flops",
        ],
        "flexibert._ops": ["DynamicConvHead", "dynamic_conv_weights", "self_attention_weights"],
        "flexibert._ray": ["RayExecutor", "RayExecutorError", "ray_executor"],
        "flexibert._model": [
            "EncoderLayer",
            "FlexiBertEncoder",
            "FlexiBertForMaskedLM",
            "FlexiBertForSequenceClassification",
            "build_classifier",
            "build_mlm_model",
            "build_model",
        ],
        "flexibert._training": [
            "FinetuneConfig",
            "PretrainConfig",
            "TrainResult",
            "TuningResult",
            "evaluate_mlm",
            "finetune",
            "glue_metrics",
            "load_checkpoint",
            "load_mlm_checkpoint",
            "pretrain",
            "resolve_device",
            "tune_finetuning",
        ],
        "flexibert._transfer": ["copy_block", "copy_head_weights", "transfer_weights"],
        "flexibert.embeddings": ["random_embeddings", "repair_embeddings"],
        "flexibert.feature_table": ["FeatureTable", "feature_table"],
    },
    eager=[
        "DEFAULT_MAX_POSITIONS",
        "DEFAULT_VOCAB_SIZE",
        "EXPORT_FORMATS",
        "MODEL_TYPES",
        "SAMPLING_METHODS",
        "ArchSpec",
        "DesignSpace",
        "EdgetranError",
        "ExportError",
        "InvalidArchitectureError",
        "LayerSpec",
        "as_spec",
        "decode",
        "diversity_report",
        "embed",
        "embedding_bounds",
        "is_valid_embedding",
        "model_hash",
        "model_type",
        "narrow_limit",
        "normalized_embeddings",
        "sample_architectures",
    ],
)
