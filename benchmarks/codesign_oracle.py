"""BOSHCODE against every baseline on a ground-truth world that no searcher can peek into.

What is compared. One world (``benchmarks/truth_oracle.py``): a ProTran surrogate fitted once on every
public row (the four boards and the 250 NAS-Bench-BERT records, seed 0), whose predicted MEANS are
taken as the true accuracy, latency, energy and peak power of any (architecture, device) pair. Every
method (``boshcode`` with its default settings, every entry of ``boshcode.BASELINES``: random search,
GBRT / GP / random-forest BO and the Optuna samplers, and the ``VARIANTS`` that tell what BOSHCODE's
choices do: ``boshcode-embedding``, ``boshcode-gobi``, ``gbrt-structure``) searches it for the weights (0.5, 0.2,
0.2, 0.1) by default, with budgets 50, 100 and 200 evaluations, ten seeds (0-9), under both
normalisations of P (``max`` and ``log``).

How fairness is ensured. The world runs in its own process (a server on a Unix socket); each search
runs in a worker process (``--workers``, spawned, one thread each) and sees the world only through the
``--oracle-command`` JSON-lines protocol (``CommandOracle`` on ``truth_oracle.py connect``): the same
header (devices and bounds, so the same P), the same exact answers (std 0), nothing else. Every method
starts from the same seeded initial sample for a seed. Each run spends max(budgets) evaluations and the
smaller budgets are read from its prefixes: no method's next query depends on its budget (BOSHCODE
and the scikit-learn baselines only stop earlier; Optuna's fallback to random pairs after 20 trials
per budgeted evaluation is the one exception, and runs where it struck are counted in the README).
The pair a method returns at budget B is the best P among its first B evaluations (values are exact,
so the lower bound equals P). Every evaluation is timestamped, so the wall time to reach each budget
is known (it includes the world's answer time, about 10 ms an evaluation, the same for every method).

What is reported, per normalisation and budget: the median oracle value P [inter-quartile range];
the regret against the best pair a long search finds on the same truth model (``--long-random``
random pairs, then mutation hill-climbing from the top 20 for ``--long-climb`` more evaluations,
in-process, 20,000 + 20,000 by default: on the log normalisation, 4,000 climbing evaluations stop
about 0.005 below, 40,000 about 0.0005 above); the evaluations needed to match random search with
``--random-reference`` (1,000) evaluations of the same seed (the random method's own run is that
reference's prefix); the median wall time. Also:

- ``own``: the world is the searcher's own surrogate. Each public board's rows and the accuracy
  records (by architecture) are split in two seeded halves per seed; BOSHCODE (budget 100, log
  normalisation) searches a surrogate fitted on half A and recommends ``recommend(evaluations,
  risk=K)`` for K in (0, 0.5, 1, 2), and so does random search (same budget, seed and initial
  sample); each recommended pair is scored by a surrogate fitted on half B, with the full-data bounds
  (the same for every method);
- ``timing``: the default BOSHCODE search (budget 100, log) over seven boards (the four public ones and
  three renamed copies), on our own surrogate, in THIS process (so ``taskset`` on the command pins
  it): the median of three runs (seeds 0-2) of ``SearchResult.elapsed_s``, and the oracle's fit time;
- ``epsilon``: for alpha 0.5 and epsilon in (0, 0.1, ..., 0.5), beta = gamma = (0.5 - epsilon) / 2,
  under each normalisation, the long-search optimum on the truth model and the spread of P over
  ``--epsilon-random`` random pairs on the seven boards (and the four).

Results are cached per job under ``benchmarks/results/codesign_oracle/jobs/`` (``<method>_<normalise>
_<seed>.json``, ``long_<normalise>.json``, ``own_<seed>.json``, ``epsilon.json``, ``timing.json``):
an interrupted run resumes, a rerun computes only what is missing (``--redo`` recomputes what it
asks for), and ``results.json``, ``README.md``, ``convergence_log.png`` and ``convergence_max.png``
are regenerated from every cached job of the same world and weights. One line per finished job goes
to stderr with the elapsed time and an ETA.

Usage::

    python benchmarks/codesign_oracle.py --workers 2                       # everything (hours)
    python benchmarks/codesign_oracle.py --parts oracle --methods boshcode,random,optuna-tpe --seeds 5
    python benchmarks/codesign_oracle.py --parts own,epsilon
    taskset -c 0 python benchmarks/codesign_oracle.py --parts timing
    taskset -c 0 python benchmarks/codesign_oracle.py --seeds 2 --budgets 20,30 --methods boshcode,random \\
        --normalise log --random-reference 100 --parts oracle --out /tmp/oracle_smoke
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import importlib.metadata
import json
import math
import multiprocessing
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "results" / "codesign_oracle"
TRUTH_SCRIPT = REPO / "benchmarks" / "truth_oracle.py"
PAPER_WEIGHTS = (0.5, 0.2, 0.2, 0.1)
BUDGETS = (50, 100, 200)
N_SEEDS = 10
RANDOM_REFERENCE = 1000
NORMALISATIONS = ("log", "max")
PARTS = ("oracle", "own", "timing", "epsilon")
RISKS = (0.0, 0.5, 1.0, 2.0)
EPSILONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
TRUTH_SEED = 0  # the seed every surrogate here is fitted with (the boshcode command's ORACLE_SEED)
LONG_SEED = 0
LONG_TOP = 20  # parents of each hill-climbing round
LONG_MUTANTS = 8  # mutants per parent and round
ANSWER_TIMEOUT_S = 600.0
SERVER_START_S = 900.0
#: Rough seconds per evaluation (world's answer included; measured at budget 50-100 on a loaded 2-core EPYC),
#: to start the longest jobs first and estimate the ETA.
COST_PER_EVAL = {"boshcode": 0.45, "boshcode-embedding": 0.45, "boshcode-gobi": 0.6, "gbrt-structure": 0.35,
                 "optuna-gp": 1.5, "optuna-gp-mo": 2.0, "gpr": 0.4, "gbrt": 0.3, "rf": 0.25,
                 "optuna-tpe-mo": 0.2, "optuna-tpe": 0.12}
DEFAULT_COST_PER_EVAL = 0.03
#: Methods beside the ones users know, to tell what BOSHCODE's choices do: BOSHCODE reading the embedding
#: (the paper's inputs, not the default's structure features), BOSHCODE with GOBI from 4 pool points (off
#: by default), and GBRT-BO reading the structure features BOSHCODE reads by default (the baselines read
#: the embedding, as scikit-optimize users would).
VARIANTS = {"boshcode-embedding": ("boshcode", {"inputs": "embedding"}),
            "boshcode-gobi": ("boshcode", {"n_starts": 4}),
            "gbrt-structure": ("gbrt", {"inputs": "structure"})}


# -- paths and the machine -----------------------------------------------------------------------------


def data_dir() -> Path:
    return Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data"))


def default_profiles() -> list[Path]:
    public = sorted((data_dir() / "protran").glob("*.json"))
    if not public:
        raise SystemExit(f"no public profiles in {data_dir() / 'protran'} (set EDGETRAN_DATA or pass --profile)")
    return public


def resolve(path: str) -> Path:
    """A configured path (relative to the repository root, as :func:`shown` writes it) to open."""
    return REPO / path


def shown(path: Path | str) -> str:
    """A path as a user beside this checkout would type it (relative to the repository root)."""
    return os.path.relpath(Path(path).resolve(), REPO)


def machine() -> dict:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "affinity": affinity,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "platform": platform.platform()}


def versions() -> dict:
    found = {}
    for package in ("numpy", "scipy", "scikit-learn", "torch", "optuna", "xgboost"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    found["edgetran"] = match.group(1) if match else None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    found["commit"] = done.stdout.strip() if done.returncode == 0 else None
    return found


def quartiles(values) -> tuple[float, float, float]:
    q25, q50, q75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def write_json(path: Path, content: dict) -> None:
    """Atomically: an interrupted write never leaves half a job file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=1) + "\n")
    partial.replace(path)


# -- the truth server ----------------------------------------------------------------------------------


class TruthServer:
    """``truth_oracle.py serve`` in a subprocess; ``command`` is what a searcher runs to reach it."""

    def __init__(self, profiles: list[Path], accuracy: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="truth-"))  # short: a socket path has ~100 characters
        self.socket = self.folder / "truth.sock"
        self.ready = self.folder / "ready.json"
        self.log = self.folder / "server.log"
        argv = [sys.executable, str(TRUTH_SCRIPT), "serve", "--socket", str(self.socket), "--ready-file",
                str(self.ready), "--accuracy", str(accuracy)]
        for profile in profiles:
            argv += ["--profile", str(profile)]
        argv.append("--watch-stdin")  # it exits when this process does, even killed
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=REPO)
        self.header = self._wait()
        self.command = [sys.executable, str(TRUTH_SCRIPT), "connect", str(self.socket)]

    def _wait(self) -> dict:
        deadline = time.monotonic() + SERVER_START_S
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the truth server did not start; its log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return json.loads(self.ready.read_text())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TruthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- oracles in a worker -------------------------------------------------------------------------------


class TimedOracle:
    """An oracle that adds up the seconds spent in its ``predict`` (the world's answer time)."""

    def __init__(self, base) -> None:
        self.base = base
        self.seconds = 0.0

    def __getattr__(self, name: str):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def devices(self):
        return self.base.devices

    @property
    def bounds(self):
        return self.base.bounds

    def predict(self, specs, device):
        started = time.perf_counter()
        try:
            return self.base.predict(specs, device)
        finally:
            self.seconds += time.perf_counter() - started


class CachedOracle:
    """A surrogate oracle that keeps every prediction, so problems with other weights share them."""

    def __init__(self, base) -> None:
        self.base = base
        self._rows: dict = {}

    def __getattr__(self, name: str):
        if name in ("base", "_rows"):
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def devices(self):
        return self.base.devices

    @property
    def bounds(self):
        return self.base.bounds

    def predict(self, specs, device):
        specs = list(specs)
        missing = list(dict.fromkeys(s for s in specs if (s, device) not in self._rows))
        if missing:
            fresh = self.base.predict(missing, device)
            for i, spec in enumerate(missing):
                self._rows[(spec, device)] = {m: None if v is None else (float(v["mean"][i]), float(v["std"][i]))
                                              for m, v in fresh.items()}
        rows = [self._rows[(s, device)] for s in specs]
        return {m: None if rows[0][m] is None else {"mean": np.array([r[m][0] for r in rows]),
                                                    "std": np.array([r[m][1] for r in rows])}
                for m in rows[0]}


def single_performance(oracle, spec, device: str, weights, bounds, normalise: str) -> tuple[float, dict]:
    """P of one pair from one single-architecture prediction (as the world answers it) and its means."""
    from boshcode import performance

    predicted = oracle.predict([spec], device)
    means = {m: None if v is None else float(v["mean"][0]) for m, v in predicted.items()}
    arrays = {m: None if v is None else np.array([max(v, 0.0) if m != "accuracy" else v]) for m, v in means.items()}
    return float(performance(arrays, weights, bounds, normalise)[0]), means


# -- job: one search through the protocol --------------------------------------------------------------


def _key(evaluation) -> tuple[bytes, int]:
    return np.asarray(evaluation.embedding, dtype=np.int64).tobytes(), int(evaluation.device)


def run_search(job: dict) -> dict:
    from boshcode import BaselineSettings, CommandOracle, SearchSettings, Weights, codesign, make_problem, run_baseline

    weights = Weights(*job["weights"])
    oracle = TimedOracle(CommandOracle(job["command"], timeout_s=ANSWER_TIMEOUT_S, startup_timeout_s=120))
    try:
        problem = make_problem(oracle, weights, normalise=job["normalise"])
        stamps: dict[tuple[bytes, int], tuple[float, float]] = {}
        started = time.perf_counter()

        def stamp(new) -> None:
            now = time.perf_counter() - started
            for e in new:
                stamps[_key(e)] = (now, oracle.seconds)

        problem.on_evaluated = stamp
        method, extra = VARIANTS.get(job["method"], (job["method"], {}))
        if method == "boshcode":
            settings = SearchSettings(budget=job["budget"], seed=job["seed"], **extra)
            result, _ = codesign(oracle, weights, settings=settings, normalise=job["normalise"], problem=problem)
        else:
            result = run_baseline(method, problem, BaselineSettings(budget=job["budget"], seed=job["seed"], **extra))
    finally:
        oracle.base.close()
    return describe_search(job, result, problem, stamps)


def describe_search(job: dict, result, problem, stamps: dict) -> dict:
    from flexibert import model_hash

    history = [float(p) for p in result.history]
    marks = [stamps.get(_key(e), (math.nan, math.nan)) for e in result.evaluations]
    times = np.fmax.accumulate(np.array([m[0] for m in marks]))
    oracle_s = np.fmax.accumulate(np.array([m[1] for m in marks]))
    best_at = {}
    for budget in sorted({*job["report_budgets"], len(history)}):
        if budget <= len(history):
            e = result.evaluations[int(np.argmax(history[:budget]))]
            best_at[str(budget)] = {"performance": e.performance, "device": problem.devices[e.device],
                                    "hash": model_hash(problem.spec(e.embedding)), "embedding": list(e.embedding),
                                    "means": e.means}
    # The command as a user would type it: the interpreter and the script of this machine are not worth keeping.
    command = ["python", shown(job["command"][1]), *job["command"][2:]]
    return {**job, "command": command, "history": history, "times_s": [round(float(t), 4) for t in times],
            "oracle_s": [round(float(t), 4) for t in oracle_s], "kinds": dict(Counter(result.kinds)),
            "n_oracle_calls": problem.n_oracle_calls, "stopped": result.stopped, "elapsed_s": result.elapsed_s,
            "best_at": best_at}


# -- job: the long search on the truth model -----------------------------------------------------------


def _best_of(evaluations):
    return max(evaluations, key=lambda e: e.performance)


def long_search(problem, n_random: int, n_climb: int, seed: int = LONG_SEED) -> dict:
    """``n_random`` random pairs, then rounds of one- and two-gene mutations of the top pairs (a fifth moved
    to a random device) and the top architectures on every device, until ``n_climb`` more evaluations."""
    rng = np.random.default_rng(seed)
    problem.evaluate(*problem.random_pairs(n_random, rng))
    spent, rounds, idle = 0, 0, 0
    while spent < n_climb and idle < 5:
        X, d = _climb_candidates(problem, rng)
        X, d = X[: n_climb - spent], d[: n_climb - spent]
        idle = idle + 1 if len(X) == 0 else 0
        if len(X):
            problem.evaluate(X, d)
        spent, rounds = spent + len(X), rounds + 1
    evaluated = problem.evaluated()
    return {"best": _best_of(evaluated), "evaluations": len(evaluated), "rounds": rounds}


def _climb_candidates(problem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    parents = sorted(problem.evaluated(), key=lambda e: -e.performance)[:LONG_TOP]
    PX, Pd = np.array([e.embedding for e in parents]), np.array([e.device for e in parents])
    RX, Rd = np.repeat(PX, LONG_MUTANTS, axis=0), np.repeat(Pd, LONG_MUTANTS)
    changes = 1 + (rng.random(len(RX)) < 0.3)
    MX = np.vstack([problem.mutate(RX[changes == k], rng, k) for k in (1, 2)])
    Md = np.concatenate([Rd[changes == k] for k in (1, 2)])
    moved = rng.random(len(Md)) < 0.2
    Md = np.where(moved, rng.integers(0, problem.n_devices, len(Md)), Md)
    AX = np.repeat(PX, problem.n_devices, axis=0)
    Ad = np.tile(np.arange(problem.n_devices), len(PX))
    X, d = np.vstack([MX, AX]), np.concatenate([Md, Ad])
    _, first = np.unique(np.column_stack([X, d]), axis=0, return_index=True)
    X, d = X[np.sort(first)], d[np.sort(first)]
    fresh = ~problem.seen(X, d)
    return X[fresh], d[fresh]


def describe_optimum(found: dict, problem, truth, weights, normalise: str) -> dict:
    """The long search's best pair, its P re-scored from a one-architecture prediction (as the world answers)."""
    from flexibert import model_hash

    best = found["best"]
    spec, device = problem.spec(best.embedding), problem.devices[best.device]
    performance, means = single_performance(truth.base, spec, device, weights, problem.bounds, normalise)
    return {"performance": performance, "performance_batched": best.performance, "device": device,
            "hash": model_hash(spec), "layers": spec.num_layers, "model_dict": spec.to_model_dict(),
            "means": means, "evaluations": found["evaluations"], "rounds": found["rounds"]}


def fit_truth(job: dict):
    from boshcode import SurrogateOracle

    started = time.perf_counter()
    truth = CachedOracle(SurrogateOracle.from_files([resolve(p) for p in job["profiles"]], resolve(job["accuracy"]),
                                                    seed=TRUTH_SEED))
    return truth, time.perf_counter() - started


def run_long(job: dict) -> dict:
    from boshcode import Weights, make_problem

    truth, fit_s = fit_truth(job)
    weights = Weights(*job["weights"])
    optima = {}
    for normalise in job["normalisations"]:
        problem = make_problem(truth, weights, normalise=normalise)
        found = long_search(problem, job["n_random"], job["n_climb"])
        optima[normalise] = describe_optimum(found, problem, truth, weights, normalise)
    return {**job, "fit_s": fit_s, "bounds": truth.bounds.to_json(), "optima": optima}


# -- job: the own-surrogate setting --------------------------------------------------------------------


def split_halves(profiles: list[Path], accuracy: Path, seed: int, folder: Path) -> dict:
    """Each board's rows and the accuracy records (by architecture) in two seeded halves, written as files
    the loaders read (a board keeps its file name: the device is the file stem)."""
    rng = np.random.default_rng([seed, 7919])
    halves: dict = {"A": {"profiles": [], "rows": {}}, "B": {"profiles": [], "rows": {}}}
    for name in ("A", "B"):
        (folder / name).mkdir()
    for path in map(Path, profiles):
        rows = json.loads(path.read_text())
        keys = list(rows)
        order = rng.permutation(len(keys))
        for name, part in (("A", order[: len(keys) // 2]), ("B", order[len(keys) // 2:])):
            target = folder / name / path.name
            target.write_text(json.dumps({keys[i]: rows[keys[i]] for i in sorted(part)}))
            halves[name]["profiles"].append(str(target))
            halves[name]["rows"][path.stem] = len(part)
    records = json.loads(Path(accuracy).read_text())
    groups: dict[str, list] = {}
    for record in records:
        architecture = json.dumps(record.get("hparams", {}).get("model_hparam_overrides"), sort_keys=True)
        groups.setdefault(architecture, []).append(record)
    names = list(groups)
    order = rng.permutation(len(names))
    for name, part in (("A", order[: len(names) // 2]), ("B", order[len(names) // 2:])):
        target = folder / name / Path(accuracy).name
        target.write_text(json.dumps([r for i in sorted(part) for r in groups[names[i]]]))
        halves[name]["accuracy"] = str(target)
        halves[name]["architectures"] = len(part)
    return halves


def run_own(job: dict) -> dict:
    from boshcode import (
        BaselineSettings,
        Bounds,
        SearchSettings,
        SurrogateOracle,
        Weights,
        codesign,
        make_problem,
        run_baseline,
    )

    weights, seed, budget = Weights(*job["weights"]), job["seed"], job["budget"]
    with tempfile.TemporaryDirectory() as folder:
        halves = split_halves([resolve(p) for p in job["profiles"]], resolve(job["accuracy"]), seed, Path(folder))
        started = time.perf_counter()
        searched = SurrogateOracle.from_files(halves["A"]["profiles"], halves["A"]["accuracy"], seed=TRUTH_SEED)
        scorer = SurrogateOracle.from_files(halves["B"]["profiles"], halves["B"]["accuracy"], seed=TRUTH_SEED)
        fit_s = time.perf_counter() - started
    problem = make_problem(searched, weights, normalise=job["normalise"])
    result, _ = codesign(searched, weights, settings=SearchSettings(budget=budget, seed=seed),
                         normalise=job["normalise"], problem=problem)
    random_problem = make_problem(searched, weights, normalise=job["normalise"])
    random = run_baseline("random", random_problem, BaselineSettings(budget=budget, seed=seed))
    bounds = Bounds.from_json(job["truth_bounds"])
    scored = {name: score_recommendations(run.evaluations, p, scorer, weights, bounds, job)
              for name, run, p in (("boshcode", result, problem), ("random", random, random_problem))}
    return {**job, "fit_s": fit_s, "search_s": result.elapsed_s, "random_s": random.elapsed_s,
            "split": {name: {"rows": half["rows"], "architectures": half["architectures"]}
                      for name, half in halves.items()}, "scored": scored}


def score_recommendations(evaluations, problem, scorer, weights, bounds, job: dict) -> dict:
    """Per risk K: the recommended pair, P the searched surrogate believes (full-data bounds) and held-out P."""
    from boshcode import performance, recommend
    from flexibert import model_hash

    scored = {}
    for risk in job["risks"]:
        pick = recommend(evaluations, risk=risk)[0]
        spec, device = problem.spec(pick.embedding), problem.devices[pick.device]
        held_out, means = single_performance(scorer, spec, device, weights, bounds, job["normalise"])
        believed = {m: None if v is None else np.array([v]) for m, v in pick.means.items()}
        scored[f"{risk:g}"] = {
            "held_out": held_out, "believed": float(performance(believed, weights, bounds, job["normalise"])[0]),
            "believed_std": pick.performance_std, "device": device, "hash": model_hash(spec),
            "held_out_means": means}
    return scored


# -- job: the normalisation study ----------------------------------------------------------------------


def seven_boards(profiles: list[str], folder: Path) -> list[Path]:
    """The profiles and renamed copies of the first three (``cpu_rpi_b1_r1`` -> ``cpu_rpi2_b1_r1``)."""
    paths = []
    for path in map(resolve, profiles):
        paths.append(folder / path.name)
        shutil.copyfile(path, paths[-1])
    for path in map(resolve, profiles[:3]):
        match = re.match(r"^(.*?)(_b\d+_.*)$", path.stem)
        stem = f"{match.group(1)}2{match.group(2)}" if match else f"{path.stem}-copy"
        paths.append(folder / f"{stem}{path.suffix}")
        shutil.copyfile(path, paths[-1])
    return paths


def epsilon_weights(epsilon: float):
    from boshcode import Weights

    side = (0.5 - epsilon) / 2
    return Weights(0.5, side, side, epsilon)


def random_spread(oracle, weights, normalise: str, n: int) -> dict:
    from boshcode import make_problem

    problem = make_problem(oracle, weights, normalise=normalise)
    values = np.array([e.performance for e in problem.evaluate(*problem.random_pairs(n, np.random.default_rng(0)))])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "devices": len(problem.devices)}


def run_epsilon(job: dict) -> dict:
    from boshcode import SurrogateOracle, make_problem

    truth, fit_s = fit_truth(job)
    with tempfile.TemporaryDirectory() as folder:
        seven = CachedOracle(SurrogateOracle.from_files(seven_boards(job["profiles"], Path(folder)),
                                                        resolve(job["accuracy"]), seed=TRUTH_SEED))
    rows = []
    for normalise in job["normalisations"]:
        for epsilon in job["epsilons"]:
            weights = epsilon_weights(epsilon)
            problem = make_problem(truth, weights, normalise=normalise)
            found = long_search(problem, job["n_random"], job["n_climb"])
            rows.append({"normalise": normalise, "epsilon": epsilon, "weights": list(weights.as_dict().values()),
                         "optimum": describe_optimum(found, problem, truth, weights, normalise),
                         "spread_seven": random_spread(seven, weights, normalise, job["n_spread"]),
                         "spread_truth": random_spread(truth, weights, normalise, job["n_spread"])})
    return {**job, "fit_s": fit_s, "seven_devices": seven.devices, "rows": rows}


# -- the timing (main process) -------------------------------------------------------------------------


def run_timing(job: dict) -> dict:
    from boshcode import SearchSettings, SurrogateOracle, Weights, codesign

    weights = Weights(*job["weights"])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        oracle = SurrogateOracle.from_files(seven_boards(job["profiles"], Path(folder)), resolve(job["accuracy"]),
                                            seed=TRUTH_SEED)
        fit_s = time.perf_counter() - started
    runs, previous = [], []
    for seed in range(job["runs"]):
        for kept, settings, label in ((runs, SearchSettings(budget=job["budget"], seed=seed), "timing"),
                                      (previous, previous_settings(job["budget"], seed), "previous settings")):
            result, problem = codesign(oracle, weights, settings=settings, normalise=job["normalise"])
            kept.append({"seed": seed, "elapsed_s": result.elapsed_s, "performance": result.best.performance,
                         "device": problem.devices[result.best.device], "evaluations": len(result.evaluations)})
            print(f"  {label} run {seed}: {result.elapsed_s:.1f} s", file=sys.stderr, flush=True)
    return {**job, "devices": oracle.devices, "fit_s": fit_s, "runs": runs, "previous_runs": previous,
            "median_elapsed_s": float(np.median([r["elapsed_s"] for r in runs])),
            "previous_median_elapsed_s": float(np.median([r["elapsed_s"] for r in previous])), "machine": machine()}


def previous_settings(budget: int, seed: int):
    """The search's earlier defaults (the embedding as inputs, two queries per refit, longer refits, 8 GOBI
    starts of 25 steps), to compare time and the best P found (the oracle is exact here, so the best P is
    what was found)."""
    from boshcode import GobiSettings, SearchSettings, TrainSettings

    train = TrainSettings(min_steps=50, max_steps=200, first_min_steps=200, first_max_steps=600, patience=10,
                          batch_size=64)
    return SearchSettings(budget=budget, seed=seed, n_starts=8, gobi=GobiSettings(max_steps=25), train=train,
                          inputs="embedding", queries_per_iteration=2)


# -- jobs: planning, running, caching ------------------------------------------------------------------


RUNNERS = {"search": run_search, "long": run_long, "own": run_own, "epsilon": run_epsilon, "timing": run_timing}


def run_job(job: dict) -> dict:
    started = time.perf_counter()
    result = RUNNERS[job["kind"]](job)
    return {**result, "job_wall_s": time.perf_counter() - started, "machine_at_end": machine()}


def job_file(jobs: Path, job: dict) -> Path:
    if job["kind"] == "search":
        return jobs / f"{job['method']}_{job['normalise']}_{job['seed']}.json"
    if job["kind"] == "long":
        return jobs / f"long_{job['normalisations'][0]}.json"
    if job["kind"] == "own":
        return jobs / f"own_{job['seed']}.json"
    return jobs / f"{job['kind']}.json"


#: Keys of a job that change its result (a cached job with other values is computed again).
IDENTITY = {"search": ("method", "normalise", "seed", "config"), "long": ("n_random", "n_climb", "config"),
            "own": ("seed", "budget", "risks", "normalise", "config"),
            "epsilon": ("n_random", "n_climb", "n_spread", "epsilons", "normalisations", "config"),
            "timing": ("budget", "runs", "normalise", "config")}


def cached(path: Path, job: dict) -> bool:
    if not path.exists():
        return False
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    same = all(done.get(key) == job.get(key) for key in IDENTITY[job["kind"]])
    return same and (job["kind"] != "search" or len(done.get("history", [])) >= job["budget"])


def plan(args, config: dict, methods: list[str], normalisations: list[str], parts: set[str]) -> list[dict]:
    base = {"config": config, "weights": config["weights"], "profiles": config["profiles"],
            "accuracy": config["accuracy"]}
    jobs: list[dict] = []
    top = max(args.budgets)
    if "oracle" in parts:
        for normalise in normalisations:
            for method in methods:
                budget = max(top, args.random_reference) if method == "random" else top
                jobs += [{**base, "kind": "search", "method": method, "normalise": normalise, "seed": seed,
                          "budget": budget, "report_budgets": sorted(args.budgets)} for seed in range(args.seeds)]
            if "random" not in methods:
                jobs += [{**base, "kind": "search", "method": "random", "normalise": normalise, "seed": seed,
                          "budget": args.random_reference, "report_budgets": sorted(args.budgets)}
                         for seed in range(args.seeds)]
            jobs.append({**base, "kind": "long", "normalisations": [normalise], "n_random": args.long_random,
                         "n_climb": args.long_climb})
    if "own" in parts:
        jobs += [{**base, "kind": "own", "seed": seed, "budget": args.own_budget, "risks": list(RISKS),
                  "normalise": "log"} for seed in range(args.own_seeds)]
    if "epsilon" in parts:
        jobs.append({**base, "kind": "epsilon", "n_random": args.long_random, "n_climb": args.long_climb,
                     "n_spread": args.epsilon_random, "epsilons": list(EPSILONS),
                     "normalisations": list(normalisations)})
    if "timing" in parts:
        jobs.append({**base, "kind": "timing", "budget": args.timing_budget, "runs": args.timing_runs,
                     "normalise": "log"})
    return jobs


def cost(job: dict) -> float:
    """Rough seconds, to start the longest jobs first and to estimate what is left."""
    if job["kind"] == "search":
        return 3.0 + job["budget"] * (COST_PER_EVAL.get(job["method"], DEFAULT_COST_PER_EVAL) + 0.012)
    if job["kind"] in ("long", "epsilon"):
        n = len(job.get("epsilons", [0])) * len(job["normalisations"])
        return 30.0 + n * (job["n_random"] + job["n_climb"]) * 0.0015
    runs = job.get("runs", 1)  # timing: several searches; own: one search (and a random one) after two fits
    return (15.0 if job["kind"] == "timing" else 40.0) + runs * job["budget"] * COST_PER_EVAL["boshcode"]


def describe_done(job: dict, result: dict) -> str:
    if job["kind"] == "search":
        return (f"{job['method']} {job['normalise']} seed {job['seed']}: best P {max(result['history']):.4f} "
                f"after {len(result['history'])} evaluations")
    if job["kind"] == "long":
        optimum = result["optima"][job["normalisations"][0]]
        return f"long search {job['normalisations'][0]}: P {optimum['performance']:.4f} on {optimum['device']}"
    if job["kind"] == "own":
        one = result["scored"]
        return (f"own seed {job['seed']}: held-out P at K=1 boshcode {one['boshcode']['1']['held_out']:.4f}, "
                f"random {one['random']['1']['held_out']:.4f}")
    if job["kind"] == "timing":
        return f"timing: median {result['median_elapsed_s']:.1f} s, fit {result['fit_s']:.1f} s"
    return f"epsilon study: {len(result['rows'])} settings"


class Progress:
    def __init__(self, jobs: list[dict]) -> None:
        self.total = sum(map(cost, jobs))
        self.n, self.done_cost, self.done = len(jobs), 0.0, 0
        self.started = time.perf_counter()

    def report(self, job: dict, line: str, wall_s: float) -> None:
        self.done += 1
        self.done_cost += cost(job)
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (self.total - self.done_cost) / max(self.done_cost, 1e-9)
        print(f"[{self.done}/{self.n}] {line} ({wall_s:.0f} s); elapsed {elapsed:.0f} s, ETA {eta:.0f} s",
              file=sys.stderr, flush=True)


def _watch_parent(parent: int) -> None:
    """In a worker: exit as soon as the driver is gone (a killed driver's pool would otherwise linger)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def run_pool(jobs: list[dict], folder: Path, workers: int, progress: Progress) -> int:
    """Run the jobs in spawned workers, longest first; each result is cached as it comes. Returns failures."""
    failures = 0
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_watch_parent, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(run_job, job): job for job in sorted(jobs, key=lambda j: -cost(j))}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # one failed job must not lose the others
                    failures += 1
                    print(f"FAILED {job_file(folder, job).name}: {type(error).__name__}: {error}",
                          file=sys.stderr, flush=True)
                    continue
                write_json(job_file(folder, job), result)
                progress.report(job, describe_done(job, result), result["job_wall_s"])
    except BaseException:  # interrupted: drop the queue and stop the workers (their jobs are not cached)
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
        raise
    pool.shutdown()
    return failures


def needs_server(jobs: list[dict]) -> bool:
    return any(job["kind"] in ("search", "own") for job in jobs)


def execute(jobs: list[dict], folder: Path, args, config: dict) -> tuple[int, dict | None]:
    """Run what is missing: the pool's jobs with the truth server up, then the timing in this process."""
    pooled = [job for job in jobs if job["kind"] != "timing"]
    progress = Progress(jobs)
    failures, header = 0, None
    if pooled:
        server = TruthServer([resolve(p) for p in config["profiles"]], resolve(config["accuracy"])) \
            if needs_server(pooled) else None
        try:
            if server is not None:
                header = {key: server.header[key] for key in ("devices", "bounds", "fit_s")}
                print(f"truth server up in {header['fit_s']:.1f} s on {header['devices']}", file=sys.stderr,
                      flush=True)
                for job in pooled:
                    if job["kind"] == "search":
                        job["command"] = server.command
                    if job["kind"] == "own":
                        job["truth_bounds"] = header["bounds"]
            failures = run_pool(pooled, folder, args.workers, progress)
        finally:
            if server is not None:
                server.close()
    for job in jobs:
        if job["kind"] == "timing":
            result = run_job(job)
            write_json(job_file(folder, job), result)
            progress.report(job, describe_done(job, result), result["job_wall_s"])
    return failures, header


def missing(jobs: list[dict], folder: Path, redo: bool) -> list[dict]:
    return [job for job in jobs if redo or not cached(job_file(folder, job), job)]


# -- summaries -----------------------------------------------------------------------------------------


def load_cache(folder: Path, config: dict) -> dict:
    found: dict = {"search": [], "long": {}, "long_jobs": [], "own": [], "epsilon": None, "timing": None,
                   "ignored": []}
    for path in sorted(folder.glob("*.json")):
        done = json.loads(path.read_text())
        if done.get("config") != config:
            found["ignored"].append(path.name)
        elif done["kind"] == "search":
            found["search"].append(done)
        elif done["kind"] == "long":
            found["long"].update(done["optima"])
            found["long_jobs"].append(done)
            found["truth_bounds"] = done["bounds"]
        elif done["kind"] == "own":
            found["own"].append(done)
        else:
            found[done["kind"]] = done
    return found


def first_match(history: list[float], level: float) -> float:
    """The first evaluation count whose best-so-far reaches ``level`` (inf if none)."""
    reached = np.flatnonzero(np.maximum.accumulate(np.asarray(history)) >= level - 1e-12)
    return float(reached[0] + 1) if reached.size else math.inf


def median_with_inf(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def references(runs: list[dict], normalise: str, size: int) -> dict[int, float]:
    """Per seed, the best P of the first ``size`` evaluations of random search."""
    return {run["seed"]: max(run["history"][:size]) for run in runs
            if run["method"] == "random" and run["normalise"] == normalise and len(run["history"]) >= size}


def method_order(names) -> list[str]:
    from boshcode import BASELINES

    ours = [name for name, (method, _) in VARIANTS.items() if method == "boshcode"]
    order = ["boshcode", *ours, *BASELINES, *VARIANTS]
    return sorted(set(names), key=lambda name: order.index(name) if name in order else len(order))


def summarise_budget(runs: list[dict], budget: int, reference: dict, optimum: float | None) -> dict | None:
    """One method's row at one budget (only runs with at least ``budget`` evaluations; None if there are none)."""
    runs = [run for run in runs if len(run["history"]) >= budget]
    if not runs:
        return None
    best = [max(run["history"][:budget]) for run in runs]
    q25, q50, q75 = quartiles(best)
    matched = [first_match(run["history"][:budget], reference[run["seed"]]) for run in runs if run["seed"] in reference]
    row = {"seeds": len(runs), "median": q50, "q25": q25, "q75": q75,
           "median_wall_s": float(np.median([run["times_s"][budget - 1] for run in runs])),
           "median_oracle_s": float(np.median([run["oracle_s"][budget - 1] for run in runs])),
           "matched": sum(math.isfinite(m) for m in matched), "reference_seeds": len(matched),
           "median_evaluations_to_match": median_with_inf(matched) if matched else None}
    if optimum is not None:
        row["median_regret"] = float(np.median([optimum - p for p in best]))
        row["beat_long_search"] = sum(p > optimum + 1e-12 for p in best)
    return row


def summary_budgets(found: dict, asked: list[int]) -> list[int]:
    """The budgets asked for and those the cached runs were asked for, that some run reaches."""
    budgets = {*asked, *(b for run in found["search"] for b in run["report_budgets"])}
    longest = max((len(run["history"]) for run in found["search"]), default=0)
    return sorted(b for b in budgets if b <= longest)


def summarise_oracle(found: dict, budgets: list[int], reference_size: int) -> dict:
    summary: dict = {}
    for normalise in sorted({run["normalise"] for run in found["search"]} if budgets else ()):
        runs = [run for run in found["search"] if run["normalise"] == normalise]
        reference = references(runs, normalise, reference_size)
        optimum = found["long"].get(normalise, {}).get("performance")
        methods = method_order(run["method"] for run in runs)
        table = {}
        for budget in budgets:
            rows = {method: summarise_budget([r for r in runs if r["method"] == method], budget, reference, optimum)
                    for method in methods}
            table[str(budget)] = {method: row for method, row in rows.items() if row is not None}
        beaten = {method: row["beat_long_search"] for method, row in table[str(max(budgets))].items()
                  if row.get("beat_long_search")}
        levels = list(reference.values())
        summary[normalise] = {"reference_size": reference_size, "reference_seeds": sorted(reference),
                              "reference_median": float(np.median(levels)) if levels else None,
                              "long_search": found["long"].get(normalise), "budgets": table,
                              "beat_long_search": beaten}
    return summary


def summarise_own(own: list[dict]) -> dict | None:
    if not own:
        return None
    risks = [f"{risk:g}" for risk in own[0]["risks"]]
    rows = {}
    for risk in risks:
        ours = np.array([job["scored"]["boshcode"][risk]["held_out"] for job in own])
        theirs = np.array([job["scored"]["random"][risk]["held_out"] for job in own])
        rows[risk] = {"boshcode": quartiles(ours), "random": quartiles(theirs),
                      "share_at_least_median_random": float(np.mean(ours >= np.median(theirs))),
                      "boshcode_believed": float(np.median([j["scored"]["boshcode"][risk]["believed"] for j in own])),
                      "random_believed": float(np.median([j["scored"]["random"][risk]["believed"] for j in own]))}
    return {"seeds": sorted(job["seed"] for job in own), "budget": own[0]["budget"], "rows": rows,
            "median_search_s": float(np.median([job["search_s"] for job in own]))}


def compact_run(run: dict) -> dict:
    """What results.json keeps of a search: the P history and the times at each reported budget."""
    marks = sorted({*run["report_budgets"], len(run["history"])})
    return {"method": run["method"], "normalise": run["normalise"], "seed": run["seed"], "budget": run["budget"],
            "history": run["history"], "kinds": run["kinds"], "n_oracle_calls": run["n_oracle_calls"],
            "stopped": run["stopped"], "elapsed_s": run["elapsed_s"], "job_wall_s": run["job_wall_s"],
            "wall_s_at": {str(b): run["times_s"][b - 1] for b in marks if b <= len(run["times_s"])},
            "oracle_s_at": {str(b): run["oracle_s"][b - 1] for b in marks if b <= len(run["oracle_s"])},
            "best_at": run["best_at"], "command": run.get("command_line")}


# -- the plots -----------------------------------------------------------------------------------------


def plot_convergence(found: dict, summary: dict, normalise: str, budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in found["search"] if run["normalise"] == normalise and len(run["history"]) >= budget]
    methods = method_order(run["method"] for run in runs)
    colors = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(9, 5.4))
    x = np.arange(1, budget + 1)
    n_initial = min(r["kinds"].get("initial", 0) for r in runs)
    lowest = []
    for i, method in enumerate(methods):
        curves = np.array([np.maximum.accumulate(r["history"][:budget]) for r in runs if r["method"] == method])
        q25, q50, q75 = np.percentile(curves, [25, 50, 75], axis=0)
        color = colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
        ax.plot(x, q50, color=color, lw=2.4 if method == "boshcode" else 1.3, label=f"{method} ({len(curves)})",
                zorder=3 if method == "boshcode" else 2)
        ax.fill_between(x, q25, q75, color=color, alpha=0.12, lw=0)
        lowest.append(q25[max(n_initial, 1) - 1])
    level, optimum = summary[normalise]["reference_median"], summary[normalise]["long_search"]
    if level is not None:
        ax.axhline(level, color="black", ls="--", lw=1,
                   label=f"random search, {summary[normalise]['reference_size']} evaluations (median)")
    if optimum is not None:
        ax.axhline(optimum["performance"], color="grey", ls=":", lw=1, label="long search on the truth")
    ax.axvline(n_initial, color="grey", lw=0.8, ls=":")
    ax.text(n_initial, 0.02, " end of the shared initial sample", color="grey", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.set_ylim(min(lowest) - 0.002, None)
    ax.set_xlim(1, budget)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best P so far ({normalise} normalisation)")
    ax.set_title(f"Co-design on the truth world ({normalise}): median and inter-quartile range over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# -- the README ----------------------------------------------------------------------------------------


def fmt_match(row: dict, budget: int) -> str:
    value = row["median_evaluations_to_match"]
    if value is None:
        return "n/a"
    shown_value = f">{budget}" if not math.isfinite(value) else f"{value:.0f}"
    return f"{shown_value} ({row['matched']}/{row['reference_seeds']})"


def oracle_lines(report: dict) -> list[str]:
    lines = []
    for normalise, part in report["oracle"].items():
        optimum = part["long_search"]
        lines += [f"### {normalise} normalisation", ""]
        if optimum is not None:
            lines += [f"Long search on the truth: P {optimum['performance']:.4f} on {optimum['device']} "
                      f"({optimum['layers']} layers, hash {optimum['hash']}, {optimum['evaluations']} evaluations). "
                      f"Random search with {part['reference_size']} evaluations: median best P "
                      f"{_num(part['reference_median'])} over seeds {part['reference_seeds']}.", ""]
        for budget, table in part["budgets"].items():
            lines += [f"Budget {budget}:", "",
                      "| method | seeds | median P [IQR] | median regret | evaluations to match random-"
                      f"{part['reference_size']} (seeds matched) | median wall s (of which oracle) |",
                      "|---|---|---|---|---|---|"]
            for method, row in table.items():
                regret = f"{row['median_regret']:.4f}" if "median_regret" in row else "n/a"
                lines.append(f"| {method} | {row['seeds']} | {row['median']:.4f} [{row['q25']:.4f}, {row['q75']:.4f}]"
                             f" | {regret} | {fmt_match(row, int(budget))} | {row['median_wall_s']:.1f} "
                             f"({row['median_oracle_s']:.1f}) |")
            lines.append("")
        if part["beat_long_search"]:
            listed = ", ".join(f"{method} {count}" for method, count in part["beat_long_search"].items())
            lines += [f"Runs that found a higher P than the long search (negative regret): {listed}.", ""]
        lines += [f"![convergence, {normalise}](convergence_{normalise}.png)", ""]
    return lines


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def own_lines(own: dict | None) -> list[str]:
    if own is None:
        return []
    lines = ["## Own surrogate: recommendations scored on held-out data", "",
             f"Seeds {own['seeds']}; budget {own['budget']}, log normalisation; BOSHCODE's median search time "
             f"{own['median_search_s']:.0f} s. Each board's rows and the accuracy records (by architecture) are "
             "split in two seeded halves per seed: the searches see a surrogate fitted on half A, the recommended "
             "pair (`recommend(evaluations, risk=K)`: the highest P - K std of P) is scored by a surrogate fitted "
             "on half B, with the full-data bounds. 'Believed' is half A's P of the same pair (same bounds).", "",
             "| K | BOSHCODE held-out P, median [IQR] | random held-out P, median [IQR] | share of seeds BOSHCODE >= "
             "median random | BOSHCODE believed | random believed |", "|---|---|---|---|---|---|"]
    for risk, row in own["rows"].items():
        b, r = row["boshcode"], row["random"]
        lines.append(f"| {risk} | {b[1]:.4f} [{b[0]:.4f}, {b[2]:.4f}] | {r[1]:.4f} [{r[0]:.4f}, {r[2]:.4f}] | "
                     f"{row['share_at_least_median_random']:.0%} | {row['boshcode_believed']:.4f} | "
                     f"{row['random_believed']:.4f} |")
    return lines + [""]


def timing_lines(timing: dict | None) -> list[str]:
    if timing is None:
        return []
    runs = ", ".join(f"{run['elapsed_s']:.1f}" for run in timing["runs"])
    return ["## Timing: BOSHCODE over seven boards", "",
            f"The default search (budget {timing['budget']}, {timing['normalise']} normalisation) on our own "
            f"surrogate of {len(timing['devices'])} boards ({', '.join(timing['devices'])}; the last three are "
            f"renamed copies), in the driver's process: median **{timing['median_elapsed_s']:.1f} s** "
            f"(`SearchResult.elapsed_s` of seeds 0-{len(timing['runs']) - 1}: {runs} s); fitting the oracle took "
            f"{timing['fit_s']:.1f} s. CPU affinity {timing['machine']['affinity']}, load average "
            f"{', '.join(f'{v:.1f}' for v in timing['machine']['load_average'] or [])} at the end.", "",
            *previous_lines(timing)]


def previous_lines(timing: dict) -> list[str]:
    previous = timing.get("previous_runs")
    if not previous:
        return []
    rows = ["| settings | median s | best P per seed |", "|---|---|---|"]
    for label, runs in (("current defaults", timing["runs"]), ("previous defaults", previous)):
        found = ", ".join(f"{r['performance']:.4f}" for r in runs)
        rows.append(f"| {label} | {np.median([r['elapsed_s'] for r in runs]):.1f} | {found} |")
    return ["The same searches with earlier defaults (the embedding as the networks' inputs, two queries per "
            "refit, refits of 50-200 steps with patience 10, 8 GOBI starts of 25 steps); the oracle is exact here, "
            "so the best P is what each search found:", "",
            *rows, ""]


def epsilon_lines(study: dict | None) -> list[str]:
    if study is None:
        return []
    lines = ["## Normalisation study: does epsilon move the pick?", "",
             f"alpha 0.5, beta = gamma = (0.5 - epsilon) / 2. Optimum: the long search on the truth "
             f"({study['n_random']} random pairs + {study['n_climb']} hill-climbing evaluations). Spread: P of "
             f"{study['n_spread']} random pairs on the seven boards ({', '.join(study['seven_devices'])}) and on "
             "the four of the truth.", "",
             "| normalisation | epsilon | optimum device | layers | hash | latency s | energy J | accuracy | P | "
             "random P, 7 boards (mean ± std) | random P, 4 boards |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in study["rows"]:
        o, s7, s4 = row["optimum"], row["spread_seven"], row["spread_truth"]
        lines.append(f"| {row['normalise']} | {row['epsilon']:g} | {o['device']} | {o['layers']} | {o['hash'][:8]} | "
                     f"{o['means']['latency_s']:.4g} | {o['means']['energy_j']:.4g} | {o['means']['accuracy']:.2f} | "
                     f"{o['performance']:.4f} | {s7['mean']:.4f} ± {s7['std']:.4f} | "
                     f"{s4['mean']:.4f} ± {s4['std']:.4f} |")
    return lines + [""]


def write_readme(report: dict, path: Path) -> None:
    truth = report["truth"]
    lines = [
        "# Co-design on a ground-truth world: BOSHCODE and every baseline through the oracle protocol", "",
        "Generated by `python benchmarks/codesign_oracle.py` (commands of the cached jobs below; regenerated from "
        "`jobs/` by every run). The world: a ProTran surrogate fitted once on every public row "
        f"({', '.join(report['config']['profiles'])}; {report['config']['accuracy']}; seed {TRUTH_SEED}) whose "
        "predicted means are the true values, served by `benchmarks/truth_oracle.py`; every search runs in its own "
        "worker process and sees it only through the `--oracle-command` protocol (`CommandOracle`), with the "
        "same header, the same exact answers and, per seed, the same initial sample. Weights alpha, beta, gamma, "
        f"epsilon = {', '.join(f'{w:g}' for w in report['config']['weights'])}.", "",
        "Each run spends the largest budget once; the smaller budgets are read from its prefixes, since a "
        "method's next query does not depend on its budget (Optuna's fallback to random pairs after 20 trials "
        f"per budgeted evaluation is the exception; it struck in {report['optuna_fallbacks']} runs). The pair "
        "returned at budget B is the best P in the first B evaluations (exact values: lower bound = P). Regret: "
        "the long search's P minus the method's (negative: the method beat the long search). 'Evaluations to "
        "match': the first evaluation count at which the best-so-far reaches the best of random search with "
        "the reference budget, same seed (median over seeds; '>B' when most seeds never did within B). Wall time: "
        "to the B-th evaluation, the world's answers included (in brackets).", "",
        "Variants beside the methods users know: `boshcode-embedding` (BOSHCODE's networks read the embedding, "
        "the paper's inputs, instead of the default structure features), `boshcode-gobi` (GOBI from the pool's "
        "4 best points, off by default) and `gbrt-structure` (GBRT-BO reading the structure features BOSHCODE "
        "reads; every baseline reads the embedding).", "",
    ]
    if truth is not None:
        bounds = ", ".join(f"{name} [{pair[0]:.4g}, {pair[1]:.4g}]" for name, pair in truth["bounds"].items() if pair)
        lines += [f"Truth bounds (the header every searcher reads): {bounds}.", ""]
    lines += (["## Search on the truth world", ""] + oracle_lines(report)) if report["oracle"] else []
    lines += own_lines(report["own"]) + timing_lines(report["timing"]) + epsilon_lines(report["epsilon"])
    lines += ["## Runs", "", f"Jobs: {report['n_jobs']} cached, {report['compute_s'] / 3600:.2f} h of worker time. "
              f"Machine: {report['machine']['platform']}, Python {report['machine']['python']}, "
              f"{report['machine']['cpus']} CPUs, affinity {report['machine']['affinity']}. Versions: "
              + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".", "", "Commands:", "", "```"]
    lines += report["commands"] + ["```", ""]
    if report["ignored"]:
        lines += [f"Ignored (another world or weights): {', '.join(report['ignored'])}.", ""]
    path.write_text("\n".join(lines))


# -- main ----------------------------------------------------------------------------------------------


def build_report(folder: Path, config: dict, args, header: dict | None) -> tuple[dict, dict]:
    found = load_cache(folder / "jobs", config)
    budgets = summary_budgets(found, args.budgets)
    oracle = summarise_oracle(found, budgets, args.random_reference)
    bounds = (header or {}).get("bounds") or found.get("truth_bounds")
    if header and found.get("truth_bounds") and header["bounds"] != found["truth_bounds"]:
        print("WARNING: the server's bounds differ from the in-process truth's: not the same world", file=sys.stderr)
    every = found["search"] + found["long_jobs"] + found["own"] + [found[k] for k in ("epsilon", "timing") if found[k]]
    commands = sorted({job.get("command_line", "") for job in every} - {""})
    report = {
        "config": config, "settings": {"budgets": budgets, "random_reference": args.random_reference,
                                       "risks": list(RISKS), "epsilons": list(EPSILONS)},
        "truth": {"bounds": bounds, **({"devices": header["devices"], "fit_s": header["fit_s"]} if header else {})}
        if bounds else None,
        "oracle": oracle, "own": summarise_own(found["own"]), "timing": found["timing"], "epsilon": found["epsilon"],
        "optuna_fallbacks": sum(run["kinds"].get("random", 0) > 0 for run in found["search"]
                                if run["method"].startswith("optuna")),
        "n_jobs": len(every), "compute_s": sum(job.get("job_wall_s", 0.0) for job in every),
        "commands": commands, "ignored": found["ignored"], "machine": machine(), "versions": versions(),
        "runs": [compact_run(run) for run in found["search"]], "own_runs": found["own"],
    }
    return report, found


def write_outputs(folder: Path, config: dict, args, header: dict | None) -> dict:
    report, found = build_report(folder, config, args, header)
    write_json(folder / "results.json", report)
    for normalise, part in report["oracle"].items():
        reached = [int(budget) for budget, table in part["budgets"].items() if table]
        if reached:
            plot_convergence(found, report["oracle"], normalise, max(reached), folder / f"convergence_{normalise}.png")
    write_readme(report, folder / "README.md")
    return report


def parse_list(kind):
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def parse_args(argv):
    from boshcode import BASELINES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=parse_list(str), help=f"comma list of {','.join(PARTS)} (default: all)")
    parser.add_argument("--own", action="store_true", help="the own-surrogate part (with --parts: added)")
    parser.add_argument("--timing", action="store_true", help="the seven-board timing part (in this process)")
    parser.add_argument("--epsilon-study", action="store_true", help="the normalisation study")
    parser.add_argument("--methods", type=parse_list(str), default=["boshcode", *BASELINES, *VARIANTS],
                        help="comma list (default: boshcode, every baseline and the variants)")
    parser.add_argument("--seeds", type=int, default=N_SEEDS, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--budgets", type=parse_list(int), default=list(BUDGETS), help="default 50,100,200")
    parser.add_argument("--normalise", type=parse_list(str), default=list(NORMALISATIONS), help="default log,max")
    parser.add_argument("--random-reference", type=int, default=RANDOM_REFERENCE,
                        help="evaluations of the reference random search per seed (default 1000)")
    parser.add_argument("--weights", type=float, nargs=4, default=PAPER_WEIGHTS, metavar=("A", "B", "G", "E"))
    parser.add_argument("--long-random", type=int, default=20000,
                        help="random pairs of the long search (default 20000)")
    parser.add_argument("--long-climb", type=int, default=20000,
                        help="hill-climbing evaluations of the long search (default 20000)")
    parser.add_argument("--own-seeds", type=int, help="seeds of the own-surrogate part (default: --seeds)")
    parser.add_argument("--own-budget", type=int, default=100)
    parser.add_argument("--timing-budget", type=int, default=100)
    parser.add_argument("--timing-runs", type=int, default=3)
    parser.add_argument("--epsilon-random", type=int, default=2000, help="random pairs of the spread of P")
    parser.add_argument("--profile", action="append", type=Path, help="truth profiles (default: the public four)")
    parser.add_argument("--accuracy", type=Path, help="default datasets/accuracy/nasbench_bert_250.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redo", action="store_true", help="recompute the jobs asked for even if cached")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    methods = ("boshcode", *BASELINES, *VARIANTS)
    unknown = sorted({*args.methods} - set(methods)) + sorted(set(args.normalise) - set(NORMALISATIONS))
    chosen = {*(args.parts or []), *(["own"] if args.own else []), *(["timing"] if args.timing else []),
              *(["epsilon"] if args.epsilon_study else [])}
    unknown += sorted(chosen - set(PARTS))
    if unknown:
        parser.error(f"unknown {unknown}; methods: {', '.join(methods)}; parts: {', '.join(PARTS)}")
    args.parts = chosen or set(PARTS)
    args.own_seeds = args.seeds if args.own_seeds is None else args.own_seeds
    return args


def _terminated(*_) -> None:
    """SIGTERM: leave through the ``finally`` blocks, so the truth server and the workers are stopped."""
    print("terminated; finished jobs stay cached in jobs/", file=sys.stderr, flush=True)
    sys.exit(143)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    started = time.perf_counter()
    profiles = args.profile or default_profiles()
    accuracy = args.accuracy or REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"
    config = {"profiles": [shown(p) for p in profiles], "accuracy": shown(accuracy), "weights": list(args.weights),
              "truth_seed": TRUTH_SEED}
    folder = args.out
    (folder / "jobs").mkdir(parents=True, exist_ok=True)
    command_line = "python benchmarks/codesign_oracle.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    jobs = plan(args, config, args.methods, args.normalise, args.parts)
    for job in jobs:
        job["command_line"] = command_line
    todo = missing(jobs, folder / "jobs", args.redo)
    print(f"{len(jobs)} jobs, {len(todo)} to run ({len(jobs) - len(todo)} cached) with {args.workers} workers",
          file=sys.stderr, flush=True)
    failures, header = execute(todo, folder / "jobs", args, config) if todo else (0, None)
    report = write_outputs(folder, config, args, header)
    print(f"wrote {folder} in {time.perf_counter() - started:.0f} s ({report['n_jobs']} jobs cached"
          f"{f', {failures} FAILED' if failures else ''})", file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
