"""The multi-source accuracy model: features, ranking, std, extrapolation, sources, CLI contract."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from flexibert import DesignSpace, as_spec, decode, random_embeddings
from protran import load_accuracy
from protran._accuracy_model import (
    STRUCTURE_FEATURE_NAMES,
    AccuracyModel,
    structure_features,
    structure_features_of_embeddings,
)
from protran.cli import main

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "accuracy" / "nasbench_bert_250.json"
BIG = {"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12}
WITH_C13 = {"l": 2, "o": [["c_13_64"] * 2, ["sa_sdp_64"] * 2], "h": [128, 128], "f": [[512], [512]]}


@pytest.fixture(scope="module")
def glue_records():
    return load_accuracy(SHIPPED, task="glue")


@pytest.fixture(scope="module")
def fitted(glue_records):
    return AccuracyModel("glue", seed=0).fit(glue_records)


def _distinct(records):
    specs, scores = {}, {}
    for record in records:
        specs.setdefault(record.arch_hash, record.spec)
        scores.setdefault(record.arch_hash, []).append(record.score)
    return specs, {h: float(np.mean(v)) for h, v in scores.items()}


def test_both_feature_paths_agree_on_random_architectures():
    space = DesignSpace.default()
    X = random_embeddings(60, 3, space)
    from_embeddings = structure_features_of_embeddings(X, space)
    one_by_one = structure_features([decode(row, space) for row in X])
    assert from_embeddings.shape == (60, len(STRUCTURE_FEATURE_NAMES))
    np.testing.assert_array_equal(from_embeddings, one_by_one)


def test_ranks_unseen_architectures_and_covers_them(glue_records):
    specs, scores = _distinct(glue_records)
    hashes = sorted(specs)
    held = set(np.random.default_rng(0).permutation(hashes)[:60])
    model = AccuracyModel("glue").fit([r for r in glue_records if r.arch_hash not in held])
    mean, std = model.predict([specs[h] for h in sorted(held)], return_std=True)
    truth = np.array([scores[h] for h in sorted(held)])
    assert kendalltau(mean, truth)[0] > 0.6
    inside = np.abs(mean - truth) <= 1.96 * std
    assert 0.8 <= inside.mean() <= 1.0


def test_std_grows_away_from_the_scored_architectures(fitted, glue_records):
    specs, _ = _distinct(glue_records)
    scored = list(specs.values())[:40]
    _, std = fitted.predict(scored, return_std=True)
    _, far = fitted.predict([as_spec(BIG)], return_std=True)
    assert far[0] > 2 * np.median(std)
    assert not fitted.extrapolated(scored).any()
    assert fitted.extrapolated([as_spec(BIG), as_spec(WITH_C13)]).all()


def test_a_value_depends_on_its_own_architecture_only(fitted, glue_records):
    specs = list(_distinct(glue_records)[0].values())[:5] + [as_spec(BIG)]
    together = fitted.predict(specs, return_std=True)
    for i, spec in enumerate(specs):
        alone = fitted.predict([spec], return_std=True)
        assert (alone[0][0], alone[1][0]) == (together[0][i], together[1][i])


def test_repeats_give_the_noise(fitted, glue_records):
    runs: dict[str, list[float]] = {}
    for record in glue_records:
        runs.setdefault(record.arch_hash, []).append(record.score)
    pairs = [np.array(v) for v in runs.values() if len(v) > 1]
    pooled = np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in pairs) / sum(len(v) - 1 for v in pairs))
    (anchor,) = [fit for fit in fitted.sources if fit.source == "nasbench_bert"]
    assert anchor.observations == len(glue_records) and anchor.architectures == len(runs)
    assert anchor.noise_std == pytest.approx(pooled)


def test_sources_on_other_scales_are_linked_and_predicted_on_theirs(glue_records):
    specs, _ = _distinct(glue_records)
    other = set(sorted(specs)[::3])
    rescaled = [dataclasses.replace(r, score=0.015 * r.score + 0.1, source="other")
                for r in glue_records if r.arch_hash in other]
    rng = np.random.default_rng(1)
    unrelated = [dataclasses.replace(r, score=float(rng.normal()), source="noise")
                 for r in glue_records if r.arch_hash in other]
    records = [r for r in glue_records if r.arch_hash not in other] + rescaled + unrelated
    model = AccuracyModel("glue", seed=0).fit(records)
    fits = {fit.source: fit for fit in model.sources}
    assert model.describe()["anchor"]["source"] == "nasbench_bert"
    assert fits["other"].linked and fits["other"].scale == pytest.approx(0.015, rel=0.3)
    assert not fits["noise"].linked and "do not follow" in fits["noise"].reason
    on_other = AccuracyModel("glue", target_source="other", seed=0).fit(records)
    probe = [specs[h] for h in sorted(specs)[:10]]
    native, scaled = model.predict(probe), on_other.predict(probe)
    np.testing.assert_allclose(scaled, fits["other"].offset + fits["other"].scale * native, rtol=1e-9)


def test_clear_errors(glue_records):
    with pytest.raises(ValueError, match="no scores for task 'cola'.*glue"):
        AccuracyModel("cola").fit(glue_records)
    with pytest.raises(ValueError, match="no scores of task 'glue' from source 'mine'"):
        AccuracyModel("glue", target_source="mine").fit(glue_records)


def test_predict_accuracy_contract_without_profiles(tmp_path, capsys, glue_records):
    folder = tmp_path / "archs"
    folder.mkdir()
    spec = glue_records[0].spec
    (folder / "a.json").write_text(json.dumps(spec.to_model_dict()))
    big = tmp_path / "big.json"
    big.write_text(json.dumps(BIG))
    assert main(["predict", "--accuracy", str(SHIPPED), str(folder), str(big), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [set(row) for row in rows] == [{"hash", "accuracy", "accuracy_std", "extrapolated"}] * 2
    assert rows[0]["hash"] == glue_records[0].arch_hash and 54 < rows[0]["accuracy"] < 76
    assert rows[0]["extrapolated"] is False and rows[1]["extrapolated"] is True
    assert rows[1]["accuracy_std"] > rows[0]["accuracy_std"]

    assert main(["predict", "--accuracy", str(big)]) == 2  # a usage error
    assert "give an accuracy file first" in capsys.readouterr().err
    assert main(["predict", "--accuracy", str(SHIPPED), "--accuracy-source", "mine", str(big)]) == 2
    err = capsys.readouterr().err
    assert "source 'mine'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
