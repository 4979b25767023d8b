"""How much does one architecture's latency move from one measuring process to the next?

Every row of a profile is measured in a fresh worker process (``protran.measure_architecture``), and
its confidence interval says how well that one window pinned the median: about 1-2 % on this
project's machine. A retest an hour later compares two such processes. This benchmark measures a
few architectures again and again, each time in a new process, one after another in turn (so a
change of the host's speed shows in all of them alike), and reports for each the median
within-window interval beside the spread across processes, (max - min) / median. Where the second is
several times the first, a row's interval understates its error, and neither drift correction nor a
tighter interval target can reach it: the process itself (where its memory lands, how its code is
laid out in the cache) is part of the measurement.

The architectures: the profile's reference architecture (``protran.reference_spec``), and from a
store's retest run (``--store``) the smallest and the median-latency architecture. Each of the other
two is also reported over the round's reading of the reference (measured in a process of its own just
before it): what a drift correction by a reference measured apart can cancel. With ``--in-process``
each round measures the two once more, each with the reference timed right after it in the same
process (``measure_architecture(..., reference=...)``, the profiler's ``in-process`` drift rule), and
reports their latency over that reading too. Under the
profile's conditions: one thread pinned to ``--cpus`` (default CPU 1), and with ``--load`` the
synthetic load of ``benchmarks/synthetic_load.py`` on CPU 0. No random numbers are drawn; a few
minutes.

    python benchmarks/process_spread.py --load --rounds 5 --store datasets/profiles/sessions/STORE.sqlite
    python benchmarks/process_spread.py --load --in-process --rounds 10 --store ... --out process_spread_in_process

Results: ``benchmarks/results/process_spread/`` (``results.json``, ``README.md``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results_io import utc_now, write_results  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "process_spread"


def chosen(store_path: Path) -> dict[str, Any]:
    """``{label: ArchSpec or model_dict}``: the reference architecture, then the retest run's smallest and
    median-latency architectures."""
    from flexibert import DesignSpace
    from protran import RunStore, reference_spec
    from protran.vocabulary import USABLE_STATUSES

    with RunStore(store_path, readonly=True) as store:
        retest = next((run.id for run in store.runs() if run.config.get("purpose") == "retest"), None)
        if retest is None:
            raise SystemExit(f"{store_path}: no retest run; measure one with `protran measure --purpose retest` "
                             "or choose a store that has one")
        rows = sorted(store.measurements(run_id=retest, status=USABLE_STATUSES), key=lambda row: row.latency_s)
    smallest, median = rows[0], rows[len(rows) // 2]
    return {"reference": reference_spec(DesignSpace.default()),
            f"smallest {smallest.arch_hash[:8]}": smallest.model_dict,
            f"median {median.arch_hash[:8]}": median.model_dict}


def summarise(readings: dict[str, list[tuple[float, float, float | None]]]) -> list[dict]:
    """Per architecture, from its ``(latency_s, ci_rel, ratio)`` readings: the median latency, the median
    within-window interval and the spread across processes, (max - min) / median, of the latencies and,
    where every reading has one, of their ratios to the reference."""
    rows = []
    for label, values in readings.items():
        latencies = [latency for latency, _, _ in values]
        ratios = [ratio for _, _, ratio in values]
        middle = statistics.median(latencies)
        row = {"arch": label, "processes": len(values), "median_ms": middle * 1e3,
               "ci_rel_median": statistics.median(ci for _, ci, _ in values),
               "spread": (max(latencies) - min(latencies)) / middle,
               "latencies_ms": [latency * 1e3 for latency in latencies]}
        if ratios and all(ratios):
            numbers = [float(ratio or 0.0) for ratio in ratios]
            row.update(ratio_spread=(max(numbers) - min(numbers)) / statistics.median(numbers), ratios=numbers)
        rows.append(row)
    return rows


def readme(rows: list[dict], meta: dict) -> str:
    lines = ["# Latency from one measuring process to the next", "",
             f"`{meta['command']}` on {meta['date']} ({meta['wall_s']:.0f} s; {meta['platform']}). Each "
             f"architecture measured {meta['rounds']} times, each time in a new worker process, in turn; "
             f"one thread pinned to CPU {meta['cpus']}; synthetic load: {meta['load']}.", "",
             "| architecture | processes | median (ms) | within-window CI, median | spread across processes | "
             "spread of latency / reference | readings (ms) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        readings = ", ".join(f"{value:.1f}" for value in row["latencies_ms"])
        ratio = f"{row['ratio_spread']:.1%}" if "ratio_spread" in row else "–"
        lines.append(f"| `{row['arch']}` | {row['processes']} | {row['median_ms']:.1f} | "
                     f"{row['ci_rel_median']:.1%} | {row['spread']:.1%} | {ratio} | {readings} |")
    lines += ["", "CI: relative half-width of the 95 % interval of the window's median. Spread: (max − min) / "
              "median over the processes. Latency / reference: each process's latency over the reference "
              "read in the round's own reference process just before it, or, for the rows marked "
              "`reference in the process`, over the reference timed right after it in the same process."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="a store with a retest run")
    parser.add_argument("--rounds", type=int, default=5, help="processes per architecture (default 5)")
    parser.add_argument("--cpus", default="1", help="CPUs to pin the worker to (default 1, as profiled)")
    parser.add_argument("--load", action="store_true", help="run the synthetic load on CPU 0 meanwhile")
    parser.add_argument("--in-process", action="store_true",
                        help="measure the two architectures once more per round with the reference timed in the "
                             "same process")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import protran
    from flexibert.clitools import cpu_list

    specs = chosen(args.store)
    reference = specs["reference"]
    plan = [(label, spec, False) for label, spec in specs.items()]
    if args.in_process:
        plan += [(f"{label}, reference in the process", spec, True) for label, spec in specs.items()
                 if label != "reference"]
    load = (subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "synthetic_load.py"), "--cpus", "0"])
            if args.load else None)
    started = time.perf_counter()
    readings: dict[str, list[tuple[float, float, float | None]]] = {label: [] for label, _, _ in plan}
    try:
        for round_ in range(args.rounds):
            apart = None  # this round's reading of the reference in a process of its own
            for label, spec, beside in plan:
                result = protran.measure_architecture(spec, cpus=list(cpu_list(args.cpus)), time_cap_s=30.0,
                                                      **({"reference": reference} if beside else {}))
                if label == "reference":
                    apart = result.latency_s
                reading = protran.reference_latency(result) if beside else apart
                if result.latency_s is not None:
                    ratio = result.latency_s / reading if reading and label != "reference" else None
                    readings[label].append((result.latency_s, float(result.latency_ci_rel or 0.0), ratio))
                print(f"round {round_ + 1}/{args.rounds} {label}: {result.status}, "
                      f"{(result.latency_s or 0.0) * 1e3:.2f} ms", flush=True)
    finally:
        if load is not None:
            load.terminate()
    rows = summarise(readings)
    store = args.store.resolve()
    shown = store.relative_to(REPO) if store.is_relative_to(REPO) else store.name
    meta = {"command": f"python benchmarks/process_spread.py --store {shown} --rounds {args.rounds}"
                       + (" --load" if args.load else "") + (" --in-process" if args.in_process else "")
                       + ("" if args.out == OUT else f" --out {args.out.name}"),
            "date": utc_now(), "rounds": args.rounds,
            "cpus": args.cpus, "load": "CPU 0" if args.load else "none",
            "wall_s": time.perf_counter() - started, "platform": f"{platform.platform()}, {platform.machine()}"}
    write_results(args.out, meta, rows, readme(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
