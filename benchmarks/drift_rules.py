"""Which drift correction makes this machine's measurements repeat?

Each committed ONNX Runtime and OpenVINO store of this machine that has a retest run (the 16 seed
architectures measured again at least an hour after the profile run) keeps every row's raw latency
and every reference reading. This benchmark copies each store to a temporary file and recomputes
every run's corrections with ``protran.correct_run`` under each rule: none (``reference_every`` as if
0: the raw latencies), ``latest`` with the default 5 % threshold,
``latest`` with no threshold, ``bracket`` (the geometric mean of the readings just before and
after a row) with no threshold and with 5 %, and ``in-process`` at 0 (each row by the reading in its
own process; only a store measured with that rule has such readings, "–" elsewhere; in such a store
the other rules take each row's reading as one taken between rows). For each it reports the
test-retest spread, |l2 - l1| / l1 over the retest run's architectures against the profile run's,
median and max (the issue's goals: <= 2 % and <= 6 %), with how many times the reference was read in
the profile run.

Which rule each store was measured with is in ``datasets/profiles/README.md`` (a store does not
record it: a run may be resumed, or recorrected, under another); every column is what the same raw
readings give.
Deterministic (no random numbers); a few seconds.

    python benchmarks/drift_rules.py                          # every store under datasets/profiles/
    python benchmarks/drift_rules.py --stores A.sqlite B.sqlite

Results: ``benchmarks/results/drift_rules/`` (``results.json``, ``README.md``).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results_io import utc_now, write_results  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "drift_rules"
PROFILES = REPO / "datasets" / "profiles"
# (label, correction, threshold); "raw" applies no correction at all
RULES = (("raw", None, None), ("latest, 5 %", "latest", 0.05), ("latest, 0", "latest", 0.0),
         ("bracket, 5 %", "bracket", 0.05), ("bracket, 0", "bracket", 0.0), ("in-process, 0", "in-process", 0.0))


def default_stores() -> list[Path]:
    """The f32 stores with a retest run: the default ones, then the extra sessions."""
    candidates = sorted(PROFILES.glob("*.sqlite")) + sorted((PROFILES / "sessions").glob("*.sqlite"))
    return [path for path in candidates if "retest" in purposes(path)]


def purposes(path: Path) -> set[str]:
    from protran import RunStore

    with RunStore(path, readonly=True) as store:
        return {run.config.get("purpose", "profile") for run in store.runs()}


def spread(path: Path) -> dict:
    """Test-retest spread of a store as its rows now stand, and the reference count per run."""
    from protran import RunStore
    from protran.vocabulary import USABLE_STATUSES

    with RunStore(path, readonly=True) as store:
        runs = {run.config.get("purpose", "profile"): run.id for run in store.runs()}
        # one current row per architecture and run, so this also counts the profile run's rows
        first = {row.arch_hash: row.latency_s
                 for row in store.measurements(run_id=runs["profile"], status=USABLE_STATUSES)}
        pairs = [(first[row.arch_hash], row.latency_s)
                 for row in store.measurements(run_id=runs["retest"], status=USABLE_STATUSES) if row.arch_hash in first]
        references = len(store.references(runs["profile"]))
    values = [abs(l2 - l1) / l1 for l1, l2 in pairs]
    return {"n": len(values), "median": statistics.median(values), "max": max(values),
            "profile_rows": len(first), "profile_references": references}


def evaluate(path: Path, workdir: Path) -> list[dict]:
    from protran import RunStore, correct_run

    results = []
    for label, correction, threshold in RULES:
        copy = workdir / f"{path.stem}-{len(results)}.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        if correction in (None, "in-process"):
            with sqlite3.connect(copy) as conn:
                conn.execute("UPDATE measurements SET latency_s = latency_raw_s WHERE latency_raw_s IS NOT NULL")
        corrected = 0
        if correction is not None:
            with RunStore(copy) as store:
                for run in store.runs():
                    corrected += correct_run(store, run.id, threshold, correction)["rows"]
        if correction == "in-process" and not corrected:  # no row read the reference in its process
            results.append({"store": shown(path), "rule": label, "n": 0, "median": None, "max": None})
            continue
        results.append({"store": shown(path), "rule": label, **spread(copy)})
    return results


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def readme(results: list[dict], meta: dict) -> str:
    lines = ["# Drift corrections against test-retest", "",
             f"`{meta['command']}` on {meta['date']}. Test-retest spread |l2 − l1| / l1 of the retest run's "
             "architectures against the profile run's, after recomputing every run's corrections from the "
             "stored raw latencies and reference readings (`protran.correct_run`); the rule each store was "
             "measured with is in `datasets/profiles/README.md`. Goals: median ≤ 2 %, max ≤ 6 %.", "",
             "| store | profile run: rows, reference readings | " + " | ".join(label for label, _, _ in RULES) + " |",
             "|---|---|" + "---|" * len(RULES)]
    for store in dict.fromkeys(r["store"] for r in results):
        chosen = {r["rule"]: r for r in results if r["store"] == store}
        first = next(iter(chosen.values()))
        lines.append(f"| `{store}` | {first['profile_rows']}, {first['profile_references']} | " + " | ".join(
            f"{chosen[label]['median']:.1%} / {chosen[label]['max']:.1%}" if chosen[label]["median"] is not None
            else "–" for label, _, _ in RULES) + " |")
    lines += ["", "Each cell: median / max over the retest's architectures; –: the store has no reading in a "
              "row's own process.", ""]
    return "\n".join(lines)


def parse_stores(description: str, out: Path, argv: list[str] | None) -> tuple[list[Path], Path]:
    """``--stores`` (default: this machine's stores with a retest run) and ``--out``; shared with the
    other benchmarks that read retest runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stores", nargs="+", type=Path, default=None,
                        help="run stores with a profile and a retest run (default: this machine's)")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    stores = [path.resolve() for path in args.stores] if args.stores else default_stores()
    if not stores:
        raise SystemExit("no run store with a retest run: give --stores")
    return stores, args.out


def main(argv: list[str] | None = None) -> int:
    stores, out = parse_stores(__doc__.splitlines()[0], OUT, argv)
    with tempfile.TemporaryDirectory(prefix="drift-rules-") as workdir:
        results = [row for path in stores for row in evaluate(path, Path(workdir))]
    meta = {"command": "python benchmarks/drift_rules.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": utc_now(), "stores": [shown(path) for path in stores]}
    write_results(out, meta, results, readme(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
