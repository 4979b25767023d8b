"""gptran: grow and prune one FlexiBERT 2.0 architecture block by block under the MLM loss.

:class:`GrowAndPrune` (or :func:`run_search`) trains a tree of models: each child changes one layer
of its parent (more or fewer attention heads, a wider, deeper, narrower or shallower feed-forward
stack), inherits the parent's weights, trains briefly, and is kept if its held-out loss is good
enough. :class:`MLMTrainer` trains and scores the models on a text corpus; the operators themselves
are :func:`grow_attention_heads`, :func:`feed_forward_growths`, :func:`prune_attention_heads` and
:func:`prune_feed_forward`, and :func:`inherit_weights` moves the weights.
"""

# Everything here needs torch: names are imported on first use, so that `gptran --help` is instant.
_LAZY = {
    "MODES": "gptran._mutations",
    "Mutation": "gptran._mutations",
    "feed_forward_growths": "gptran._mutations",
    "grow_attention_heads": "gptran._mutations",
    "inherit_weights": "gptran._mutations",
    "prune_attention_heads": "gptran._mutations",
    "prune_feed_forward": "gptran._mutations",
    "plot_loss_curves": "gptran._plots",
    "PAPER_STEPS": "gptran._search",
    "ChildTrainer": "gptran._search",
    "GrowAndPrune": "gptran._search",
    "MLMTrainer": "gptran._search",
    "Node": "gptran._search",
    "SearchConfig": "gptran._search",
    "run_search": "gptran._search",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gptran' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(_LAZY)
