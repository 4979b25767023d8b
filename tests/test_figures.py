"""Library figures draw on their own Agg canvas: a caller's matplotlib backend and pyplot figures are
left as they were (an interactive session keeps its backend after plotting frontiers or loss curves)."""

import matplotlib
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def svg_backend():
    """The caller uses another (non-interactive, always available) backend, with one figure open."""
    import matplotlib.pyplot as plt

    original = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    figure = plt.figure()
    try:
        yield figure
    finally:
        plt.close(figure)
        matplotlib.use(original, force=True)


def _assert_untouched(figure) -> None:
    import matplotlib.pyplot as plt

    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == [figure.number]


def test_frontier_plot_keeps_the_callers_backend(svg_backend, tmp_path):
    from flexibert import model_hash, sample_architectures
    from protran import Frontier, FrontierPoint, plot_frontiers

    specs = sample_architectures(6, method="random", seed=0)
    points = tuple(FrontierPoint(spec, model_hash(spec), 0.5 + 0.05 * i, 0.01, 0.01 * (i + 1), 0.001)
                   for i, spec in enumerate(specs))
    path = plot_frontiers([Frontier("board", "latency", 0.5, points)], tmp_path / "frontiers.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    _assert_untouched(svg_backend)


def test_loss_curves_keep_the_callers_backend(svg_backend, tmp_path):
    from gptran._plots import plot_loss_curves

    curve = [[step, 6.0 - 0.1 * step] for step in range(10)]
    tree = {"best": 1, "nodes": [
        {"id": 0, "parent": None, "mode": "root", "status": "trained", "steps": 10, "lineage_steps": 10,
         "loss": 5.0, "curve": curve},
        {"id": 1, "parent": 0, "mode": "grow_ffnn", "status": "trained", "steps": 10, "lineage_steps": 20,
         "loss": 4.5, "curve": curve},
    ]}
    path = plot_loss_curves(tree, tmp_path / "losses.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    _assert_untouched(svg_backend)
