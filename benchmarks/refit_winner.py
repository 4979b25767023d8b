"""Does the latency model follow a measurement of the winner once it has one?

A co-design loop that measures its winner (``serve_winner.py --verify-rounds``) helps only if the
refitted latency model takes that measurement in. This benchmark takes the co-design winners served
by earlier ``serve_winner.py`` sittings (their ``results.json``: the architecture and its served p50),
and for each latency surrogate (``additive``, the default, a robust cost model; ``additive-gp``, a
plain cost fit plus a Gaussian process on its residuals) fits the profile run's rows of the sitting's
store twice: alone, and with the winner's served p50 as one more row (as a verify round would add
it). It reports the winner's prediction error both ways, and each fit's share of the store's
held-out architectures predicted within ±10 % (so that following the winner is not bought with the
rest of the space). Fits are seeded; no measurement is taken. Seconds.

    python benchmarks/refit_winner.py --seed 0

Results: ``benchmarks/results/refit_winner/`` (``results.json``, ``README.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results_io import utc_now, write_results  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "refit_winner"
SITTINGS = ("serve_winner_bracket_live", "serve_winner_bracket_live_2")
SURROGATES = ("additive", "additive-gp")
WITHIN = 0.10


def sitting_inputs(results_path: Path) -> tuple[Path, dict]:
    """(the sitting's profile store, its co-design winner's result row)."""
    sitting = json.loads(results_path.read_text())
    winners = [row for row in sitting["results"] if row["source"].startswith("co-design winner")]
    if not winners:
        raise SystemExit(f"{results_path}: no co-design winner was served in this sitting")
    return REPO / sitting["meta"]["conditions"]["profile"], winners[0]


def refit(store: Path, winner: dict, surrogate: str, seed: int) -> dict:
    """The winner's prediction error and the held-out share within ±10 %, without and with the
    winner's served p50 among the rows."""
    from flexibert import ArchSpec
    from protran import ProfileRow, RunStore, fit_models, load_profiles

    profile, = load_profiles([store])
    with RunStore(store, readonly=True) as runs:
        purpose = {run.id: run.config.get("purpose", "profile") for run in runs.runs()}
        hashes = {p: {row.arch_hash for row in runs.measurements(run_id=run_id)} for run_id, p in purpose.items()}
    train = tuple(row for row in profile.rows if row.arch_hash in hashes["profile"])
    holdout = [row for row in profile.rows if row.arch_hash in hashes["holdout"] - hashes["profile"]]
    spec = ArchSpec.from_model_dict(winner["model_dict"])
    served_s = winner["served_latency_s"]["p50"]
    measured = ProfileRow(spec=spec, arch_hash=winner["hash"], latency_s=served_s, energy_j=None,
                          peak_power_w=None, device=profile.device)
    out = {}
    for label, rows in (("without", train), ("with", (*train, measured))):
        models = fit_models([replace(profile, rows=rows)], None, seed=seed, surrogate=surrogate)
        predicted = [p["predicted"]["latency_s"]["mean"] for p in models.predict([spec, *(r.spec for r in holdout)],
                                                                                  profile.device)]
        truth = np.array([r.latency_s for r in holdout])
        out[label] = {"winner_predicted_s": predicted[0], "winner_error": predicted[0] / served_s - 1.0,
                      "holdout_within_10pct": float(np.mean(np.abs(np.array(predicted[1:]) / truth - 1) <= WITHIN))}
    return out


def readme(results: list[dict], meta: dict) -> str:
    lines = ["# Refitting on the winner's measurement", "",
             f"`{meta['command']}` on {meta['date']} ({meta['wall_s']:.0f} s). For each sitting's co-design "
             "winner, the latency surrogate fitted on the sitting's profile-run rows, without and with the "
             "winner's served p50 as one more row. error = predicted / served − 1; held-out: share of the "
             "store's held-out architectures within ±10 %.", "",
             "| sitting | winner | served p50 (ms) | surrogate | error without | error with | held-out without | "
             "held-out with |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['sitting']} | `{r['hash'][:8]}` | {r['served_p50_s'] * 1e3:.1f} | `{r['surrogate']}` "
                     f"| {r['without']['winner_error']:+.1%} | {r['with']['winner_error']:+.1%} "
                     f"| {r['without']['holdout_within_10pct']:.2f} | {r['with']['holdout_within_10pct']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the fits (default 0)")
    parser.add_argument("--sittings", nargs="+", default=list(SITTINGS),
                        help="serve_winner results folders under benchmarks/results (default: the fourth "
                             "session's two sittings)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = []
    for sitting in args.sittings:
        path = REPO / "benchmarks" / "results" / sitting / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such results; run benchmarks/serve_winner.py --out for it first")
        store, winner = sitting_inputs(path)
        for surrogate in SURROGATES:
            results.append({"sitting": sitting, "hash": winner["hash"], "surrogate": surrogate,
                            "served_p50_s": winner["served_latency_s"]["p50"], **refit(store, winner, surrogate,
                                                                                     args.seed)})
    meta = {"command": "python benchmarks/refit_winner.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": utc_now(), "wall_s": time.perf_counter() - started, "seed": args.seed}
    write_results(args.out, meta, results, readme(results, meta), indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
