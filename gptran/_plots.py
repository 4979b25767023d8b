"""Loss curves of every model of a search (the paper's Fig. 16).

The figure is a :class:`matplotlib.figure.Figure` on its own Agg canvas, never a pyplot figure: drawing
it neither switches the caller's matplotlib backend nor leaves a figure open in pyplot's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptran._mutations import MODES

_COLOURS = {"root": "black", MODES[0]: "tab:blue", MODES[1]: "tab:green", MODES[2]: "tab:orange", MODES[3]: "tab:red"}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first points average what they have."""
    if window <= 1 or len(values) < 2:
        return values
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    counts = np.minimum(ends, window)
    return (cumulative[ends] - cumulative[ends - counts]) / counts


def plot_loss_curves(tree: dict[str, Any], path: str | Path, smooth: int = 5, title: str | None = None) -> Path:
    """Draw each node's training loss against the total steps of its lineage, coloured by the mode
    that made it; the path to the best node is drawn thick and each held-out loss is a dot at the
    end of its curve. ``tree`` is :meth:`GrowAndPrune.tree`. Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    nodes = {node["id"]: node for node in tree["nodes"] if node["status"] == "trained"}
    best_path: set[int] = set()
    node_id = tree.get("best")
    while node_id is not None:
        best_path.add(node_id)
        node_id = nodes[node_id]["parent"] if node_id in nodes else None
    figure = Figure(figsize=(8, 4.5), dpi=120)
    FigureCanvasAgg(figure)  # renders the PNG; attaches itself to the figure
    axis = figure.subplots()
    for node in nodes.values():
        start = node["lineage_steps"] - node["steps"]
        colour = _COLOURS.get(node["mode"], "grey")
        on_path = node["id"] in best_path
        if node["curve"]:
            steps, losses = np.asarray(node["curve"], dtype=float).T
            axis.plot(start + steps, _smooth(losses, smooth), color=colour,
                      linewidth=2.2 if on_path else 0.9, alpha=1.0 if on_path else 0.55)
        if node["loss"] is not None and np.isfinite(node["loss"]):
            axis.plot([node["lineage_steps"]], [node["loss"]], "o", color=colour,
                      markersize=6 if on_path else 3.5, markeredgecolor="black" if on_path else colour)
    used = [mode for mode in _COLOURS if any(node["mode"] == mode for node in nodes.values())]
    handles = [Line2D([], [], color=_COLOURS[mode], label=mode) for mode in used]
    handles.append(Line2D([], [], color="grey", marker="o", linestyle="", label="held-out loss"))
    axis.legend(handles=handles, fontsize=8, loc="upper right")
    axis.set_xlabel("training steps (whole lineage)")
    axis.set_ylabel("MLM loss")
    default_title = f"GPTran: {len(nodes)} models; thick: path to the best (node {tree.get('best')})"
    axis.set_title(title or default_title, fontsize=10)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


__all__ = ["plot_loss_curves"]
