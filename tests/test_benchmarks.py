"""The surrogate and sampler benchmark scripts: their scoring and a tiny end-to-end run of each."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def surrogates():
    return load_script("surrogates")


def test_score_counts_errors_and_intervals(surrogates):
    measured = np.array([1.0, 2.0, 4.0, 8.0])
    predicted = np.array([1.05, 2.5, 4.0, 7.0])
    std = np.array([0.1, 0.1, 0.1, 0.6])
    metrics = surrogates.score(predicted, std, measured, scale=8.0)
    assert metrics["mse"] == pytest.approx(np.mean(((predicted - measured) / 8.0) ** 2))
    assert metrics["within_10pct"] == 0.5  # 1.05 and 4.0
    assert metrics["coverage_68"] == 0.5  # |error| <= std for rows 0 and 2
    assert metrics["coverage_95"] == 0.75  # row 3: 1.0 <= 1.96 * 0.6
    assert metrics["kendall_tau"] == pytest.approx(1.0)


def test_constant_or_broken_predictions_are_scored_not_raised(surrogates):
    measured = np.array([1.0, 2.0, 3.0])
    assert surrogates.kendall_tau(np.full(3, 2.0), measured) == 0.0
    metrics = surrogates.score(np.array([1.0, np.inf, 3.0]), np.ones(3), measured, scale=3.0)
    assert metrics["mse"] == float("inf")
    assert np.isnan(metrics["kendall_tau"])


def test_split_is_fixed_per_seed_and_disjoint(surrogates):
    test, pool = surrogates.split_rows(40, seed=3)
    again, _ = surrogates.split_rows(40, seed=3)
    assert len(test) == 10 and len(pool) == 30
    assert np.array_equal(test, again)
    assert not set(test) & set(pool)


def _store_with_profile(path: Path, n_profile: int, n_holdout: int, n_retest: int) -> None:
    from flexibert import model_hash, sample_architectures
    from protran._protocol import MeasurementResult
    from protran._store import RunStore
    from protran.surrogates import featurize

    specs = sample_architectures(n_profile + n_holdout, method="random", seed=0)
    costs = featurize(specs, features="costs")
    latency = 0.01 + 0.002 * costs[:, 0] + 0.004 * costs[:, 1]

    def result(index: int, scale: float = 1.0) -> MeasurementResult:
        spec = specs[index]
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(), runtime="onnxruntime",
                                 batch_size=1, seq_len=128, num_threads=1,
                                 status="unstable" if index % 7 == 3 else "ok",
                                 latency_s=float(latency[index] * scale), latency_ci_rel=0.02, repeats=10)

    with RunStore(path) as store:
        profile = store.create_run("toy-cpu", "onnxruntime", 1, 128, 1, config={"seed": 0})
        for index in range(n_profile):
            store.add_measurement(profile, result(index))
        holdout = store.create_run("toy-cpu", "onnxruntime", 1, 128, 1, config={"purpose": "holdout"})
        for index in range(n_profile, n_profile + n_holdout):
            store.add_measurement(holdout, result(index))
        retest = store.create_run("toy-cpu", "onnxruntime", 1, 128, 1, config={"purpose": "retest"})
        for index in range(n_retest):
            store.add_measurement(retest, result(index, scale=1.05))


def test_surrogate_benchmark_end_to_end(surrogates, shared_data, tmp_path):
    store = tmp_path / "toy-cpu.sqlite"
    _store_with_profile(store, n_profile=34, n_holdout=10, n_retest=4)
    out = tmp_path / "out"
    code = surrogates.main(["--seed", "0", "--n-seeds", "1", "--boards", "cpu_rpi", "--measures", "latency",
                            "--regressors", "lr", "dt", "--feature-sets", "embedding",
                            "--data", str(shared_data / "protran"), "--profiles", str(store), "--out", str(out)])
    assert code == 0
    for name in ("README.md", "records.csv", "curves_median.csv", "own_profiles.csv", "results.json",
                 "learning_curves_latency.png", "predicted_vs_measured.png", "own_profiles.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    own = results["own_profiles"]["profiles"][0]
    assert own["profile_rows"] == 34 and own["holdout_rows"] == 10
    assert own["retest"]["median"] == pytest.approx(0.05)
    assert set(own["headline"]) == {"within_10pct@32"}  # 34 rows: no 64-row point
    readme = (out / "README.md").read_text()
    assert "Test-retest spread" in readme and "additive/costs" in readme
    by_status = own["by_status"]
    assert by_status["n_train"] == 32 and by_status["train_unstable_rows"] == 5
    assert by_status["holdout_ok_rows"] + by_status["holdout_unstable_rows"] == 10
    assert "within_10pct_trained_on_ok_rows_only" in by_status
    assert 0 <= by_status["within_10pct_out_of_bag_profile_rows"] <= 1


def test_surrogate_benchmark_without_own_profiles(surrogates, shared_data, tmp_path):
    code = surrogates.main(["--n-seeds", "1", "--boards", "cpu_rpi", "--measures", "latency", "--regressors", "lr",
                            "--feature-sets", "embedding", "--data", str(shared_data / "protran"),
                            "--profiles", "--out", str(tmp_path)])
    assert code == 0
    assert "this part is skipped" in (tmp_path / "README.md").read_text()


def test_sampler_benchmark_end_to_end(tmp_path):
    samplers = load_script("samplers")
    code = samplers.main(["--seed", "0", "--n-seeds", "2", "--methods", "random", "lhs_split", "--sizes", "16",
                          "--variants", "stratified", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    split = next(row for row in summary if row["method"] == "lhs_split")
    assert [split[kind] for kind in ("shallow_narrow", "shallow_wide", "deep_narrow", "deep_wide")] == [4, 4, 4, 4]
    assert (tmp_path / "distances.png").is_file() and (tmp_path / "model_types.png").is_file()


def test_accuracy_learning_benchmark_quick(tmp_path):
    accuracy_learning = load_script("accuracy_learning")
    code = accuracy_learning.main(["--quick", "--tasks", "glue", "--sizes", "8", "--no-ten-fold", "--workers", "1",
                                   "--out", str(tmp_path)])
    assert code == 0
    for name in ("README.md", "results.json", "learning_curves.png"):
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {(row["n"], row["model"]) for row in results["summary"] if row["task"] == "glue"}
    assert {("0", "flops"), ("0", "combined_refit"), ("8", "accuracy_model"), ("all", "accuracy_model"),
            ("8", "xgboost_embedding"), ("all", "accuracy_model+tf")} <= cells
    assert all(row["splits"] == 5 for row in results["summary"])
    assert {row["n"] for row in results["calibration"]} == {"8", "all"}
    assert len(results["goals"]) == 4
    assert any(row["extrapolated"] for row in results["extrapolation"]["architectures"])
    assert "## Goals" in (tmp_path / "README.md").read_text()


def test_the_truth_oracle_serves_its_model_through_the_protocol(shared_data, tmp_path):
    """benchmarks/codesign_oracle.py trusts that a search through the relay sees the fitted model's
    means and the bounds of its rows: one rpi profile keeps the fit short."""
    import subprocess
    import time

    from boshcode import CommandOracle, SurrogateOracle
    from flexibert import sample_architectures

    profile = shared_data / "protran" / "cpu_rpi_b1_r1.json"
    accuracy = Path(__file__).resolve().parents[1] / "datasets" / "accuracy" / "nasbench_bert_250.json"
    socket_path, ready = tmp_path / "truth.sock", tmp_path / "ready.json"
    script = str(BENCHMARKS / "truth_oracle.py")
    server = subprocess.Popen([sys.executable, script, "serve", "--socket", str(socket_path), "--profile",
                               str(profile), "--accuracy", str(accuracy), "--ready-file", str(ready)])
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the truth server did not come up"
        specs = sample_architectures(3, method="random", seed=4)
        with CommandOracle([sys.executable, script, "connect", str(socket_path)], timeout_s=60) as relayed:
            answered = relayed.predict(specs, "cpu_rpi_b1_r1")
            bounds = relayed.bounds
        truth = SurrogateOracle.from_files([profile], accuracy, seed=0)
        expected = truth.predict(specs, "cpu_rpi_b1_r1")
        assert bounds == truth.bounds
        for measure in ("accuracy", "latency_s", "energy_j", "peak_power_w"):
            np.testing.assert_allclose(answered[measure]["mean"], expected[measure]["mean"], rtol=1e-12)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="the kill benchmark lists processes through /proc")
def test_kill_benchmark_counts_orphans_and_lost_rows(tmp_path):
    """Two kills of a real profile, then the resume to the end: the store and the process table are
    checked as in the 20-kill run; here only that nothing is lost, duplicated or left running."""
    kill_profiler = load_script("kill_profiler")
    code = kill_profiler.main(["--seed", "1", "--kills", "2", "--seed-samples", "2", "--max-samples", "3",
                               "--max-delay-s", "4", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert code == 0 and summary["final_returncode"] == 0 and summary["refused"] is None
    assert (summary["orphans"], summary["lost"], summary["duplicated"]) == (0, 0, 0)
    assert summary["rows"] == 3 and summary["integrity_check"] == "ok"


def test_serve_winner_picks_small_middle_and_large_held_out_rows():
    serve_winner = load_script("serve_winner")

    class Row:
        def __init__(self, latency_s):
            self.latency_s = latency_s

    rows = [Row(latency_s) for latency_s in (0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0, 0.05)]
    assert [row.latency_s for row in serve_winner.pick_architectures(rows)] == [0.1, 0.5, 0.9]
    assert [row.latency_s for row in serve_winner.pick_architectures(rows[:1])] == [0.5]  # no row twice


def test_serve_winner_scales_the_prediction_by_the_reference_measured_in_the_same_sitting(tmp_path, monkeypatch):
    import argparse
    import dataclasses

    import protran
    from flexibert import DesignSpace, model_hash
    from protran import MeasurementResult, RunStore, reference_spec

    serve_winner = load_script("serve_winner")
    spec = reference_spec(DesignSpace.default())

    def reading(latency_s, status="ok"):
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(), runtime="onnxruntime",
                                 batch_size=1, seq_len=128, num_threads=1, status=status, latency_s=latency_s,
                                 repeats=10)

    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run(device="d", runtime="onnxruntime")
        for latency_s, status in ((0.10, "ok"), (None, "failed"), (0.12, "ok"), (0.11, "ok"), (0.5, "ok")):
            store.add_reference(run_id, reading(latency_s, status))
        run = store.get_run(run_id)
    calls = []

    def fake_measure(measured_spec, **settings):
        calls.append((model_hash(measured_spec), settings))
        return reading(0.088)

    monkeypatch.setattr(protran, "measure_architecture", fake_measure)
    args = argparse.Namespace(threads=1, cpus="1", processes=2)
    speed = serve_winner.host_speed_factor(run, path, args)
    # the baseline is the median of the first three successful readings (0.10, 0.12, 0.11)
    assert speed["baseline_s"] == pytest.approx(0.11) and speed["factor"] == pytest.approx(0.8)
    assert calls[0][0] == model_hash(spec) and calls[0][1]["cpus"] == [1] and calls[0][1]["runtime"] == "onnxruntime"
    assert calls[0][1]["processes"] == 2  # measured as the profile was
    monkeypatch.setattr(protran, "measure_architecture", lambda *a, **k: dataclasses.replace(reading(None, "failed")))
    assert serve_winner.host_speed_factor(run, path, args)["factor"] is None


def test_serve_winner_measures_each_new_winner_and_searches_again_until_it_answers_a_measured_one(
        tmp_path, monkeypatch):
    import argparse

    import protran
    from flexibert import count_parameters, model_hash, sample_architectures
    from protran import RunStore
    from tests.protran.test_profile import FakeBoard

    serve_winner = load_script("serve_winner")
    first, second = sample_architectures(2, method="random", seed=3)
    board = FakeBoard()
    measure_listed = protran.measure_listed
    settings = []
    monkeypatch.setattr(protran, "measure_listed", lambda config, *a, **k: settings.append(config) or measure_listed(
        config, *a, measure_fn=board, **k))

    class Models:  # every winner lies inside the profiled sizes: measured all the same, being new
        def __init__(self, measured):
            self.measured = measured

        def outside_profiled(self, specs, device):
            return np.zeros(len(specs), dtype=bool)

        def predict(self, specs, device):
            return [{"predicted": {"latency_s": {"mean": 0.01, "std": 0.002}}} for _ in specs]

    fits = []
    monkeypatch.setattr(serve_winner, "fit_surrogate", lambda path, hashes, seed, with_accuracy, surrogate: fits.append(
        (set(hashes), surrogate)) or (Models(hashes), "d", len(hashes)))
    winners = iter([first, second, second])
    monkeypatch.setattr(serve_winner, "codesign_winner", lambda models, seed: (lambda spec: {
        "hash": model_hash(spec), "model_dict": spec.to_model_dict()})(next(winners)))
    store = tmp_path / "copy.sqlite"
    RunStore(store).close()
    args = argparse.Namespace(seed=0, threads=1, cpus="0", verify_rounds=3, drift_correction="latest",
                              drift_threshold=0.05, processes=2, surrogate="additive-gp")
    run = type("Run", (), {"device": "d", "runtime": "onnxruntime", "batch_size": 1, "seq_len": 128})()
    models, winner, rounds, fitted = serve_winner.verify_winner(Models({"p"}), "d", run, {"p"}, store, args)
    # the first two winners were new and were measured; the third search answered the second again
    assert [r["hash"] for r in rounds] == [model_hash(first), model_hash(second)]
    assert winner["hash"] == model_hash(second) and fitted == {"p", model_hash(first), model_hash(second)}
    assert fits == [({"p", model_hash(first)}, "additive-gp"), (fitted, "additive-gp")]
    assert [config.processes for config in settings] == [2, 2]
    assert rounds[0]["measured_latency_s"] == pytest.approx(1e-9 * count_parameters(first) + 1e-4)
    with RunStore(store, readonly=True) as runs:
        assert [r.config["purpose"] for r in runs.runs()] == ["verify", "verify"]
    # with no rounds allowed the first winner is served as predicted, nothing measured
    winners = iter([first])
    args.verify_rounds = 0
    assert serve_winner.verify_winner(Models({"p"}), "d", run, {"p"}, store, args)[2] == []
    # a winner the profile measured ends the loop at once
    winners = iter([first])
    args.verify_rounds = 3
    assert serve_winner.verify_winner(Models({"p"}), "d", run, {"p", model_hash(first)}, store, args)[2] == []
    for bad in (["--processes", "0"], ["--verify-rounds", "-1"]):  # refused before anything is measured
        with pytest.raises(SystemExit):
            serve_winner.main(bad)


def test_drift_rules_recomputes_each_rule_from_the_raw_readings(tmp_path):
    drift_rules = load_script("drift_rules")
    store = BENCHMARKS.parent / "datasets" / "profiles" / "sessions" / "epyc-cpu-onnxruntime-2026-12-04-1921.sqlite"
    assert drift_rules.main(["--stores", str(store), "--out", str(tmp_path)]) == 0
    results = {r["rule"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert set(results) == {label for label, _, _ in drift_rules.RULES} and results["raw"]["n"] == 16
    # the committed store is bracket-corrected: recomputing that rule gives the rows as they stand
    assert results["bracket, 0"]["median"] < results["raw"]["median"]
    assert results["latest, 5 %"]["median"] != results["bracket, 0"]["median"]
    # measured with a reference of its own process between rows: no row read one in its own process
    assert results["in-process, 0"]["median"] is None and results["in-process, 0"]["n"] == 0
    assert "| raw | latest, 5 % |" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "README.md").read_text().count(" | – |") == 1


def test_drift_rules_in_process_gives_a_store_measured_so_its_rows_as_they_stand(tmp_path):
    """The 06:35 session was corrected live by each row's reading in its own process: recomputing that
    rule from the raw latencies gives the stored rows back, and far from the raw spread."""
    drift_rules = load_script("drift_rules")
    store = BENCHMARKS.parent / "datasets" / "profiles" / "sessions" / "epyc-cpu-onnxruntime-2026-12-05-0635.sqlite"
    assert drift_rules.main(["--stores", str(store), "--out", str(tmp_path)]) == 0
    results = {r["rule"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    as_stored = drift_rules.spread(store)
    assert results["in-process, 0"]["median"] == pytest.approx(as_stored["median"])
    assert results["in-process, 0"]["max"] == pytest.approx(as_stored["max"])
    assert results["in-process, 0"]["max"] < results["raw"]["median"] / 2
    assert results["raw"]["profile_references"] == results["raw"]["profile_rows"] == 64  # a reading per row


def test_retest_pairs_lists_each_architecture_worst_first_with_its_processes(tmp_path):
    """Read from the stores alone; the spread agrees with the one the public RunStore API gives."""
    retest_pairs, drift_rules = load_script("retest_pairs"), load_script("drift_rules")
    sessions = BENCHMARKS.parent / "datasets" / "profiles" / "sessions"
    with_processes = sessions / "epyc-cpu-onnxruntime-2026-12-05-0320.sqlite"
    without = sessions / "epyc-cpu-onnxruntime-2026-12-04-2201.sqlite"
    assert retest_pairs.main(["--stores", str(with_processes), str(without), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    for result, path in zip(results, (with_processes, without)):
        expected = drift_rules.spread(path)
        sizes = [abs(p["spread"]) for p in result["pairs"]]
        assert len(sizes) == expected["n"] == 16 and sizes == sorted(sizes, reverse=True)
        assert result["max"] == pytest.approx(expected["max"]) and result["median"] == pytest.approx(expected["median"])
        for pair in result["pairs"]:
            assert pair["spread"] == pytest.approx((pair["retest_ms"] - pair["first_ms"]) / pair["first_ms"])
        assert result["references"]["profile"]["n"] == expected["profile_references"]
    agreement = results[0]["processes"]
    assert agreement["rows"] == 112 and 0 < agreement["rows_with_third"] < agreement["rows"]
    assert all(len(p["first_processes_ms"]) >= 2 for p in results[0]["pairs"])
    assert results[1]["processes"]["rows"] == 0 and results[1]["pairs"][0]["retest_processes_ms"] == []
    report = (tmp_path / "README.md").read_text()
    assert report.count("took a third") == 1 and "| `23de8772` |" in report


def test_process_spread_measures_each_architecture_in_fresh_processes_in_turn(tmp_path, monkeypatch):
    """The reference, the retest's smallest and its median architecture, each measured once per round
    (rounds interleaved); the spread across processes is (max - min) / median of their latencies."""
    import protran
    from flexibert import ArchSpec, model_hash
    from protran import MeasurementResult

    process_spread = load_script("process_spread")
    store = BENCHMARKS.parent / "datasets" / "profiles" / "sessions" / "epyc-cpu-onnxruntime-2026-12-04-2201.sqlite"
    calls = []
    levels = iter([1.0, 1.0, 1.0, 1.1, 1.0, 1.0, 0.9, 1.0, 1.0])  # per call: round-robin over three

    def fake(spec, **settings):
        spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_model_dict(spec)
        calls.append(model_hash(spec))
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(), runtime="onnxruntime",
                                 batch_size=1, seq_len=128, num_threads=1, status="ok", latency_s=0.01 * next(levels),
                                 latency_ci_rel=0.01, repeats=10)

    monkeypatch.setattr(protran, "measure_architecture", fake)
    assert process_spread.main(["--store", str(store), "--rounds", "3", "--out", str(tmp_path)]) == 0
    assert calls[:3] == calls[3:6] == calls[6:] and len(set(calls)) == 3
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [row["arch"].split()[0] for row in rows] == ["reference", "smallest", "median"]
    assert rows[0]["spread"] == pytest.approx(0.2) and rows[1]["spread"] == pytest.approx(0.0)
    assert "| `reference` | 3 |" in (tmp_path / "README.md").read_text()


def test_process_spread_in_process_puts_each_latency_over_the_reference_beside_it(tmp_path, monkeypatch):
    """With --in-process the two architectures are measured once more per round with the reference in
    the same process; their ratios to that reading, and the others' to the round's own reference
    process, are reported beside the raw spread."""
    import protran
    from flexibert import ArchSpec, model_hash
    from protran import MeasurementResult

    process_spread = load_script("process_spread")
    store = BENCHMARKS.parent / "datasets" / "profiles" / "sessions" / "epyc-cpu-onnxruntime-2026-12-04-2201.sqlite"
    calls = []
    host = iter([1.0] * 5 + [1.2] * 5)  # the host 20 % slower in the second round, in every process alike

    def fake(spec, reference=None, **settings):
        spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_model_dict(spec)
        calls.append((model_hash(spec), reference is not None))
        level = next(host)
        conditions = {"reference": {"status": "ok", "latency_s": 0.1 * level}} if reference is not None else {}
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(), runtime="onnxruntime",
                                 batch_size=1, seq_len=128, num_threads=1, status="ok", latency_s=0.01 * level,
                                 latency_ci_rel=0.01, repeats=10, conditions=conditions)

    monkeypatch.setattr(protran, "measure_architecture", fake)
    assert process_spread.main(["--store", str(store), "--rounds", "2", "--in-process", "--out", str(tmp_path)]) == 0
    assert [beside for _, beside in calls[:5]] == [False, False, False, True, True] and calls[:5] == calls[5:]
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [row["arch"] for row in rows][3:] == [f"{rows[1]['arch']}, reference in the process",
                                                 f"{rows[2]['arch']}, reference in the process"]
    assert "ratio_spread" not in rows[0] and all(row["spread"] == pytest.approx(0.2 / 1.1) for row in rows)
    assert [row["ratio_spread"] for row in rows[1:]] == pytest.approx([0.0] * 4)
    assert rows[3]["ratios"] == pytest.approx([0.1, 0.1])
    assert "--in-process" in json.loads((tmp_path / "results.json").read_text())["meta"]["command"]


def test_compiler_features_benchmark_quick(tmp_path, monkeypatch):
    """The benchmark end to end on the committed profiles, with compilation replaced by a fake."""
    import protran._graphs as graphs
    compiler_features = load_script("compiler_features")
    monkeypatch.setattr(graphs, "_compile", lambda spec, runtime, b, s: (
        10 * len(spec.layers), {"matmul": 4 * len(spec.layers), "shape": 6 * len(spec.layers)}, 0.5))
    out = tmp_path / "out"
    assert compiler_features.main(["--quick", "--cache-dir", str(tmp_path / "graphs"), "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert set(report["devices"]) == {"epyc-cpu-onnxruntime", "epyc-cpu-openvino"}
    assert {row["features"] for row in report["medians"]} == {"costs", "costs+graph", "costs+nodes"}
    assert all(cost["compile_s_median"] == 0.5 for cost in report["costs"].values())
    assert "| additive | costs+graph |" in (out / "README.md").read_text()


def test_codesign_runtimes_reports_each_pick_against_its_served_latency(monkeypatch):
    codesign_runtimes = load_script("codesign_runtimes")
    result = {"drift_charge": {"onnxruntime-int8": 0.95}, "device": "m", "runtime": "onnxruntime-int8",
              "hash": "abc", "model_dict": {}, "performance": 0.7, "performance_std": 0.01,
              "predicted": {"latency_s": 0.010, "accuracy": 70.0}, "predicted_std": {"latency_s": 0.001},
              "extrapolation": [], "search_s": 1.0, "targets": [{"device": "m", "runtime": "onnxruntime-int8"}]}
    rows = [codesign_runtimes.pick_row(result, 0, drift) for drift in (False, True)]
    served = []
    monkeypatch.setattr(codesign_runtimes, "serve_bench", lambda model_dict, args, workdir, runtime: served.append(
        runtime) or {"latency_s": {"p50": 0.012}})
    speeds = []
    monkeypatch.setattr(codesign_runtimes, "profile_runs", lambda path: (path.name, [], []))
    monkeypatch.setattr(codesign_runtimes, "host_speed_factor", lambda run, path, args: speeds.append(run) or {
        "reference_s": 0.125, "baseline_s": 0.1, "factor": 1.25})
    codesign_runtimes.serve(rows, type("Args", (), {"load": False})())
    assert served == ["onnxruntime-int8"]  # only the charged pick is served
    assert speeds == ["m.sqlite"]  # the reference of the pick's own profile, once
    assert "served_p50_s" not in rows[0] and abs(rows[1]["relative_error"] - 0.2) < 1e-9
    assert rows[1]["within_tolerance"] is False
    assert rows[1]["relative_error_speed_scaled"] == pytest.approx(0.012 / (0.010 * 1.25) - 1.0)
    meta = {"command": "c", "date": "d", "budget": 100, "drift_file": "f", "drift_charge": {}, "cpus": "1",
            "load": False, "requests": 5}
    text = codesign_runtimes.readme(rows, meta)
    assert "served within 15 % of their predicted latency: 0 of 1" in text
    assert "| -4.0% |" in text and "`m` 125.0 ms against 100.0 ms" in text


def test_refit_winner_reports_each_surrogate_without_and_with_the_winners_row(tmp_path):
    refit_winner = load_script("refit_winner")
    assert refit_winner.main(["--sittings", "serve_winner_bracket_live_2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["surrogate"] for r in results] == list(refit_winner.SURROGATES)
    by_name = {r["surrogate"]: r for r in results}
    # the plain fit with a residual process follows the winner's own row; the robust one sets it aside
    assert abs(by_name["additive-gp"]["with"]["winner_error"]) < abs(by_name["additive"]["with"]["winner_error"])
    assert all(0.0 <= r[k]["holdout_within_10pct"] <= 1.0 for r in results for k in ("without", "with"))
    assert "| serve_winner_bracket_live_2 |" in (tmp_path / "README.md").read_text()
    with pytest.raises(SystemExit, match="no such results"):
        refit_winner.main(["--sittings", "no_such_sitting", "--out", str(tmp_path)])
