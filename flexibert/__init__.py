"""flexibert: the FlexiBERT 2.0 design space and everything about one architecture."""

from flexibert._embedding import decode, embed, embedding_bounds, is_valid_embedding, model_hash
from flexibert._errors import ExportError, InvalidArchitectureError
from flexibert._space import DesignSpace
from flexibert._spec import ArchSpec, LayerSpec

__all__ = [
    "ArchSpec",
    "DesignSpace",
    "ExportError",
    "InvalidArchitectureError",
    "LayerSpec",
    "decode",
    "embed",
    "embedding_bounds",
    "is_valid_embedding",
    "model_hash",
]
