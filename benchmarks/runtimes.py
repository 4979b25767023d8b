"""Runtimes as a design dimension: torch eager, ONNX Runtime and OpenVINO (f32) on the same architectures.

Two parts, both written to ``benchmarks/results/runtimes/``:

1. **A depth x width grid, measured now** (``grid.csv``, ``grid.png``): BERT-shaped encoders with
   2, 6 or 12 layers of width 128, 256, 512 or 768 (heads of 64, feed-forward 4 x width), once with
   self-attention heads only and once with a mixed layer (half the heads DSC-9 convolutions, a
   quarter DFT), batch 1, sequence 128, one thread. For each runtime: median latency (with its
   interquartile range), achieved GFLOP/s (analytic FLOPs / latency) against this machine's measured
   single-thread f32 GEMM throughput (the roofline ceiling), and the number of graph nodes before and
   after the runtime's graph optimisation: the exported ONNX graph and ONNX Runtime's optimised graph
   (all optimisations on), OpenVINO's IR as converted and its compiled runtime model (fused).
2. **The held-out sets of the committed profiles** (``profiles.csv``): the 32 random architectures
   measured by ``protran measure --purpose holdout`` with ONNX Runtime and with OpenVINO (each in
   its own process, to a 2 % confidence target) give the runtime speed ratio over the design space.

    python benchmarks/runtimes.py --seed 0            # about 8 minutes on one idle core
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import csv
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "results" / "runtimes"
PROFILES = REPO / "datasets" / "profiles"
RUNTIMES = ("torch", "onnxruntime", "openvino")
DEPTHS = (2, 6, 12)
WIDTHS = (128, 256, 512, 768)
TIMED_WINDOW_S = 2.0
MIN_REPEATS, MAX_REPEATS, WARMUP = 10, 200, 3


def grid_model_dict(layers: int, width: int, mix: str) -> dict:
    """A BERT-shaped encoder: width / 64 heads (as allowed: 2, 4, 8, 12) and feed-forward 4 x width."""
    heads = {128: 2, 256: 4, 512: 8, 768: 12}[width]
    d = width // heads
    if mix == "attention":
        ops = [f"sa_sdp_{d}"] * heads
    else:  # half DSC-9 convolutions, a quarter DFT, the rest attention
        n_conv, n_dft = heads // 2, max(1, heads // 4)
        ops = [f"sa_sdp_{d}"] * (heads - n_conv - n_dft) + [f"l_dft_{d}"] * n_dft + [f"c_9_{d}"] * n_conv
    return {"l": layers, "o": [ops] * layers, "h": [width] * layers, "f": [[4 * width]] * layers}


def gemm_gflops(size: int = 1024, seconds: float = 2.0) -> dict:
    """Single-thread f32 matrix-multiply throughput (torch and numpy): the ceiling a runtime can reach."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    result = {}
    for name, multiply in (("torch", lambda: torch.mm(a, b)), ("numpy", lambda: a.numpy() @ b.numpy())):
        multiply()
        times = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            tic = time.perf_counter()
            multiply()
            times.append(time.perf_counter() - tic)
        result[name] = 2 * size**3 / float(np.median(times)) / 1e9
    result["ceiling"] = max(result["torch"], result["numpy"])
    result["size"] = size
    return result


def time_session(session) -> np.ndarray:
    for _ in range(WARMUP):
        session.run()
    latencies_s = []
    started = time.perf_counter()
    while len(latencies_s) < MIN_REPEATS or (time.perf_counter() - started < TIMED_WINDOW_S
                                             and len(latencies_s) < MAX_REPEATS):
        tic = time.perf_counter()
        session.run()
        latencies_s.append(time.perf_counter() - tic)
    return np.array(latencies_s)


def graph_nodes_before(runtime: str, workdir: Path) -> int | None:
    """Nodes of the graph handed to the runtime, before its own optimisation."""
    if runtime == "onnxruntime":
        import onnx

        return len(onnx.load(str(workdir / "model.onnx"), load_external_data=False).graph.node)
    if runtime == "openvino":
        import openvino as ov

        return len(ov.Core().read_model(str(workdir / "model.xml")).get_ops())
    return None


def measure_grid(seed: int, tmp: Path) -> list[dict]:
    import torch

    from flexibert import ArchSpec, analytic_features, build_model
    from protran import get_runtime

    rows = []
    for mix in ("attention", "mixed"):
        for layers in DEPTHS:
            for width in WIDTHS:
                spec = ArchSpec.from_model_dict(grid_model_dict(layers, width, mix))
                features = analytic_features(spec, batch_size=1, seq_len=128)
                model = build_model(spec, seed=seed).eval()
                for runtime in RUNTIMES:
                    workdir = tmp / f"{mix}-{layers}-{width}-{runtime}"
                    with get_runtime(runtime).prepare(model, 1, 128, num_threads=1, workdir=workdir,
                                                      input_seed=seed) as session:
                        latencies_s = time_session(session)
                        before = graph_nodes_before(runtime, workdir)
                        after = session.graph_node_count
                    torch.set_num_threads(1)
                    q25, median, q75 = np.percentile(latencies_s, [25, 50, 75])
                    rows.append({"mix": mix, "layers": layers, "width": width, "runtime": runtime,
                                 "params": features["params"], "gflop": features["flops"] / 1e9,
                                 "latency_ms": median * 1e3, "iqr_ms": (q75 - q25) * 1e3, "repeats": len(latencies_s),
                                 "gflops_per_s": features["flops"] / median / 1e9,
                                 "nodes_before": before, "nodes_after": after})
                    print(f"{mix:9s} {layers:2d} x {width:3d} {runtime:11s} {median * 1e3:8.2f} ms "
                          f"({rows[-1]['gflops_per_s']:.1f} GFLOP/s, nodes {before} -> {after})", flush=True)
                del model
                gc.collect()
    return rows


def profile_ratios() -> list[dict]:
    """ONNX Runtime and OpenVINO latency of the same held-out architectures of the committed profiles."""
    from protran import RunStore

    holdout = {}
    for runtime in ("onnxruntime", "openvino"):
        path = next(iter(sorted(PROFILES.glob(f"*-{runtime}.sqlite"))), None)
        if path is None:
            return []
        with RunStore(path, readonly=True) as store:
            runs = [run for run in store.runs() if run.config.get("purpose") == "holdout"]
            holdout[runtime] = {m.arch_hash: m for run in runs
                                for m in store.measurements(run_id=run.id, status=("ok", "unstable"))}
    from flexibert import analytic_features

    rows = []
    for arch_hash in sorted(set(holdout["onnxruntime"]) & set(holdout["openvino"])):
        ort, ov = holdout["onnxruntime"][arch_hash], holdout["openvino"][arch_hash]
        features = analytic_features(ort.spec, batch_size=1, seq_len=128)
        rows.append({"hash": arch_hash, "layers": ort.spec.num_layers, "gflop": features["flops"] / 1e9,
                     "onnxruntime_ms": ort.latency_s * 1e3, "openvino_ms": ov.latency_s * 1e3,
                     "openvino_over_onnxruntime": ov.latency_s / ort.latency_s})
    return rows


def fastest_table(rows: list[dict]) -> str:
    lines = []
    for mix in ("attention", "mixed"):
        lines += [f"\nFastest runtime, {mix} layers (latency in ms: torch / ONNX Runtime / OpenVINO):\n",
                  "| layers | " + " | ".join(f"width {w}" for w in WIDTHS) + " |",
                  "|---|" + "---|" * len(WIDTHS)]
        for layers in DEPTHS:
            cells = []
            for width in WIDTHS:
                group = {r["runtime"]: r for r in rows if (r["mix"], r["layers"], r["width"]) == (mix, layers, width)}
                best = min(group, key=lambda name: group[name]["latency_ms"])
                times = " / ".join(f"{group[name]['latency_ms']:.1f}" for name in RUNTIMES)
                cells.append(f"**{best}** ({times})")
            lines.append(f"| {layers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], gemm: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"torch": "o", "onnxruntime": "s", "openvino": "^"}
    for runtime in RUNTIMES:
        for mix, fill in (("attention", "full"), ("mixed", "none")):
            group = [r for r in rows if r["runtime"] == runtime and r["mix"] == mix]
            axes[0].plot([r["gflop"] for r in group], [r["latency_ms"] for r in group], markers[runtime],
                         fillstyle=fill, label=f"{runtime} ({mix})")
            axes[1].plot([r["gflop"] for r in group], [r["gflops_per_s"] for r in group], markers[runtime],
                         fillstyle=fill, label=f"{runtime} ({mix})")
    axes[1].axhline(gemm["ceiling"], color="k", linestyle="--", linewidth=1,
                    label=f"1-thread GEMM {gemm['ceiling']:.0f} GFLOP/s")
    for axis, label in ((axes[0], "median latency (ms)"), (axes[1], "achieved GFLOP/s")):
        axis.set_xscale("log")
        axis.set_xlabel("analytic GFLOP per sequence")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=7)
    figure.suptitle("Runtimes on this CPU: batch 1, sequence 128, one thread")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def summary(rows: list[dict], ratios: list[dict], gemm: dict) -> dict:
    by_runtime = {runtime: [r for r in rows if r["runtime"] == runtime] for runtime in RUNTIMES}

    def geometric_ratio(numerator: str, denominator: str) -> float:
        pairs = zip(by_runtime[numerator], by_runtime[denominator])
        return float(np.exp(np.mean([np.log(a["latency_ms"] / b["latency_ms"]) for a, b in pairs])))

    result = {
        "gemm_gflops_1thread": gemm,
        "grid_geomean_latency_ratio": {"torch_over_onnxruntime": geometric_ratio("torch", "onnxruntime"),
                                       "openvino_over_onnxruntime": geometric_ratio("openvino", "onnxruntime")},
        "grid_max_fraction_of_gemm": {runtime: max(r["gflops_per_s"] for r in group) / gemm["ceiling"]
                                      for runtime, group in by_runtime.items()},
        "grid_wins": {runtime: 0 for runtime in RUNTIMES},
    }
    for key in {(r["mix"], r["layers"], r["width"]) for r in rows}:
        group = [r for r in rows if (r["mix"], r["layers"], r["width"]) == key]
        result["grid_wins"][min(group, key=lambda r: r["latency_ms"])["runtime"]] += 1
    if ratios:
        values = np.array([r["openvino_over_onnxruntime"] for r in ratios])
        result["profiles_openvino_over_onnxruntime"] = {
            "architectures": len(values), "geomean": float(np.exp(np.mean(np.log(values)))),
            "median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()),
            "openvino_faster_share": float(np.mean(values < 1))}
    return result


def report(rows: list[dict], ratios: list[dict], result: dict, wall_s: float, command: str) -> str:
    gemm = result["gemm_gflops_1thread"]
    grid_ratio = result["grid_geomean_latency_ratio"]
    lines = [
        "# Runtimes as a design dimension",
        "",
        f"Command: `{command}` ({wall_s / 60:.1f} min on this machine; "
        f"{platform.processor() or platform.machine()}, one thread).",
        "",
        f"Single-thread f32 GEMM ({gemm['size']}²): torch {gemm['torch']:.1f} GFLOP/s, "
        f"numpy {gemm['numpy']:.1f} GFLOP/s.",
        "",
        f"Grid ({len(rows) // len(RUNTIMES)} encoders x {len(RUNTIMES)} runtimes): torch eager is "
        f"{grid_ratio['torch_over_onnxruntime']:.2f}x and OpenVINO "
        f"{grid_ratio['openvino_over_onnxruntime']:.2f}x the latency of ONNX Runtime (geometric means); fastest "
        f"runtime per encoder: " + ", ".join(f"{k} {v}" for k, v in result["grid_wins"].items()) + ". Best achieved "
        "share of the GEMM ceiling: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in
                                                  result["grid_max_fraction_of_gemm"].items()) + ".",
    ]
    if "profiles_openvino_over_onnxruntime" in result:
        p = result["profiles_openvino_over_onnxruntime"]
        lines += ["", f"Committed profiles, the same {p['architectures']} random held-out architectures measured "
                      f"with each runtime in its own process: OpenVINO / ONNX Runtime latency geometric mean "
                      f"{p['geomean']:.3f} (median {p['median']:.3f}, range {p['min']:.2f}-{p['max']:.2f}); "
                      f"OpenVINO faster on {100 * p['openvino_faster_share']:.0f} %."]
    lines += ["", fastest_table(rows), "",
              f"Graph nodes before -> after each runtime's optimisation ({DEPTHS[-1]} x {WIDTHS[-1]}):", "",
              "| mix | ONNX export | ONNX Runtime optimised | OpenVINO IR | OpenVINO compiled |",
              "|---|---:|---:|---:|---:|"]
    for mix in ("attention", "mixed"):
        group = {r["runtime"]: r for r in rows if (r["mix"], r["layers"], r["width"]) == (mix, DEPTHS[-1], WIDTHS[-1])}
        lines.append(f"| {mix} | {group['onnxruntime']['nodes_before']} | {group['onnxruntime']['nodes_after']} | "
                     f"{group['openvino']['nodes_before']} | {group['openvino']['nodes_after']} |")
    lines += ["", "![latency and achieved GFLOP/s](grid.png)", "",
              "Files: `grid.csv` (every measurement), `profiles.csv` (held-out ratios), `summary.json`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the input ids")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    gemm = gemm_gflops()
    print(f"single-thread GEMM: {gemm}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgetran-runtimes-") as tmp:
        rows = measure_grid(args.seed, Path(tmp))
    ratios = profile_ratios()
    write_csv(rows, OUT / "grid.csv")
    if ratios:
        write_csv(ratios, OUT / "profiles.csv")
    plot(rows, gemm, OUT / "grid.png")
    result = summary(rows, ratios, gemm)
    wall_s = time.perf_counter() - started
    result.update(wall_s=wall_s, load_average_after=os.getloadavg(), seed=args.seed)
    (OUT / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "README.md").write_text(
        report(rows, ratios, result, wall_s, f"python benchmarks/runtimes.py --seed {args.seed}")
    )
    print((OUT / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
