"""Does a chosen model, served, run as fast as this machine's profile predicts?

The committed ONNX Runtime profile of this machine (``datasets/profiles/epyc-cpu-onnxruntime.sqlite``)
gives a latency surrogate (protran's public models layer: ``load_profiles`` and ``fit_models``, the
default surrogate and features). It is fitted on the profile run's rows only; the architectures
served are taken from the held-out run (random architectures the profiler never chose), at the 10th,
50th and 90th percentile of their profiled latency, so the prediction is out of sample and the sizes
vary. Each is served with ``flexibert serve MODEL --runtime onnxruntime --bench N --json`` in its own
process, under the profile's conditions (``datasets/profiles/README.md``: batch 1, 128 tokens, one
thread, pinned to CPU 1; with ``--load``, the synthetic load of ``benchmarks/synthetic_load.py``
runs on CPU 0, as it did while profiling). The served models have random weights (the profile's
architectures were never trained): their latency is real, their predictions are not.

Unless ``--no-winner``, a fourth architecture is the co-design winner on this device alone: BOSHCODE
(boshcode's public ``codesign`` on a ``SurrogateOracle`` of the same fitted models, with the shipped
NAS-Bench-BERT accuracy records; weights 0.5 accuracy and 0.5 latency, a budget of 40 pairs, seeded).
Such a winner usually lies outside the profiled sizes (``outside_profiled``): its prediction is an
extrapolation, which is what serving it checks. With ``--verify-rounds N`` the search's own loop is
closed over the device first, as a user would close it: while the winner is an architecture the latency
model has no row of (at most N times), it is measured under the profile's settings into a temporary
copy of the store (a ``verify`` run of ``protran.measure_listed``, drift-corrected to the profile's
baseline with ``--drift-correction``/``--drift-threshold``, which should be those the profile was
corrected with, in ``--processes`` fresh processes as profiled), the latency model is refitted with it,
and the search runs again; the loop has closed when the search answers with an architecture it has
measured. The served winner is the last search's, predicted by the last fit. ``--surrogate`` picks the
latency model (default: the profile run's own); with another one, the profile's own prediction from the
same rows is reported beside it. ``additive-gp`` is the one that follows the loop's measurements: the
default ``additive`` fits a robust cost model, which sets aside a measured row its cost features cannot
explain, so a winner the cost model over-predicts stays over-predicted after it was measured.

Host speed: this virtual machine's speed follows its host, and a profile taken hours earlier can be
off by tens of per cent however well its model fits. So, in the same sitting (under the same load,
just before serving), the profile's reference architecture (drift control, ``protran.reference_spec``)
is measured again with ``protran.measure_architecture`` under the profile's settings; its latency over
the profile's reference baseline (the one its rows were corrected to, ``protran.drift_baseline`` of the rule given by
``--drift-correction``: with ``bracket`` the median of all the profile run's readings; else the median
of its first three) is ``host_speed_factor``, and
``predicted x host_speed_factor`` is the prediction for this sitting. Both errors are reported; the
plain prediction is the one the 15 % goal is read on.

For each architecture it writes the predicted latency (mean and std), the profiled latency of the
held-out row, the served p50/p99 of ``latency_s`` (the encoder's run in ONNX Runtime, the quantity
the profile measures) and of ``request_s`` (the whole request, with tokenising and the MLM head in
torch), the throughput, and the relative error of the served p50 against the prediction, with
whether it is within 15 %.

    python benchmarks/serve_winner.py --seed 0 --requests 200 [--load] [--verify-rounds 3]   # minutes

Results: ``benchmarks/results/serve_winner/`` (``results.json``, ``results.csv``, ``README.md``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from protran.surrogates import SURROGATE_NAMES  # noqa: E402
from protran.vocabulary import DEFAULT_SURROGATE, DRIFT_CORRECTIONS  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "serve_winner"
PROFILE = REPO / "datasets" / "profiles" / "epyc-cpu-onnxruntime.sqlite"
ACCURACY = REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"
WINNER_WEIGHTS = (0.5, 0.0, 0.0, 0.5)  # alpha (accuracy), beta, gamma, epsilon (latency)
WINNER_BUDGET = 40
RUNTIME = "onnxruntime"
# The profile's conditions (datasets/profiles/README.md): one thread on CPU 1, the load on CPU 0.
PROFILE_CPUS = "1"
LOAD_CPUS = "0"
QUANTILES = (0.1, 0.5, 0.9)
WITHIN = 0.15
USABLE = ("ok", "unstable")


def profile_runs(path: Path) -> tuple[object, list, list]:
    """(the profile run, its measured rows, the held-out run's measured rows) of a run store."""
    from protran import RunStore

    with RunStore(path, readonly=True) as store:
        runs = {run.config.get("purpose", "profile"): run for run in store.runs()}
        if "profile" not in runs or "holdout" not in runs:
            raise SystemExit(f"{path}: needs a profile run and a held-out run")
        return (runs["profile"], store.measurements(run_id=runs["profile"].id, status=USABLE),
                store.measurements(run_id=runs["holdout"].id, status=USABLE))


def pick_architectures(holdout_rows: list) -> list:
    """Held-out rows at the QUANTILES of their profiled latency: small, middle, large."""
    ordered = sorted(holdout_rows, key=lambda row: row.latency_s)
    picked = []
    for q in QUANTILES:
        row = ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
        if row not in picked:
            picked.append(row)
    return picked


def fit_surrogate(path: Path, train_hashes: set[str], seed: int, with_accuracy: bool, surrogate: str):
    """The models of the profile, its latency fitted by ``surrogate`` on ``train_hashes`` only; with
    the accuracy model (for co-design) when asked."""
    from protran import fit_models, load_accuracy_files, load_profiles

    profile, = load_profiles([path])
    rows = tuple(row for row in profile.rows if row.arch_hash in train_hashes)
    accuracy = load_accuracy_files(ACCURACY) if with_accuracy else None
    return (fit_models([replace(profile, rows=rows)], accuracy, seed=seed, surrogate=surrogate), profile.device,
            len(rows))


def codesign_winner(models, seed: int) -> dict:
    """BOSHCODE's best pair on this one device: ``{"hash", "model_dict"}``."""
    from boshcode import SearchSettings, SurrogateOracle, Weights, codesign

    result, problem = codesign(SurrogateOracle(models), Weights(*WINNER_WEIGHTS),
                               settings=SearchSettings(budget=WINNER_BUDGET, seed=seed))
    described = problem.describe(result.best)
    return {"hash": described["hash"], "model_dict": described["model_dict"]}


def host_speed_factor(profile_run, path: Path, args: argparse.Namespace) -> dict:
    """The profile's reference architecture measured now, under the profile's settings, over its
    baseline in the profile run: ``{"reference_s", "baseline_s", "factor"}`` (factor None where the
    store has no successful reference reading)."""
    from flexibert import DesignSpace
    from flexibert.clitools import cpu_list
    from protran import RunStore, drift_baseline, measure_architecture, reference_spec

    with RunStore(path, readonly=True) as store:
        references = store.references(profile_run.id)
    # the baseline the profile's rows were corrected to, by the rule they were corrected with
    baseline = drift_baseline(references, getattr(args, "drift_correction", "latest"))
    if baseline is None:
        return {"reference_s": None, "baseline_s": None, "factor": None}
    measured = measure_architecture(reference_spec(DesignSpace.default()), runtime=profile_run.runtime,
                                    batch_size=profile_run.batch_size, seq_len=profile_run.seq_len,
                                    num_threads=args.threads, time_cap_s=30.0,
                                    cpus=list(cpu_list(args.cpus)), processes=args.processes)
    if measured.latency_s is None:
        return {"reference_s": None, "baseline_s": baseline, "factor": None}
    return {"reference_s": measured.latency_s, "baseline_s": baseline, "factor": measured.latency_s / baseline}


def serve_bench(model_dict: dict, args: argparse.Namespace, workdir: Path, runtime: str = RUNTIME) -> dict:
    """``flexibert serve --bench`` on one architecture, in its own process (``args``: threads, cpus,
    requests, warmup, seed)."""
    path = workdir / "model.json"
    path.write_text(json.dumps(model_dict))
    command = [sys.executable, "-m", "flexibert.cli", "serve", str(path), "--runtime", runtime, "--threads",
               str(args.threads), "--cpus", args.cpus, "--bench", str(args.requests), "--warmup", str(args.warmup),
               "--seed", str(args.seed), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"flexibert serve failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def start_load() -> subprocess.Popen:
    script = REPO / "benchmarks" / "synthetic_load.py"
    return subprocess.Popen([sys.executable, str(script), "--cpus", LOAD_CPUS], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_load(load: subprocess.Popen | None) -> None:
    if load is not None and load.poll() is None:
        load.send_signal(signal.SIGTERM)
        try:
            load.wait(timeout=10)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()


def verify_winner(models, device: str, profile_run, train_hashes: set[str], store: Path,
                  args: argparse.Namespace) -> tuple[object, dict, list[dict], set[str]]:
    """BOSHCODE's winner, measured while it is an architecture the latency model has no row of: up to
    ``args.verify_rounds`` times, the winner is measured into ``store`` (a copy of the profile: a
    ``verify`` run of ``protran.measure_listed`` under the profile's settings, its drift control
    correcting it to the profile's baseline), the latency model refitted with it and the search run
    again. Returns the final models, the final winner, one record per measured round and the hashes
    of the final fit's rows."""
    from flexibert import ArchSpec
    from flexibert.clitools import cpu_list
    from protran import ProfileConfig, RunStore, measure_listed

    config = ProfileConfig(device=profile_run.device, runtime=profile_run.runtime,
                           batch_size=profile_run.batch_size, seq_len=profile_run.seq_len,
                           num_threads=args.threads, cpus=tuple(cpu_list(args.cpus)), reference_every=1,
                           drift_correction=args.drift_correction, drift_threshold=args.drift_threshold,
                           processes=args.processes)
    rounds: list[dict] = []
    winner = codesign_winner(models, args.seed)
    while len(rounds) < args.verify_rounds:
        spec = ArchSpec.from_model_dict(winner["model_dict"])
        if winner["hash"] in train_hashes:
            break  # the search's answer is one the model has measured: the loop has closed
        predicted = models.predict([spec], device)[0]["predicted"]["latency_s"]
        where = "outside" if models.outside_profiled([spec], device)[0] else "inside"
        print(f"verify round {len(rounds) + 1}: measuring {winner['hash'][:8]} (not measured yet; {where} the "
              "profiled sizes)", flush=True)
        with RunStore(store) as runs:
            summary = measure_listed(config, [spec], runs, purpose="verify")
            row, = runs.measurements(run_id=summary.run_id, status=USABLE) or [None]
        if row is None:
            raise SystemExit(f"the winner {winner['hash'][:8]} could not be measured; see {store}")
        rounds.append({"hash": winner["hash"], "predicted_latency_s": predicted["mean"],
                       "predicted_std_s": predicted["std"], "measured_latency_s": row.latency_s,
                       "measured_raw_latency_s": row.latency_raw_s})
        train_hashes = train_hashes | {winner["hash"]}
        models, _, _ = fit_surrogate(store, train_hashes, args.seed, with_accuracy=True, surrogate=args.surrogate)
        winner = codesign_winner(models, args.seed)
    return models, winner, rounds, train_hashes


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[dict], dict]:
    from flexibert import ArchSpec, analytic_features

    profile_run, train, holdout = profile_runs(args.profile)
    runtime = profile_run.runtime  # served in the runtime the profile measured
    chosen = [{"hash": row.arch_hash, "model_dict": row.model_dict, "source": "held-out",
               "profiled_latency_s": row.latency_s} for row in pick_architectures(holdout)]
    chosen_hashes = {row["hash"] for row in chosen}
    train_hashes = {row.arch_hash for row in train} - chosen_hashes
    surrogate_of_profile = profile_run.config.get("surrogate", DEFAULT_SURROGATE)
    args.surrogate = args.surrogate or surrogate_of_profile
    models, device, n_train = fit_surrogate(args.profile, train_hashes, args.seed, with_accuracy=args.winner,
                                            surrogate=args.surrogate)
    fitted_on = args.profile
    load = start_load() if args.load else None
    results, rounds = [], []
    try:
        if load is not None:
            time.sleep(2.0)  # let the load reach its pace before the first measurement
        if args.winner:
            print("co-design winner on this device ...", flush=True)
            store = workdir / "profile.sqlite"  # the verify rounds write to a copy, never to the profile
            copy_store(args.profile, store)
            models, winner, rounds, train_hashes = verify_winner(models, device, profile_run, train_hashes, store,
                                                                 args)
            fitted_on = store
            verified = {r["hash"]: r["measured_latency_s"] for r in rounds}
            chosen.append({**winner, "source": "co-design winner" + (" (measured in a verify round)"
                                                                     if winner["hash"] in verified else ""),
                           "profiled_latency_s": verified.get(winner["hash"])})
        # Beside another surrogate's prediction, the profile's own (fitted on the same rows) for comparison.
        own = None if args.surrogate == surrogate_of_profile else fit_surrogate(
            fitted_on, train_hashes, args.seed, with_accuracy=False, surrogate=surrogate_of_profile)[0]
        speed = host_speed_factor(profile_run, args.profile, args)
        factor = speed["factor"]
        if factor is not None:
            print(f"reference now {speed['reference_s'] * 1e3:.1f} ms, profile baseline "
                  f"{speed['baseline_s'] * 1e3:.1f} ms: host speed factor {factor:.3f}", flush=True)
        for row in chosen:
            spec = ArchSpec.from_model_dict(row["model_dict"])
            predicted = models.predict([spec], device)[0]["predicted"]["latency_s"]
            with tempfile.TemporaryDirectory(prefix="serve-winner-") as workdir:
                report = serve_bench(row["model_dict"], args, Path(workdir), runtime=runtime)
            served = report["latency_s"]["p50"]
            error = (served - predicted["mean"]) / predicted["mean"]
            error_now = None if factor is None else (served - predicted["mean"] * factor) / (predicted["mean"] * factor)
            features = analytic_features(spec, batch_size=1, seq_len=128)
            if own is not None:
                row = {**row, "predicted_by_profile_surrogate_s":
                       own.predict([spec], device)[0]["predicted"]["latency_s"]["mean"]}
            results.append({
                **row, "layers": spec.num_layers, "params": int(features["params"]),
                "gflops": features["flops"] / 1e9,
                "outside_profiled": bool(models.outside_profiled([spec], device)[0]),
                "predicted_latency_s": predicted["mean"], "predicted_std_s": predicted["std"],
                "served_latency_s": report["latency_s"], "served_request_s": report["request_s"],
                "throughput_rps": report["throughput_rps"], "relative_error": error,
                "within_15pct": bool(abs(error) <= WITHIN),
                "relative_error_speed_scaled": error_now,
                "within_15pct_speed_scaled": None if error_now is None else bool(abs(error_now) <= WITHIN),
            })
            print(f"{row['hash'][:8]} ({row['source']}): predicted {predicted['mean'] * 1e3:.1f} ms, served p50 "
                  f"{served * 1e3:.1f} ms ({error:+.1%})", flush=True)
    finally:
        stop_load(load)
    conditions = {"device": device, "runtime": runtime, "profile": str(args.profile.relative_to(REPO)),
                  "threads": args.threads, "cpus": args.cpus,
                  "seq_len": 128, "batch_size": 1, "requests": args.requests, "warmup": args.warmup,
                  "synthetic_load_cpus": LOAD_CPUS if args.load else None, "train_rows": n_train,
                  "profile_run": profile_run.id, "profile_threads": profile_run.num_threads,
                  "host_speed": speed, "verify_rounds": rounds, "verify_rounds_allowed": args.verify_rounds,
                  "drift_correction": args.drift_correction, "drift_threshold": args.drift_threshold,
                  "surrogate": args.surrogate, "profile_surrogate": surrogate_of_profile,
                  "processes": args.processes}
    return results, conditions


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a run store (SQLite's online backup; the source is opened read-only)."""
    import sqlite3

    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def write_results(results: list[dict], meta: dict, out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    columns = ["hash", "source", "outside_profiled", "layers", "params", "gflops", "predicted_latency_s",
               "predicted_std_s", "predicted_by_profile_surrogate_s", "profiled_latency_s",
               "served_latency_p50_s", "served_latency_p99_s", "served_request_p50_s", "served_request_p99_s",
               "throughput_rps", "relative_error", "within_15pct", "relative_error_speed_scaled",
               "within_15pct_speed_scaled"]
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in results:
            writer.writerow({**{c: r[c] for c in columns if c in r},
                             "served_latency_p50_s": r["served_latency_s"]["p50"],
                             "served_latency_p99_s": r["served_latency_s"]["p99"],
                             "served_request_p50_s": r["served_request_s"]["p50"],
                             "served_request_p99_s": r["served_request_s"]["p99"]})
    (out / "README.md").write_text(readme(results, meta))


def readme(results: list[dict], meta: dict) -> str:
    c = meta["conditions"]
    lines = [
        "# Served latency against the profile's prediction",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['wall_s']:.0f} s; {meta['machine']['platform']}, "
        f"{meta['machine']['cpus']} CPUs). {c['runtime']}, batch 1, {c['seq_len']} tokens, {c['threads']} thread(s) "
        f"pinned to CPU {c['cpus']}; synthetic load: "
        f"{'CPU ' + c['synthetic_load_cpus'] if c['synthetic_load_cpus'] else 'none'}; {c['requests']} requests "
        f"after {c['warmup']} warm-up, random weights. Surrogate `{c.get('surrogate', 'additive')}` fitted on the "
        f"{c['train_rows']} profile-run rows of "
        f"`{c['device']}`; the held-out architectures were never in the fit; the co-design winner is BOSHCODE's "
        "best pair on this device (weights 0.5 accuracy, 0.5 latency).",
        "",
        "| arch | source | layers | params (M) | GFLOPs | predicted (ms) | profiled (ms) | served p50 (ms) "
        "| served p99 (ms) | request p50 (ms) | requests/s | error | within 15 % | error, speed-scaled |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        profiled = "–" if r["profiled_latency_s"] is None else f"{r['profiled_latency_s'] * 1e3:.1f}"
        source = r["source"] + (" (outside the profiled sizes)" if r["outside_profiled"] else "")
        lines.append(
            f"| `{r['hash'][:8]}` | {source} | {r['layers']} | {r['params'] / 1e6:.1f} | {r['gflops']:.2f} "
            f"| {r['predicted_latency_s'] * 1e3:.1f} ± {r['predicted_std_s'] * 1e3:.1f} "
            f"| {profiled} | {r['served_latency_s']['p50'] * 1e3:.1f} "
            f"| {r['served_latency_s']['p99'] * 1e3:.1f} | {r['served_request_s']['p50'] * 1e3:.1f} "
            f"| {r['throughput_rps']:.1f} | {r['relative_error']:+.1%} | {'yes' if r['within_15pct'] else 'no'} "
            f"| {_signed(r.get('relative_error_speed_scaled'))} |")
    lines += ["", "error = (served p50 − predicted) / predicted. `served` is `latency_s` of `flexibert serve` "
              "(the encoder's run in the runtime); `request` adds tokenising and the MLM head in torch.", ""]
    own = [r for r in results if r.get("predicted_by_profile_surrogate_s")]
    if own:
        lines += [f"The profile's own surrogate (`{c['profile_surrogate']}`), fitted on the same rows: "
                  + "; ".join(f"`{r['hash'][:8]}` {r['predicted_by_profile_surrogate_s'] * 1e3:.1f} ms "
                              f"({r['served_latency_s']['p50'] / r['predicted_by_profile_surrogate_s'] - 1:+.1%})"
                              for r in own) + ".", ""]
    rounds = c.get("verify_rounds") or []
    if c.get("verify_rounds_allowed"):
        lines += [f"Verify rounds (up to {c['verify_rounds_allowed']}; drift correction {c['drift_correction']}, "
                  f"threshold {c['drift_threshold']:.0%}): "
                  + ("; ".join(f"`{r['hash'][:8]}` predicted {r['predicted_latency_s'] * 1e3:.1f} ± "
                               f"{r['predicted_std_s'] * 1e3:.1f} ms, measured {r['measured_latency_s'] * 1e3:.1f} ms "
                               f"({r['measured_latency_s'] / r['predicted_latency_s'] - 1:+.1%})" for r in rounds)
                     if rounds else "none needed, the first winner was an architecture the profile had measured")
                  + ". Each measured winner joined the latency model's rows before the next search; the served "
                  "winner's prediction is from the last fit.", ""]
    speed = c.get("host_speed") or {}
    if speed.get("factor") is not None:
        lines += [f"Host speed in this sitting: the profile's reference architecture measured "
                  f"{speed['reference_s'] * 1e3:.1f} ms just before serving, against a baseline of "
                  f"{speed['baseline_s'] * 1e3:.1f} ms in the profile run (factor {speed['factor']:.3f}); the "
                  "speed-scaled error compares the served p50 with the prediction times that factor.", ""]
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def main(argv: list[str] | None = None) -> None:
    from flexibert.clitools import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the surrogate and the served texts")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per architecture (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (default 1, as profiled)")
    parser.add_argument("--cpus", default=PROFILE_CPUS, help=f"CPUs to pin to (default {PROFILE_CPUS}, as profiled)")
    parser.add_argument("--no-winner", dest="winner", action="store_false",
                        help="leave out the co-design winner (saves fitting the accuracy model and the search)")
    parser.add_argument("--load", action="store_true",
                        help=f"run the synthetic load on CPU {LOAD_CPUS} meanwhile, as while profiling")
    parser.add_argument("--profile", type=Path, default=PROFILE,
                        help="run store with a profile and a held-out run (default: this machine's ONNX Runtime "
                             "profile); served in its runtime")
    parser.add_argument("--verify-rounds", type=non_negative_int, default=0, metavar="N",
                        help="measure a winner the latency model has no row of, refit and search again, up to N "
                             "times (default 0: serve the first winner as predicted)")
    parser.add_argument("--surrogate", choices=SURROGATE_NAMES,
                        help="latency surrogate (default: the one the profile run was measured with); another one "
                             "is reported beside the profile's own prediction")
    parser.add_argument("--processes", type=positive_int, default=1, metavar="N",
                        help="fresh processes per verify and reference measurement, as profiled (default 1)")
    parser.add_argument("--drift-correction", choices=DRIFT_CORRECTIONS, default="latest",
                        help="drift rule of the verify measurements: the one the profile was corrected with")
    parser.add_argument("--drift-threshold", type=float, default=0.05,
                        help="drift threshold of the verify measurements (default 0.05, as profiled)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    args.profile = args.profile.resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-winner-store-") as workdir:
        results, conditions = measure(args, Path(workdir))
    meta = {
        "command": "python benchmarks/serve_winner.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - started, "seed": args.seed, "conditions": conditions,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "within_15pct": f"{sum(r['within_15pct'] for r in results)}/{len(results)}",
        "median_abs_relative_error": float(np.median([abs(r["relative_error"]) for r in results])),
    }
    write_results(results, meta, args.out)
    print(f"{meta['within_15pct']} within 15 %; wrote {args.out}/ in {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
