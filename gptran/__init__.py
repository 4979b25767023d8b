"""gptran: grow and prune one FlexiBERT 2.0 architecture block by block under the MLM loss.

:class:`GrowAndPrune` (or :func:`run_search`) trains a tree of models: each child changes one layer
of its parent (more or fewer attention heads, a wider, deeper, narrower or shallower feed-forward
stack), inherits the parent's weights, trains briefly, and is kept if its held-out loss is good
enough. :class:`MLMTrainer` trains and scores the models on a text corpus; the operators themselves
are :func:`grow_attention_heads`, :func:`feed_forward_growths`, :func:`prune_attention_heads` and
:func:`prune_feed_forward`, and :func:`inherit_weights` moves the weights. The children of one expansion
can be trained all at once elsewhere through an executor (:func:`flexibert.ray_executor`: Ray tasks).

Everything here needs torch: every name is imported on first use (:mod:`flexibert.lazy`), so that
``gptran --help`` is instant; the imports under ``TYPE_CHECKING`` list the same names for editors.
"""

from typing import TYPE_CHECKING

from flexibert.lazy import attach

if TYPE_CHECKING:
    from gptran._mutations import (
        MODES,
        Mutation,
        feed_forward_growths,
        grow_attention_heads,
        inherit_weights,
        prune_attention_heads,
        prune_feed_forward,
    )
    from gptran._plots import plot_loss_curves
    from gptran._search import (
        PAPER_STEPS,
        ChildExecutor,
        ChildTrainer,
        GrowAndPrune,
        MLMTrainer,
        Node,
        SearchConfig,
        TrainedChild,
        run_search,
        train_child,
    )

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "gptran._mutations": [
            "MODES",
            "Mutation",
            "feed_forward_growths",
            "grow_attention_heads",
            "inherit_weights",
            "prune_attention_heads",
            "prune_feed_forward",
        ],
        "gptran._plots": ["plot_loss_curves"],
        "gptran._search": [
            "PAPER_STEPS",
            "ChildExecutor",
            "ChildTrainer",
            "GrowAndPrune",
            "MLMTrainer",
            "Node",
            "SearchConfig",
            "TrainedChild",
            "run_search",
            "train_child",
        ],
    },
)
