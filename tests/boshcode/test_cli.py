"""The boshcode command: its JSON contract, weight checks, device names, devices without a power
meter, and the ONNX export, on small synthetic profiles (and once on the public boards)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from boshcode.cli import DEFAULT_BUDGET, METHODS, MODES, main
from flexibert import count_parameters, embed, model_hash, sample_architectures

WEIGHTS = ["--alpha", "0.5", "--beta", "0.2", "--gamma", "0.2", "--epsilon", "0.1"]
PREDICTED = {"accuracy", "latency_s", "energy_j", "peak_power_w"}


def _write_profile(path: Path, speed: float, power_meter: bool = True, seed: int = 1) -> Path:
    """A ProTran dataset.json whose costs grow with size, scaled by ``speed``."""
    rows = {}
    for spec in sample_architectures(30, method="random", seed=seed):
        millions = count_parameters(spec) / 1e6
        latency = speed * (2e-3 + 4e-4 * millions + 1e-3 * spec.num_layers)
        power = 3.0 / speed + math.log(millions)
        rows[model_hash(spec)] = {
            "model_dict": spec.to_model_dict(), "model_type": "x", "embedding": str(embed(spec)),
            "performance": {"latency": latency, "energy": latency * power if power_meter else None,
                            "peak_power": power if power_meter else None},
        }
    path.write_text(json.dumps(rows))
    return path


def _write_accuracy(path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model_dict", "task", "score", "pretrain_loss"])
        for i, spec in enumerate(sample_architectures(14, method="lhs_split", seed=2)):
            score = 0.6 + 0.01 * spec.num_layers + 0.02 * math.log10(count_parameters(spec)) + 0.003 * (i % 3)
            writer.writerow([json.dumps(spec.to_model_dict()), "glue", f"{score:.4f}", "3.0"])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from protran._store import RunStore

    folder = tmp_path_factory.mktemp("boshcode-cli")
    fast = _write_profile(folder / "board_fast_b1_r1.json", speed=1.0)
    slow = _write_profile(folder / "board_slow_b4_r1.json", speed=3.0, seed=3)
    store = folder / "runs.sqlite"
    with RunStore(store) as runs:
        runs.import_protran_json(_write_profile(folder / "source.json", speed=2.0, seed=4), device="store-board")
    no_meter = _write_profile(folder / "board_nometer_b1_r1.json", speed=0.5, power_meter=False, seed=5)
    return {"fast": fast, "slow": slow, "store": store, "no_meter": no_meter,
            "accuracy": _write_accuracy(folder / "scores.csv")}


def _codesign(files, *extra: str, profiles=("fast", "slow")) -> list[str]:
    args = ["codesign"]
    for name in profiles:
        args += ["--profile", str(files[name])]
    return args + ["--accuracy", str(files["accuracy"]), *extra]


def _run_json(capsys, args: list[str]) -> dict:
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method", ["boshcode", "random", "gbrt", "gpr", "rf", "optuna-tpe"])
def test_json_contract(files, capsys, method):
    out = _run_json(capsys, _codesign(files, *WEIGHTS, "--method", method, "--budget", "21", "--seed", "1", "--json"))
    assert {"device", "model_dict", "hash", "predicted", "performance", "performance_std", "performance_lcb",
            "alternatives", "extrapolated", "normalise", "bounds", "elapsed_s", "history"} <= set(out)
    assert out["device"] in {"board_fast_b1_r1", "board_slow_b4_r1"}
    assert set(out["predicted"]) == PREDICTED and all(v > 0 for v in out["predicted"].values())
    assert len(out["history"]) == 21 and out["evaluations"] == 21
    assert out["performance"] in out["history"] and 0 < out["performance"] <= 1 and out["performance_std"] > 0
    assert out["performance_lcb"] == pytest.approx(out["performance"] - out["risk"] * out["performance_std"])
    assert out["normalise"] == "log" and out["risk"] == 0.5 and out["oracle_calls"] == 21
    alternatives = out["alternatives"]
    assert len(alternatives) == 3 and len({(a["hash"], a["device"]) for a in alternatives}) == 3
    lower_bounds = [out["performance_lcb"]] + [a["performance_lcb"] for a in alternatives]
    assert lower_bounds == sorted(lower_bounds, reverse=True)
    assert out["method"] == method and out["elapsed_s"] > 0
    assert len(out["hash"]) == 32 and out["model_dict"]["l"] == len(out["model_dict"]["h"])
    assert out["weights"] == {"alpha": 0.5, "beta": 0.2, "gamma": 0.2, "epsilon": 0.1}


def test_same_seed_same_answer(files, capsys):
    args = _codesign(files, *WEIGHTS, "--budget", "18", "--seed", "3", "--json")
    first, second = _run_json(capsys, args), _run_json(capsys, args)
    assert first["history"] == second["history"] and first["hash"] == second["hash"]


@pytest.mark.parametrize(("weights", "message"), [
    (["--alpha", "0.7", "--beta", "-0.1", "--gamma", "0.3", "--epsilon", "0.1"], "must not be negative; got beta=-0.1"),
    (["--alpha", "0.5", "--beta", "0.2", "--gamma", "0.2", "--epsilon", "0.2"], "must sum to 1"),
    (["--alpha", "0.5", "--beta", "0.2", "--gamma", "0.2", "--epsilon", "0.1000001"], None),
])
def test_weights_are_checked(files, capsys, weights, message):
    status = main(_codesign(files, *weights, "--method", "random", "--budget", "17", "--json"))
    err = capsys.readouterr().err
    if message is None:  # within 1e-6 of 1
        assert status == 0
        return
    assert status == 2
    assert message in err and "--alpha/--beta/--gamma/--epsilon" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_device_names_come_from_file_names_and_stores(files, capsys):
    out = _run_json(capsys, _codesign(files, *WEIGHTS, "--method", "random", "--budget", "20", "--json",
                                      profiles=("fast", "store")))
    assert out["devices"] == ["board_fast_b1_r1", "store-board"]
    assert out["device"] in out["devices"]


def test_one_profile_flag_takes_several_files(files, capsys):
    args = ["codesign", "--profile", str(files["fast"]), str(files["store"]), "--accuracy", str(files["accuracy"]),
            *WEIGHTS, "--method", "random", "--budget", "17", "--json"]
    assert _run_json(capsys, args)["devices"] == ["board_fast_b1_r1", "store-board"]


def test_devices_without_a_power_meter(files, capsys):
    both = ("fast", "no_meter")
    assert main(_codesign(files, *WEIGHTS, "--method", "random", "--budget", "20", "--json", profiles=both)) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["devices"] == ["board_fast_b1_r1"]
    assert "warning: left out of the search, since P needs measures they lack: " \
           "board_nometer_b1_r1 (no energy_j, peak_power_w)" in captured.err
    latency_only = ["--alpha", "0.5", "--beta", "0", "--gamma", "0", "--epsilon", "0.5"]
    out = _run_json(capsys, _codesign(files, *latency_only, "--method", "rf", "--budget", "20", "--json",
                                      profiles=both))
    assert out["devices"] == ["board_fast_b1_r1", "board_nometer_b1_r1"]
    if out["device"] == "board_nometer_b1_r1":
        assert out["predicted"]["energy_j"] is None
    assert main(_codesign(files, *WEIGHTS, "--budget", "20", profiles=("no_meter",))) == 2
    assert "no profile has measurements of energy_j (weight beta), peak_power_w (weight gamma); " \
           "set that weight to 0" in capsys.readouterr().err


def test_modes_and_their_checks(files, capsys):
    out = _run_json(capsys, _codesign(files, *WEIGHTS, "--mode", "hw_nas", "--device", "board_slow_b4_r1",
                                      "--budget", "18", "--json"))
    assert out["devices"] == ["board_slow_b4_r1"] and out["device"] == "board_slow_b4_r1"
    assert main(_codesign(files, *WEIGHTS, "--mode", "hw_nas")) == 2
    assert "give --device" in capsys.readouterr().err
    assert main(_codesign(files, *WEIGHTS, "--mode", "nas", "--method", "rf")) == 2
    assert "BOSHCODE mode" in capsys.readouterr().err


def test_export_writes_the_winner_as_onnx(files, capsys, tmp_path):
    # Latency dominates, so the winner is a small model that exports in a moment.
    weights = ["--alpha", "0.1", "--beta", "0", "--gamma", "0", "--epsilon", "0.9"]
    target = tmp_path / "winner.onnx"
    out = _run_json(capsys, _codesign(files, *weights, "--method", "random", "--budget", "17", "--export", str(target),
                                      "--json"))
    assert out["onnx"] == str(target) and target.is_file()
    model = onnx.load(str(target), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batch = 1 if out["device"] == "board_fast_b1_r1" else 4
    assert dims == [batch, 128]


def test_text_output(files, capsys):
    assert main(_codesign(files, *WEIGHTS, "--method", "gbrt", "--budget", "17")) == 0
    text = capsys.readouterr().out
    assert "recommended pair (gbrt, 17 evaluations" in text and "performance" in text and "peak_power_w" in text
    assert "alternatives:" in text


def test_default_budget_on_the_public_boards(shared_data, tmp_path):
    """The whole command, oracle fitting included, as a user runs it (its time is measured by
    benchmarks/codesign_public.py, not here)."""
    profiles = sorted((shared_data / "protran").glob("*.json"))
    command = [sys.executable, "-m", "boshcode.cli", "codesign"]
    for profile in profiles:
        command += ["--profile", str(profile)]
    command += ["--accuracy", str(shared_data / "flexibert" / "glue_pretrain_16.json"), *WEIGHTS, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert len(out["history"]) == DEFAULT_BUDGET
    assert out["devices"] == [p.stem for p in profiles]


def test_search_progress_is_one_line_per_step_off_a_terminal(files, capsys):
    assert main(_codesign(files, *WEIGHTS, "--budget", "18", "--json")) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("codesign ")]
    assert lines and all("ETA" in line and "best P" in line for line in lines)
    assert lines[-1].startswith("codesign 18/18  elapsed ")


def test_measure_was_renamed_measure_on(files, capsys):
    assert main(_codesign(files, *WEIGHTS, "--measure", "board_fast_b1_r1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--measure-on board_fast_b1_r1" in err
    assert main(["codesign", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--measure-on DEVICE" in help_text and "--measure " not in help_text


def test_constraints_take_the_unit_of_their_measure_in_every_command(capsys):
    from protran.cli import main as protran_main
    from protran.vocabulary import MEASURES

    wanted = [f"--max-{m.name.replace('_', '-')}-{m.unit.lower()}" for m in MEASURES]
    assert wanted == ["--max-latency-s", "--max-energy-j", "--max-peak-power-w"]
    for command_main, command in ((protran_main, "pareto"), (main, "codesign")):
        assert command_main([command, "--help"]) == 0
        help_text = capsys.readouterr().out
        assert all(f"{flag} " in help_text for flag in wanted), command
        assert "--max-latency-ms" not in help_text


def test_choices_are_the_ones_the_search_accepts():
    from boshcode import _objective, _problem, _search
    from boshcode import cli as command
    from boshcode._baselines import BASELINES

    assert ("boshcode", *BASELINES) == METHODS and _search.MODES == MODES
    assert command.NORMALISATIONS == _objective.NORMALISATIONS
    assert command.DEFAULT_NORMALISATION == _objective.DEFAULT_NORMALISATION
    assert command.DEFAULT_RISK == _search.DEFAULT_RISK and command.DEFAULT_BUDGET == _search.DEFAULT_BUDGET
    assert command.ARCH_INPUTS == _problem.ARCH_INPUTS
    defaults = _search.SearchSettings()
    assert (defaults.inputs, defaults.n_starts) == (command.DEFAULT_ARCH_INPUTS, command.DEFAULT_GOBI_STARTS)


def test_risk_picks_the_pair_with_the_highest_lower_bound(files, capsys):
    common = (*WEIGHTS, "--method", "random", "--budget", "30", "--top", "29", "--json")
    sure = _run_json(capsys, _codesign(files, *common, "--risk", "3"))
    greedy = _run_json(capsys, _codesign(files, *common, "--risk", "0"))
    assert greedy["history"] == sure["history"]
    assert greedy["performance"] == max(greedy["history"])
    everything = [sure] + sure["alternatives"]
    assert sure["performance_lcb"] == max(e["performance"] - 3 * e["performance_std"] for e in everything)
    assert main(_codesign(files, *WEIGHTS, "--risk", "-1")) == 2
    assert "--risk" in capsys.readouterr().err


def test_normalisation_changes_p_not_the_pairs(files, capsys):
    common = (*WEIGHTS, "--method", "random", "--budget", "20", "--risk", "0", "--json")
    log = _run_json(capsys, _codesign(files, *common, "--normalise", "log"))
    top = _run_json(capsys, _codesign(files, *common, "--normalise", "max"))
    assert log["normalise"] == "log" and top["normalise"] == "max" and log["history"] != top["history"]
    assert log["bounds"] == top["bounds"] and log["bounds"]["latency_s"][0] < log["bounds"]["latency_s"][1]


def test_resume_continues_a_saved_search(files, capsys, tmp_path):
    state = tmp_path / "state.json"
    first = _run_json(capsys, _codesign(files, *WEIGHTS, "--method", "random", "--budget", "18", "--state",
                                        str(state), "--json"))
    saved = json.loads(state.read_text())
    assert saved["format"] == "boshcode-search-state" and len(saved["evaluations"]) == 18
    more = _run_json(capsys, _codesign(files, *WEIGHTS, "--method", "random", "--budget", "25", "--resume",
                                       str(state), "--json"))
    assert more["history"][:18] == first["history"] and len(more["history"]) == 25
    assert more["oracle_calls"] == 7 and len(json.loads(state.read_text())["evaluations"]) == 25
    # another search's state is refused with the difference
    other = ["--alpha", "0.4", "--beta", "0.3", "--gamma", "0.2", "--epsilon", "0.1"]
    assert main(_codesign(files, *other, "--method", "random", "--budget", "25", "--resume", str(state))) == 2
    err = capsys.readouterr().err
    assert "weights" in err and "--resume" in err and err.count("\n") == 1
    state.write_text("{not json")
    assert main(_codesign(files, *WEIGHTS, "--method", "random", "--resume", str(state))) == 2
    assert "not a search state" in capsys.readouterr().err


def test_gobi_starts_and_arch_inputs_reach_the_search(files, capsys, monkeypatch):
    from boshcode import _search

    seen = []
    real = _search.codesign

    def recording(*args, **kwargs):
        seen.append(kwargs["settings"])
        return real(*args, **kwargs)

    monkeypatch.setattr(_search, "codesign", recording)
    out = _run_json(capsys, _codesign(files, *WEIGHTS, "--budget", "20", "--gobi-starts", "2", "--arch-inputs",
                                      "both", "--json"))
    assert len(out["history"]) == 20
    assert (seen[-1].n_starts, seen[-1].inputs) == (2, "both")
    assert main(_codesign(files, *WEIGHTS, "--arch-inputs", "pixels")) == 2
    assert "--arch-inputs" in capsys.readouterr().err


# -- targets: a device under a runtime, and the drift charge ------------------------------------------

# Every key of the co-design JSON before targets had runtimes; scripts read them, so none may go.
RESULT_KEYS = {"device", "model_dict", "hash", "embedding", "predicted", "predicted_std", "performance",
               "performance_std", "performance_lcb", "feasible", "extrapolated", "extrapolation", "elapsed_s",
               "search_s", "history", "method", "mode", "risk", "alternatives", "weights", "normalise", "bounds",
               "devices", "evaluations", "oracle_calls", "stopped"}
PAIR_KEYS = {"device", "model_dict", "hash", "embedding", "predicted", "predicted_std", "performance",
             "performance_std", "performance_lcb", "feasible", "extrapolated", "extrapolation"}
TWINS = ["edge[onnxruntime]", "edge[onnxruntime-int8]"]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """One device profiled under two runtimes with the same measurements: two otherwise equal targets."""
    from protran._store import RunStore

    folder = tmp_path_factory.mktemp("boshcode-targets")
    measured = _write_profile(folder / "edge.json", speed=1.0, seed=6)
    store = folder / "edge.sqlite"
    with RunStore(store) as runs:
        for runtime in ("onnxruntime", "onnxruntime-int8"):
            runs.import_protran_json(measured, device="edge", runtime=runtime)
    return {"store": store, "accuracy": _write_accuracy(folder / "scores.csv"), "folder": folder}


def _twin_codesign(twins, *extra: str) -> list[str]:
    return ["codesign", "--profile", str(twins["store"]), "--accuracy", str(twins["accuracy"]), *WEIGHTS,
            "--method", "random", "--budget", "20", "--json", *extra]


def _drift_file(folder: Path, runtime: str, increase_rel: float, name: str = "drift.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({
        "model": {"checkpoint": "ckpt/model.safetensors", "arch_hash": "0" * 32}, "sequences": 64,
        "runtimes": {runtime: {"base_runtime": "onnxruntime", "precision": "int8", "calibration": "minmax",
                               "hidden_cosine": 0.99, "mlm_loss_f32": 5.0, "mlm_loss": 5.0 * (1 + increase_rel),
                               "mlm_loss_increase_rel": increase_rel},
                     "openvino-bf16": {"available": False, "reason": "no bf16 on this CPU"}}}))
    return path


def test_one_device_under_two_runtimes_is_two_targets(twins, capsys):
    out = _run_json(capsys, _twin_codesign(twins))
    assert set(out) >= RESULT_KEYS and all(set(a) >= PAIR_KEYS for a in out["alternatives"])
    assert out["devices"] == TWINS
    assert out["targets"] == [{"device": TWINS[0], "runtime": "onnxruntime"},
                              {"device": TWINS[1], "runtime": "onnxruntime-int8"}]
    for pair in [out, *out["alternatives"]]:
        assert pair["device"] == f"edge[{pair['runtime']}]"
    assert out["drift_charge"] is None
    assert main(_twin_codesign(twins)[:-1]) == 0  # the text names the runtime too
    assert f"runtime      {out['runtime']}" in capsys.readouterr().out


def test_runtimes_and_device_select_targets(twins, capsys):
    out = _run_json(capsys, _twin_codesign(twins, "--runtimes", "onnxruntime-int8"))
    assert out["devices"] == [TWINS[1]] and out["runtime"] == "onnxruntime-int8"
    assert main(_twin_codesign(twins, "--runtimes", "openvino,tensorrt")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no target runs under openvino, tensorrt" in err and TWINS[0] in err
    # a device name is a target where it names one; with several runtimes, a runtime must pick it
    assert main(_twin_codesign(twins, "--mode", "hw_nas", "--device", "edge", "--method", "boshcode")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "several runtimes" in err and TWINS[1] in err
    for extra in (("--device", "edge", "--runtimes", "onnxruntime"), ("--device", TWINS[0])):
        out = _run_json(capsys, _twin_codesign(twins, "--mode", "hw_nas", "--method", "boshcode", "--budget", "17",
                                               *extra))
        assert out["devices"] == [TWINS[0]] and out["runtime"] == "onnxruntime"


def test_drift_charge_lowers_the_charged_runtimes_accuracy(twins):
    from boshcode._oracle import SurrogateOracle

    oracle = SurrogateOracle.from_files([twins["store"]], twins["accuracy"], drift_charges={"onnxruntime-int8": 0.9})
    specs = sample_architectures(5, method="random", seed=9)
    plain, charged = oracle.predict(specs, TWINS[0]), oracle.predict(specs, TWINS[1])
    assert charged["accuracy"]["mean"] == pytest.approx(0.9 * plain["accuracy"]["mean"], rel=1e-12)
    assert charged["accuracy"]["std"] == pytest.approx(0.9 * plain["accuracy"]["std"], rel=1e-12)
    assert list(charged["latency_s"]["mean"]) == list(plain["latency_s"]["mean"])
    assert (oracle.runtime(TWINS[1]), oracle.charge(TWINS[1]), oracle.charge(TWINS[0])) == ("onnxruntime-int8", 0.9, 1)


def test_drift_charge_flips_the_pick_between_equal_targets(twins, capsys):
    plain = _run_json(capsys, _twin_codesign(twins))
    other = next(t for t in ("onnxruntime", "onnxruntime-int8") if t != plain["runtime"])
    # a drift of the other runtime leaves the pick alone; a drift of the pick's runtime moves it over
    unmoved = _run_json(capsys, _twin_codesign(twins, "--runtime-drift",
                                               str(_drift_file(twins["folder"], other, 0.5, "other.json"))))
    assert (unmoved["device"], unmoved["hash"], unmoved["performance"]) == \
           (plain["device"], plain["hash"], plain["performance"])
    assert unmoved["drift_charge"] == {other: 0.5}
    drift = _drift_file(twins["folder"], plain["runtime"], 0.5)
    charged = _run_json(capsys, _twin_codesign(twins, "--runtime-drift", str(drift)))
    assert charged["runtime"] == other and charged["drift_charge"] == {plain["runtime"]: 0.5}
    assert charged["predicted"]["accuracy"] > 0
    off = _run_json(capsys, _twin_codesign(twins, "--runtime-drift", str(drift), "--drift-charge", "off"))
    assert off["drift_charge"] is None and (off["device"], off["hash"]) == (plain["device"], plain["hash"])


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON"),
    (json.dumps({"model": {"checkpoint": "c", "arch_hash": "h"}, "sequences": 8}), '"runtimes" must be'),
    (json.dumps({"model": {"checkpoint": "c", "arch_hash": "h"}, "sequences": 8,
                 "runtimes": {"onnxruntime-int8": {"base_runtime": "onnxruntime", "precision": "int8",
                                                   "calibration": None, "hidden_cosine": 0.9, "mlm_loss_f32": 5,
                                                   "mlm_loss": 5.1}}}), '"mlm_loss_increase_rel" must be'),
    (json.dumps({"model": {"checkpoint": "c", "arch_hash": "h"}, "sequences": 8,
                 "runtimes": {"openvino-bf16": {"available": False}}}), 'needs a "reason"'),
    (None, "cannot read it"),
])
def test_a_bad_drift_file_is_one_line(twins, capsys, tmp_path, content, message):
    path = tmp_path / "drift.json"
    if content is not None:
        path.write_text(content)
    assert main(_twin_codesign(twins, "--runtime-drift", str(path))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "--runtime-drift" in err and "Traceback" not in err


def test_drift_charge_on_needs_drift_data(twins, capsys):
    assert main(_twin_codesign(twins, "--drift-charge", "on")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runtime-drift FILE" in err
