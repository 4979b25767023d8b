"""Replay of the active-learning loop on recorded rows: the result contract, loading, real data."""

import dataclasses
import json

import numpy as np
import pytest

from protran import ProfileRow, load_rows
from protran._replay import replay, replay_files, samples_to_target
from protran.surrogates import featurize
from protran.vocabulary import MEASURE_NAMES as MEASURES


@pytest.fixture(scope="module")
def rows():
    """40 architectures whose costs follow their size, with a little noise."""
    from flexibert import model_hash, sample_architectures

    specs = sample_architectures(40, method="random", seed=0)
    costs = featurize(specs, features="costs")
    rng = np.random.default_rng(0)
    latency = (0.5 + 0.02 * costs[:, 0] + 0.01 * costs[:, 1]) * rng.normal(1.0, 0.01, len(specs))
    energy = 3.0 * latency * rng.normal(1.0, 0.01, len(specs))
    power = 5.0 + 0.001 * costs[:, 0]
    return [ProfileRow(spec, model_hash(spec), float(a), float(b), float(c))
            for spec, a, b, c in zip(specs, latency, energy, power)]


def quick(rows, **kwargs):
    options = {"seed_samples": 16, "max_samples": 24, "surrogate_params": {"n_members": 3}}
    options.update(kwargs)
    return replay(rows, **options)


def test_result_contract(rows):
    result = quick(rows)
    json.dumps(result, allow_nan=False)  # plain JSON
    assert set(result["samples_to_target"]) == {"latency", "energy", "peak_power", "all"}
    curve = result["curve"]
    assert [entry["n"] for entry in curve] == list(range(16, 25))
    for entry in curve:
        assert set(entry) == {"n", "holdout_mse", "val_mse", "within_10pct"}
        for key in ("holdout_mse", "val_mse", "within_10pct"):
            assert set(entry[key]) == set(MEASURES)
        assert all(0.0 <= entry["within_10pct"][m] <= 1.0 for m in MEASURES)
    # seeds are the first 16 rows, measured first; nothing is measured twice
    assert result["measured"][:16] == [row.arch_hash for row in rows[:16]]
    assert len(set(result["measured"])) == len(result["measured"]) == 24


def test_samples_to_target_reads_the_curve(rows):
    result = quick(rows, target_mse=0.005)
    assert result["samples_to_target"] == samples_to_target(result["curve"], 0.005)
    assert result["samples_to_target"]["latency"] == 16  # an additive cost model fits these rows at once
    curve = [
        {"n": 16, "holdout_mse": {"latency": 0.01, "energy": 0.001, "peak_power": 0.2}},
        {"n": 17, "holdout_mse": {"latency": 0.004, "energy": 0.002, "peak_power": 0.001}},
        {"n": 18, "holdout_mse": {"latency": 0.006, "energy": 0.001, "peak_power": 0.001}},
    ]
    assert samples_to_target(curve, 0.005) == {"latency": 17, "energy": 16, "peak_power": 17, "all": 17}
    assert samples_to_target(curve, 1e-6)["all"] is None


def test_holdout_split_is_never_queried_and_shared_by_strategies(rows):
    a = quick(rows, test_fraction=0.25, acquisition="uncertainty", seed=3)
    b = quick(rows, test_fraction=0.25, acquisition="random", seed=3, seed_samples=4, eval_every=4)
    assert a["n_test"] == b["n_test"] == 6
    test_hashes = set(row.arch_hash for row in rows) - set(a["measured"])
    assert len(test_hashes) >= 6
    assert [entry["n"] for entry in b["curve"]] == [4, 8, 12, 16, 20, 24]
    assert len(b["measured"]) == 24


def test_replay_is_deterministic_for_a_seed(rows):
    first = quick(rows, seed=1, acquisition="random")
    assert quick(rows, seed=1, acquisition="random") == first
    assert quick(rows, seed=2, acquisition="random")["measured"] != first["measured"]


def test_reference_strategy_runs(rows):
    result = quick(rows, surrogate="adaboost", features="embedding", surrogate_params={"n_estimators": 10},
                   scale="2x_seed_max", validation="split", max_samples=18)
    assert [entry["n"] for entry in result["curve"]] == [16, 17, 18]
    assert all(value is not None for value in result["curve"][-1]["val_mse"].values())


def test_prior_rows_in_every_form(rows):
    prior = rows[20:]
    target = rows[:20]
    as_dict = quick(target, prior_rows={"board_a": prior}, seed_samples=4, max_samples=6)
    as_lists = quick(target, prior_rows=[prior], seed_samples=4, max_samples=6)
    flat = quick(target, prior_rows=prior, seed_samples=4, max_samples=6)
    assert as_dict["curve"] == as_lists["curve"] == flat["curve"]
    assert as_dict["settings"]["prior_devices"] == 1


def test_data_without_a_power_meter(rows):
    latency_only = [dataclasses.replace(row, energy_j=None, peak_power_w=None) for row in rows]
    result = quick(latency_only, max_samples=18)
    json.dumps(result, allow_nan=False)
    last = result["curve"][-1]
    assert last["holdout_mse"]["energy"] is None and last["holdout_mse"]["latency"] is not None
    reached = result["samples_to_target"]
    assert reached["energy"] is None and reached["all"] == reached["latency"] == 16


def test_input_errors(rows):
    with pytest.raises(ValueError, match="at least 3 rows"):
        replay(rows[:2])
    with pytest.raises(ValueError, match="test_fraction"):
        replay(rows, test_fraction=1.0)
    with pytest.raises(ValueError, match="seed_samples"):
        replay(rows, seed_samples=1)


# -- loading ---------------------------------------------------------------------------------------


def _write_dataset(path, rows):
    data = {
        row.arch_hash: {
            "model_dict": row.spec.to_model_dict(),
            "performance": {"latency": row.latency_s, "energy": row.energy_j, "peak_power": row.peak_power_w},
        }
        for row in rows
    }
    path.write_text(json.dumps(data))
    return path


def test_load_protran_dataset_round_trip(rows, tmp_path):
    loaded = load_rows(_write_dataset(tmp_path / "board.json", rows[:5]))
    assert [row.arch_hash for row in loaded] == [row.arch_hash for row in rows[:5]]
    assert loaded[0].spec == rows[0].spec
    assert loaded[0].latency_s == pytest.approx(rows[0].latency_s)


def test_load_protran_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        load_rows(bad)
    bad.write_text(json.dumps({"abc": {"model_dict": {"l": 2}}}))
    with pytest.raises(ValueError, match="row 'abc'"):
        load_rows(bad)


def test_replay_files_uses_the_default_strategy(rows, tmp_path):
    path = _write_dataset(tmp_path / "board.json", rows)
    result = replay_files(path, max_samples=17, surrogate_params={"n_members": 3})
    assert result["settings"]["surrogate"] == "additive"
    assert result["settings"]["features"] == "costs"
    assert [entry["n"] for entry in result["curve"]] == [16, 17]


def test_replay_files_with_a_prior_starts_from_fewer_seeds(rows, tmp_path):
    from protran._transfer import PRIOR_SEED_SAMPLES

    target = _write_dataset(tmp_path / "board.json", rows[:20])
    prior = _write_dataset(tmp_path / "other.json", rows[20:])
    result = replay_files(target, [prior], max_samples=PRIOR_SEED_SAMPLES + 1, surrogate_params={"n_members": 3})
    assert [entry["n"] for entry in result["curve"]] == [PRIOR_SEED_SAMPLES, PRIOR_SEED_SAMPLES + 1]
    assert result["settings"]["prior_devices"] == 1
    # an explicit seed count still wins
    explicit = replay_files(target, [prior], seed_samples=8, max_samples=8, surrogate_params={"n_members": 3})
    assert [entry["n"] for entry in explicit["curve"]] == [8]


# -- the public data -------------------------------------------------------------------------------


def test_public_rpi_data_loads_and_replays(shared_data):
    rows = load_rows(shared_data / "protran" / "cpu_rpi_b1_r1.json")
    assert len(rows) == 81
    assert rows[0].arch_hash.startswith("f36d5c40")
    assert rows[0].latency_s == pytest.approx(85.87468, rel=1e-5)
    result = replay(rows, max_samples=20, test_fraction=0.25, surrogate_params={"n_members": 3})
    # The additive cost model shrugs off the wild first measurements of this board.
    assert result["samples_to_target"]["latency"] == 16
    assert result["samples_to_target"]["energy"] == 16
