"""Where does a session's test-retest spread come from, architecture by architecture?

For each store of this machine with a retest run, this benchmark lists the retest's architectures
beside their profile-run rows as they stand in the store (corrected latency, raw latency, and each
fresh process's median where the row was measured with ``--processes``), worst pair first. It also
sums up, per store, how the processes agreed (the first two processes' disagreement |a - b| / min(a,
b), and how many rows took a third) and what the reference architecture read in each run. It reads
the stores only (no measurement, no random numbers); a second.

    python benchmarks/retest_pairs.py                          # every store under datasets/profiles/
    python benchmarks/retest_pairs.py --stores A.sqlite B.sqlite

Results: ``benchmarks/results/retest_pairs/`` (``results.json``, ``README.md``).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.drift_rules import parse_stores, shown  # noqa: E402
from benchmarks.results_io import utc_now, write_results  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "retest_pairs"


def _read(path: Path) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """A store's current rows by run purpose, then by architecture; and per run purpose how many
    reference readings there are, their range and median (ms)."""
    from protran import RunStore

    rows: dict[str, dict[str, dict]] = {}
    references: dict[str, dict] = {}
    with RunStore(path, readonly=True) as store:
        for run in store.runs():
            purpose = run.config.get("purpose", "profile")
            rows[purpose] = {row.arch_hash: {
                "latency_s": row.latency_s, "latency_raw_s": row.latency_raw_s,
                "process_latencies_s": [p["latency_s"] for p in row.conditions.get("processes") or []
                                        if p.get("latency_s") is not None]}
                for row in store.measurements(run_id=run.id, status=None) if row.latency_s is not None}
            readings = [ref.latency_s * 1e3 for ref in store.references(run.id) if ref.latency_s is not None]
            if readings:
                references[purpose] = {"n": len(readings), "min_ms": min(readings), "max_ms": max(readings),
                                       "median_ms": statistics.median(readings)}
    return rows, references


def _agreement(rows: dict[str, dict[str, dict]]) -> dict:
    """How a store's fresh processes agreed: the first two per row, and how many rows took a third."""
    measured = [row["process_latencies_s"] for by_arch in rows.values() for row in by_arch.values()
                if len(row["process_latencies_s"]) >= 2]
    gaps = [abs(p[0] - p[1]) / min(p[0], p[1]) for p in measured]
    return {"rows": len(measured), "rows_with_third": sum(len(p) > 2 for p in measured),
            "first_two_median": statistics.median(gaps) if gaps else None,
            "first_two_max": max(gaps) if gaps else None}


def evaluate(path: Path) -> dict:
    rows, references = _read(path)
    first, again = rows.get("profile", {}), rows.get("retest", {})
    pairs = []
    for arch in again.keys() & first.keys():
        a, b = first[arch], again[arch]
        raw = None if a["latency_raw_s"] is None or b["latency_raw_s"] is None else \
            (b["latency_raw_s"] - a["latency_raw_s"]) / a["latency_raw_s"]
        pairs.append({"arch_hash": arch, "first_ms": a["latency_s"] * 1e3, "retest_ms": b["latency_s"] * 1e3,
                      "spread": (b["latency_s"] - a["latency_s"]) / a["latency_s"], "raw_spread": raw,
                      "first_processes_ms": [x * 1e3 for x in a["process_latencies_s"]],
                      "retest_processes_ms": [x * 1e3 for x in b["process_latencies_s"]]})
    pairs.sort(key=lambda p: -abs(p["spread"]))
    sizes = [abs(p["spread"]) for p in pairs]
    return {"store": shown(path), "median": statistics.median(sizes) if sizes else None,
            "max": max(sizes) if sizes else None, "pairs": pairs, "processes": _agreement(rows),
            "references": references}


def _ms(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) or "–"


def readme(results: list[dict], meta: dict) -> str:
    lines = ["# Test-retest, architecture by architecture", "",
             f"`{meta['command']}` on {meta['date']}. For each store with a retest run: the retest's "
             "architectures against their profile-run rows as the store holds them, worst first "
             "(spread (l2 − l1) / l1 of the corrected latency, and of the raw one), with each fresh "
             "process's median; how the processes agreed; what the reference read per run.", ""]
    for result in results:
        agreement = result["processes"]
        lines += [f"## `{result['store']}`", "",
                  f"Spread median {result['median']:.1%}, max {result['max']:.1%} over {len(result['pairs'])} "
                  "architectures.", ""]
        if agreement["rows"]:
            lines += [f"Rows measured in fresh processes: {agreement['rows']}; first two processes apart by "
                      f"{agreement['first_two_median']:.1%} (median), {agreement['first_two_max']:.1%} (max); "
                      f"{agreement['rows_with_third']} rows took a third.", ""]
        lines += ["| run | reference readings | min (ms) | median (ms) | max (ms) |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {ref['n']} | {ref['min_ms']:.1f} | {ref['median_ms']:.1f} | {ref['max_ms']:.1f} |"
                  for name, ref in result["references"].items()]
        lines += ["", "| architecture | profile (ms) | retest (ms) | spread | raw spread | profile processes (ms) "
                  "| retest processes (ms) |", "|---|---|---|---|---|---|---|"]
        for p in result["pairs"]:
            raw = "–" if p["raw_spread"] is None else f"{p['raw_spread']:+.1%}"
            lines.append(f"| `{p['arch_hash'][:8]}` | {p['first_ms']:.2f} | {p['retest_ms']:.2f} | {p['spread']:+.1%} "
                         f"| {raw} | {_ms(p['first_processes_ms'])} | {_ms(p['retest_processes_ms'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    stores, out = parse_stores(__doc__.splitlines()[0], OUT, argv)
    results = [evaluate(path) for path in stores]
    meta = {"command": "python benchmarks/retest_pairs.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": utc_now(), "stores": [shown(path) for path in stores]}
    write_results(out, meta, results, readme(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
