"""The fitted-models layer: one reader for every file, saved models that predict as fitted ones do,
and one vocabulary of measures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flexibert import count_parameters, embed, model_hash, sample_architectures
from protran import FileKind, RunStore, file_kind, load_rows
from protran.models import Constraints, fit_models, load_models, load_profiles
from protran.vocabulary import MEASURE_FIELDS, MEASURE_NAMES, MEASURES, field_of, measure, name_of


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A ProTran dataset.json of 24 architectures whose costs follow their size."""
    path = tmp_path_factory.mktemp("models") / "board_b1_r1.json"
    rows = {}
    for spec in sample_architectures(24, method="random", seed=1):
        millions = count_parameters(spec) / 1e6
        latency = 2e-3 + 4e-4 * millions + 1e-3 * spec.num_layers
        rows[model_hash(spec)] = {"model_dict": spec.to_model_dict(), "embedding": str(embed(spec)),
                                  "performance": {"latency": latency, "energy": 3.0 * latency,
                                                  "peak_power": 2.0 + math.log(millions)}}
    path.write_text(json.dumps(rows))
    return path


def test_the_vocabulary_spells_each_measure_one_way():
    assert MEASURE_NAMES == ("latency", "energy", "peak_power")
    assert MEASURE_FIELDS == ("latency_s", "energy_j", "peak_power_w")
    assert [m.needs_meter for m in MEASURES] == [False, True, True]
    for m in MEASURES:
        assert measure(m.name) is measure(m.field) is m
        assert field_of(m.name) == field_of(m.field) == m.field and name_of(m.field) == m.name
    with pytest.raises(ValueError, match="unknown measure 'latency_ms'"):
        measure("latency_ms")


def test_one_reader_tells_every_file_apart(board, tmp_path):
    assert file_kind(board) is FileKind.PROTRAN_JSON
    scores = tmp_path / "scores.csv"
    scores.write_text("model_dict,task,score\n")
    assert file_kind(scores) is FileKind.ACCURACY_CSV
    reference = tmp_path / "glue.json"
    first = json.loads(board.read_text())
    key = next(iter(first))
    reference.write_text(json.dumps({key: {"model_dict": first[key]["model_dict"], "glue": "0.7",
                                           "pretrain": {"steps": 10, "loss": 3.0}}}))
    assert file_kind(reference) is FileKind.ACCURACY_JSON
    store = tmp_path / "runs.sqlite"
    with RunStore(store):
        pass
    assert file_kind(store) is FileKind.RUN_STORE
    with pytest.raises(FileNotFoundError, match="no such file"):
        file_kind(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="not a hardware profile"):
        load_profiles([scores])


def test_saved_models_predict_what_the_fitted_ones_do(board, tmp_path):
    fitted = fit_models(load_profiles([board]), None, seed=0)
    assert fitted.devices == ["board_b1_r1"] and fitted.measures("board_b1_r1") == list(MEASURE_NAMES)
    saved = fitted.save(tmp_path / "saved")
    assert set(saved["board_b1_r1"]) == set(MEASURE_FIELDS)
    loaded = load_models(tmp_path / "saved")
    specs = sample_architectures(5, method="random", seed=9)
    assert loaded.predict(specs) == fitted.predict(specs)
    arrays = loaded.predict_arrays(specs, "board_b1_r1")
    assert arrays["accuracy"] is None and arrays["latency_s"]["mean"].shape == (5,)
    rows = fitted.predict(specs)
    assert np.allclose(arrays["latency_s"]["mean"], [row["predicted"]["latency_s"]["mean"] for row in rows])


def test_a_damaged_manifest_is_one_clear_error(board, tmp_path):
    fit_models(load_profiles([board]), None).save(tmp_path)
    manifest = tmp_path / "board_b1_r1.surrogates.json"
    data = json.loads(manifest.read_text())
    del data["features"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the manifest lacks 'features'"):
        load_models(tmp_path)


def test_profile_rows_are_one_type_from_every_source(board, tmp_path):
    from_json = load_rows(board)
    store = tmp_path / "imported.sqlite"
    with RunStore(store) as opened:
        opened.import_protran_json(board)
    from_store = load_rows(store)
    assert type(from_json[0]) is type(from_store[0])
    assert {row.arch_hash: row.latency_s for row in from_json} == pytest.approx(
        {row.arch_hash: row.latency_s for row in from_store})


def test_constraints_are_one_type_with_both_keyings():
    bounds = Constraints(max_latency_s=0.01, max_peak_power_w=5.0, max_layers=4)
    assert bounds.measure_limits() == {"latency": 0.01, "peak_power": 5.0}
    assert bounds.limits() == {"latency_s": 0.01, "peak_power_w": 5.0}
    means = {"accuracy": np.zeros(3), "latency_s": np.array([0.005, 0.02, 0.01]),
             "peak_power_w": np.array([4.0, 4.0, 6.0])}
    assert bounds.violated(means).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="--max-peak-power-w"):
        bounds.check_measures(["latency"], "board")
