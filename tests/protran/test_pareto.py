"""Predicted Pareto frontiers: moves, search, constraints, the CLI and its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexibert import DesignSpace, count_parameters, decode, embed, is_valid_embedding, model_hash, sample_architectures
from protran._accuracy import load_accuracy
from protran._pareto import (
    REFERENCE_POINT,
    SearchSettings,
    _Moves,
    hypervolume,
    non_dominated,
    normalised_objectives,
    search_frontier,
)
from protran.cli import _SEARCH_DEFAULTS, main
from protran.models import Constraints, fit_models, load_profiles
from tests.protran.frontier_inputs import write_accuracy, write_profile

SPACE = DesignSpace.default()
SMALL_SEARCH = SearchSettings(pop_size=32, n_generations=5, n_initial_samples=16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pareto")
    profile = write_profile(folder / "board_b1_r1.json", sample_architectures(40, method="random", seed=1))
    accuracy = write_accuracy(folder / "scores.csv", sample_architectures(14, method="lhs_split", seed=2))
    return profile, accuracy


@pytest.fixture(scope="module")
def models(inputs):
    profile, accuracy = inputs
    return fit_models(load_profiles([profile]), load_accuracy(accuracy), seed=0)


# -- profiles ------------------------------------------------------------------------------------------


def test_profiles_from_run_stores_take_device_and_workload_from_the_runs(inputs, tmp_path):
    from protran._store import RunStore

    profile, _ = inputs
    store_path = tmp_path / "boards.sqlite"
    with RunStore(store_path) as store:
        store.import_protran_json(profile, device="board-a", batch_size=4)
        store.import_protran_json(profile, device="board-b")
    loaded = load_profiles([store_path])
    assert [(p.device, p.batch_size, p.seq_len, len(p.rows)) for p in loaded] == [("board-a", 4, 128, 40),
                                                                                  ("board-b", 1, 128, 40)]
    with pytest.raises(ValueError, match="appears in both"):
        load_profiles([profile, profile])
    with RunStore(store_path) as store:
        store.import_protran_json(profile, device="board-a", batch_size=8)
    with pytest.raises(ValueError, match="several .batch size, sequence length. settings"):
        load_profiles([store_path])


def test_one_device_under_several_runtimes_gives_one_target_per_runtime(inputs, tmp_path):
    from protran._store import RunStore
    from protran.models import target_label, target_parts

    profile, _ = inputs
    store_path = tmp_path / "runtimes.sqlite"
    with RunStore(store_path) as store:
        for runtime in ("openvino", "onnxruntime"):
            store.import_protran_json(profile, device="board-a", runtime=runtime)
        store.import_protran_json(profile, device="board-b", runtime="onnxruntime")
    plain = tmp_path / "board-a.json"  # the same device again, runtime unknown
    plain.write_text(profile.read_text())
    loaded = load_profiles([store_path, plain])
    assert [(p.device, p.runtime, len(p.rows)) for p in loaded] == [
        ("board-a[onnxruntime]", "onnxruntime", 40), ("board-a[openvino]", "openvino", 40),
        ("board-b", "onnxruntime", 40), ("board-a", None, 40)]
    models = fit_models(loaded[:2], None)
    assert {device: w.runtime for device, w in models.workloads.items()} == {
        "board-a[onnxruntime]": "onnxruntime", "board-a[openvino]": "openvino"}
    with pytest.raises(ValueError, match=r"'board-a\[onnxruntime\]' appears in both"):
        load_profiles([store_path, store_path])
    assert target_parts(target_label("rpi4", "onnxruntime-int8")) == ("rpi4", "onnxruntime-int8")
    assert target_parts("rpi4") == ("rpi4", None) and target_label("rpi4", None) == "rpi4"


def test_frontiers_name_their_runtime(inputs, tmp_path, capsys):
    from protran._pareto import Frontier
    from protran._plots import legend_label
    from protran._store import RunStore
    from protran.models import target_parts

    profile, accuracy = inputs
    store_path = tmp_path / "runtimes.sqlite"
    with RunStore(store_path) as store:
        for runtime in ("onnxruntime", "onnxruntime-int8"):
            store.import_protran_json(profile, device="board-a", runtime=runtime)
    plot = tmp_path / "frontiers.png"
    args = ["pareto", "--profile", str(store_path), str(inputs[0]), "--accuracy", str(accuracy), "--measure",
            "latency", "--pop-size", "16", "--generations", "2", "--plot", str(plot), "--json"]
    assert main(args) == 0
    frontiers = json.loads(capsys.readouterr().out)["frontiers"]
    assert [(f["device"], f["runtime"]) for f in frontiers] == [
        ("board-a[onnxruntime]", "onnxruntime"), ("board-a[onnxruntime-int8]", "onnxruntime-int8"),
        ("board_b1_r1", None)]
    assert plot.stat().st_size > 0
    models = fit_models(load_profiles([store_path]), load_accuracy(accuracy), seed=0)
    frontier = search_frontier(models, "board-a[onnxruntime-int8]", "latency", settings=SMALL_SEARCH)
    assert frontier.runtime == "onnxruntime-int8" and target_parts(frontier.device)[1] == frontier.runtime
    assert legend_label(frontier) == "board-a · onnxruntime-int8"
    assert legend_label(Frontier("board-b", "latency", 0.0, (), runtime="onnxruntime")) == "board-b · onnxruntime"
    assert legend_label(Frontier("board_b1_r1", "latency", 0.0, ())) == "board_b1_r1"
    assert main(args[:-3]) == 0
    assert "board-a[onnxruntime-int8] · accuracy vs latency" in capsys.readouterr().out


# -- building blocks ---------------------------------------------------------------------------------


def test_moves_are_small_valid_changes():
    moves = _Moves(SPACE)
    rng = np.random.default_rng(0)
    X = np.array([embed(spec) for spec in sample_architectures(100, method="random", seed=3)])
    for _ in range(5):
        X = moves.mutate(X, rng)
        assert all(is_valid_embedding(row) for row in X)
    att = np.array([embed(sample_architectures(1, seed=4)[0])[3]] * 50)
    before = SPACE.attention_ops[att[0]]
    for after in (SPACE.attention_ops[i] for i in moves.swap_head(att, rng)):
        changed = sum(abs(after.count(op) - before.count(op)) for op in set(before + after))
        assert len(after) == len(before) and changed <= 2
    heads = list(SPACE.attention_heads)
    for after in (SPACE.attention_ops[i] for i in moves.resize_heads(att, rng)):
        assert abs(heads.index(len(after)) - heads.index(len(before))) == 1
    x = embed(sample_architectures(1, seed=5)[0])
    grown = moves.change_depth(np.array([x] * 20), rng)
    for row in grown:
        spec, original = decode(row), decode(x)
        assert abs(spec.num_layers - original.num_layers) == 2
        assert spec.layers[: min(spec.num_layers, original.num_layers)] == original.layers[: spec.num_layers]
        assert all(layer == original.layers[-1] for layer in spec.layers[original.num_layers:])


def test_non_dominated_and_hypervolume_on_a_known_set():
    accuracy = np.array([0.5, 0.7, 0.6, 0.7, 0.9, 0.4])
    value = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 0.5])
    assert list(non_dominated(accuracy, value)) == [5, 0, 1, 4]
    # normalised with accuracy bounds (0.4, 0.9) and values (0.5, 5.0): the corner point (1, 0)
    corner = normalised_objectives(np.array([0.4]), np.array([0.5]), (0.4, 0.9), (0.5, 5.0))
    assert np.allclose(corner, [[1.0, 0.0]])
    volume = hypervolume(np.array([0.4]), np.array([0.5]), (0.4, 0.9), (0.5, 5.0))
    assert volume == pytest.approx((REFERENCE_POINT[0] - 1.0) * REFERENCE_POINT[1])


# -- search -------------------------------------------------------------------------------------------


def _check_frontier(frontier, models):
    points = frontier.points
    assert points, "empty frontier"
    for point in points:
        assert model_hash(point.spec) == point.arch_hash
        assert SPACE.contains(point.spec)
    accuracy = np.array([p.accuracy for p in points])
    value = np.array([p.value for p in points])
    for i in range(len(points)):
        dominated = (accuracy >= accuracy[i]) & (value <= value[i]) & ((accuracy > accuracy[i]) | (value < value[i]))
        assert not dominated.any(), f"point {i} is dominated"
    assert np.all(np.diff(value) > 0) and np.all(np.diff(accuracy) > 0)
    rows = models.predict([p.spec for p in points], frontier.device)  # the reported values are predictions
    field = {"latency": "latency_s", "energy": "energy_j", "peak_power": "peak_power_w"}[frontier.measure]
    assert [r["predicted"][field]["mean"] for r in rows] == list(value)
    assert [r["predicted"]["accuracy"]["mean"] for r in rows] == list(accuracy)
    return rows


def test_frontier_points_are_valid_and_non_dominated(models):
    frontier = search_frontier(models, "board_b1_r1", "energy", settings=SMALL_SEARCH)
    _check_frontier(frontier, models)
    assert frontier.hypervolume > 0 and frontier.evaluations > SMALL_SEARCH.pop_size
    again = search_frontier(models, "board_b1_r1", "energy", settings=SMALL_SEARCH)
    assert again.to_dict() == frontier.to_dict()  # seeded


def test_every_frontier_point_meets_the_constraints(models):
    free = search_frontier(models, "board_b1_r1", "peak_power", settings=SMALL_SEARCH)
    params = [count_parameters(p.spec) for p in free.points]
    constraints = Constraints(max_latency_s=0.012, max_params=int(np.median(params)), max_layers=4)
    frontier = search_frontier(models, "board_b1_r1", "peak_power", constraints, settings=SMALL_SEARCH)
    rows = _check_frontier(frontier, models)
    for point, row in zip(frontier.points, rows):
        assert point.spec.num_layers <= 4
        assert count_parameters(point.spec) <= constraints.max_params
        assert row["predicted"]["latency_s"]["mean"] <= 0.012
    with pytest.raises(ValueError, match="no architecture found.*max_params <= 1"):
        search_frontier(models, "board_b1_r1", "latency", Constraints(max_params=1), settings=SMALL_SEARCH)
    with pytest.raises(ValueError, match="--max-layers 1"):
        search_frontier(models, "board_b1_r1", "latency", Constraints(max_layers=1), settings=SMALL_SEARCH)
    with pytest.raises(ValueError, match="must be a positive number"):
        Constraints(max_latency_s=-1)


def test_search_defaults_match_the_command_line_help():
    defaults = SearchSettings()
    assert {"pop_size": defaults.pop_size, "n_generations": defaults.n_generations} == _SEARCH_DEFAULTS


# -- command line ---------------------------------------------------------------------------------------


def test_pareto_json_contract_and_predict_reproduces_every_point(inputs, tmp_path, capsys):
    profile, accuracy = inputs
    plot = tmp_path / "frontiers.png"
    args = ["pareto", "--profile", str(profile), "--accuracy", str(accuracy), "--measure", "latency,peak_power",
            "--pop-size", "32", "--generations", "4", "--max-layers", "8", "--plot", str(plot), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["frontiers"]
    assert [(f["device"], f["measure"]) for f in result["frontiers"]] == [("board_b1_r1", "latency"),
                                                                         ("board_b1_r1", "peak_power")]
    for frontier in result["frontiers"]:
        assert set(frontier) == {"device", "runtime", "measure", "hypervolume", "points"}
        assert frontier["runtime"] is None  # a ProTran dataset.json names no runtime
        for point in frontier["points"]:
            assert set(point) == {"model_dict", "hash", "accuracy", "accuracy_std", "extrapolated", "value",
                                      "value_std"}
            assert point["model_dict"]["l"] <= 8
    assert plot.stat().st_size > 0

    points = result["frontiers"][1]["points"]
    archs = tmp_path / "points.json"
    archs.write_text(json.dumps(points[::-1]))  # another order and batch than the search saw
    assert main(["predict", str(archs), "--profile", str(profile), "--accuracy", str(accuracy), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    rows = {row["hash"]: row["predicted"] for row in predictions}
    for row in predictions:  # the accuracy contract's fields beside the hardware rows'
        assert (row["accuracy"], row["accuracy_std"], row["extrapolated"]) == tuple(
            row["predicted"]["accuracy"][key] for key in ("mean", "std", "extrapolated"))
    assert main(["predict", str(archs), "--profile", str(profile), "--json"]) == 0  # hardware only
    hardware_only = json.loads(capsys.readouterr().out)[0]["predicted"]
    assert set(hardware_only) == {"latency_s", "energy_j", "peak_power_w"}
    for point in points:
        predicted = rows[point["hash"]]
        accuracy, value = predicted["accuracy"], predicted["peak_power_w"]
        assert (accuracy["mean"], accuracy["std"], accuracy["extrapolated"]) == (
            point["accuracy"], point["accuracy_std"], point["extrapolated"])
        assert (value["mean"], value["std"]) == (point["value"], point["value_std"])


def test_pareto_text_output_and_clear_errors(inputs, tmp_path, capsys):
    profile, accuracy = inputs
    args = ["pareto", "--profile", str(profile), "--accuracy", str(accuracy), "--measure", "energy",
            "--pop-size", "24", "--generations", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "board_b1_r1 · accuracy vs energy" in out and "hypervolume" in out and "energy (J)" in out

    assert main(["pareto", "--profile", str(profile)]) == 2  # --accuracy is required
    assert "--accuracy" in capsys.readouterr().err
    assert main(args + ["--max-params", "1"]) == 2
    assert "no architecture found" in capsys.readouterr().err
    missing = tmp_path / "absent.json"
    assert main(["pareto", "--profile", str(missing), "--accuracy", str(accuracy)]) == 2
    assert "absent.json" in capsys.readouterr().err
    assert main(["predict", str(tmp_path)]) == 2
    assert "--surrogates DIR" in capsys.readouterr().err


def test_public_boards_give_a_frontier_per_measure(shared_data):
    boards = shared_data / "protran"
    profiles = load_profiles([boards / "gpu_a100_b128_r3.json"])
    assert [(p.device, p.batch_size, p.seq_len, len(p.rows)) for p in profiles] == [("gpu_a100_b128_r3", 128, 128, 239)]
    models = fit_models(profiles, load_accuracy(shared_data / "flexibert" / "glue_pretrain_16.json"))
    assert models.measures("gpu_a100_b128_r3") == ["latency", "energy", "peak_power"]
    frontier = search_frontier(models, "gpu_a100_b128_r3", "latency", settings=SMALL_SEARCH)
    _check_frontier(frontier, models)


def test_is_non_dominated_agrees_with_the_two_objective_frontier():
    from protran import is_non_dominated
    from protran._pareto import non_dominated

    rng = np.random.default_rng(3)
    accuracy, value = rng.integers(0, 20, 200).astype(float), rng.integers(1, 20, 200).astype(float)
    mask = is_non_dominated(np.column_stack([accuracy, -value]))
    kept = {(a, v) for a, v in zip(accuracy[mask], value[mask])}
    front = non_dominated(accuracy, value)
    assert kept == {(accuracy[i], value[i]) for i in front}  # the same points (the 2-D one keeps one per tie)
