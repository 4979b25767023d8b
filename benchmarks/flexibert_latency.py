"""Export time and inference latency of BERT-Tiny- and BERT-Base-shaped encoders per runtime.

For each model: time the export to every format, then prepare each runtime (torch eager,
onnxruntime, openvino f32), warm it up and time single inferences (batch 1, sequence 128, one
thread). Writes ``results.csv`` and ``results.json`` under ``benchmarks/results/flexibert_latency/``
and prints a markdown table.

    python benchmarks/flexibert_latency.py --seed 0

Latency is a median with its interquartile range; a run whose IQR exceeds 25% of its median is
flagged ``unstable`` (on a shared machine, rerun it when the machine is quiet).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "flexibert_latency"
UNSTABLE_IQR_FRACTION = 0.25
MODELS = {
    # name: (model_dict, warm-up runs, timed runs)
    "bert-tiny": ({"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128] * 2, "f": [[512]] * 2}, 10, 50),
    "bert-base": ({"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12}, 5, 30),
}
RUNTIME_FORMATS = {"torch": "-", "onnxruntime": "onnx", "openvino": "openvino"}


def time_runs(session, warmup: int, repeats: int) -> np.ndarray:
    for _ in range(warmup):
        session.run()
    latencies_s = np.empty(repeats)
    for index in range(repeats):
        start = time.perf_counter()
        session.run()
        latencies_s[index] = time.perf_counter() - start
    return latencies_s


def summarise(latencies_s: np.ndarray) -> dict:
    q25, median, q75 = np.percentile(latencies_s, [25, 50, 75])
    return {
        "latency_median_s": float(median),
        "latency_q25_s": float(q25),
        "latency_q75_s": float(q75),
        "latency_iqr_s": float(q75 - q25),
        "latency_min_s": float(latencies_s.min()),
        "unstable": bool(q75 - q25 > UNSTABLE_IQR_FRACTION * median),
    }


def benchmark_model(name, model_dict, warmup, repeats, args, workdir: Path) -> tuple[list[dict], dict]:
    import torch

    from flexibert import build_model, export_torchscript
    from protran import get_runtime

    model = build_model(model_dict, seed=args.seed)
    export_s = {}
    start = time.perf_counter()
    export_torchscript(model, workdir / f"{name}.pt", args.batch_size, args.seq_len)
    export_s["torchscript"] = time.perf_counter() - start
    rows = []
    outputs = {}
    for runtime_name in args.runtimes:
        runtime = get_runtime(runtime_name)
        session_dir = workdir / f"{name}-{runtime_name}"
        with runtime.prepare(
            model, args.batch_size, args.seq_len, num_threads=args.threads, workdir=session_dir, input_seed=args.seed
        ) as session:
            if RUNTIME_FORMATS[runtime_name] != "-":
                export_s[RUNTIME_FORMATS[runtime_name]] = session.export_s
            latencies_s = time_runs(session, warmup, repeats)
            outputs[runtime_name] = session.run()
            rows.append({
                "model": name,
                "runtime": runtime_name,
                "format": RUNTIME_FORMATS[runtime_name],
                "batch_size": args.batch_size,
                "seq_len": args.seq_len,
                "num_threads": args.threads,
                "export_s": session.export_s if runtime_name != "torch" else None,
                "prepare_s": session.prepare_s,
                "warmup": warmup,
                "repeats": repeats,
                **summarise(latencies_s),
                "graph_node_count": session.graph_node_count,
                "thread_settings": session.thread_settings,
            })
        gc.collect()
        torch.set_num_threads(args.threads)  # keep torch's own pool at the same size throughout
    reference = outputs.get("torch")
    for row in rows:
        if reference is not None:
            row["max_abs_diff_vs_torch"] = float(np.abs(outputs[row["runtime"]] - reference).max())
    return rows, export_s


def markdown_table(rows: list[dict], export_s: dict[str, dict[str, float]]) -> str:
    lines = [
        "| model | runtime | export (s) | prepare (s) | median latency (ms) | IQR (ms) "
        "| graph nodes | max abs diff | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        export = "-" if row["export_s"] is None else f"{row['export_s']:.1f}"
        nodes = "-" if row["graph_node_count"] is None else str(row["graph_node_count"])
        lines.append(
            f"| {row['model']} | {row['runtime']} | {export} | {row['prepare_s']:.1f} | "
            f"{row['latency_median_s'] * 1e3:.2f} | {row['latency_iqr_s'] * 1e3:.2f} | {nodes} | "
            f"{row.get('max_abs_diff_vs_torch', float('nan')):.1e} | {'unstable' if row['unstable'] else ''} |"
        )
    lines.append("")
    lines.append("| model | " + " | ".join(f"export {fmt} (s)" for fmt in ("onnx", "openvino", "torchscript")) + " |")
    lines.append("|---|---:|---:|---:|")
    for model, times in export_s.items():
        cells = " | ".join(f"{times[fmt]:.1f}" if fmt in times else "-" for fmt in ("onnx", "openvino", "torchscript"))
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the input ids")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIME_FORMATS), choices=list(RUNTIME_FORMATS))
    parser.add_argument("--threads", type=int, default=1, help="threads per runtime (default 1)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    from protran import get_runtime

    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    rows, export_s = [], {}
    with tempfile.TemporaryDirectory(prefix="flexibert-latency-") as tmp:
        for name in args.models:
            model_dict, warmup, repeats = MODELS[name]
            print(f"benchmarking {name} ...", flush=True)
            model_rows, export_s[name] = benchmark_model(name, model_dict, warmup, repeats, args, Path(tmp))
            rows.extend(model_rows)
    versions = {}
    for runtime_name in args.runtimes:
        versions.update(get_runtime(runtime_name).versions())
    meta = {
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
        "seed": args.seed,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "versions": versions,
        "note": "All runtimes share one process, run one after another; the machine may be shared.",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "thread_settings": json.dumps(row["thread_settings"], sort_keys=True)})
    with open(args.out / "results.json", "w", encoding="utf-8") as handle:
        json.dump({"meta": meta, "export_s": export_s, "rows": rows}, handle, indent=2)
        handle.write("\n")
    print(markdown_table(rows, export_s))
    print(f"\nwrote {args.out / 'results.csv'} and results.json in {meta['wall_s']:.0f} s "
          f"(load average {load_before[0]:.1f} before, {meta['machine']['load_average_after'][0]:.1f} after)")


if __name__ == "__main__":
    main()
