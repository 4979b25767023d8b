"""Precision variants against f32: what int8 and bf16 buy in latency and cost in model quality.

Two parts, both written to ``benchmarks/results/precision/`` (``precision.json``, ``precision.md``):

1. **Drift on a trained model.** A small FlexiBERT 2.0 masked-language model (2 layers of width 128,
   mixed operations: attention, DFT and DSC-9 convolution heads) is pre-trained with
   ``flexibert.pretrain`` on the shipped corpus (1200 steps of 32 sequences, about 5 minutes on one
   core; ``--quick``: 200 steps, which leave it predicting token frequencies, so its drift says little). Every variant
   available here then runs validation sequences of the corpus beside its f32 base runtime
   (``protran.output_drift``): mean cosine of the final hidden states, and the MLM loss from each
   runtime's hidden states through the f32 MLM head.
2. **Latency over the depth x width grid of** ``benchmarks/runtimes.py`` (its BERT-shaped encoders,
   attention-only and mixed, batch 1, sequence 128, one thread). Every runtime of a grid cell is
   prepared, then timed in alternating windows (f32 bases and variants in turn, so that the load of
   this shared machine falls on all of them alike); latency is the median over all windows, the ratio
   is a variant's latency over its f32 base's.

3. **ONNX Runtime's quantisation settings** on 2-layer encoders (width 256 and 768, both mixes): MatMul
   only per channel (what ``onnxruntime-int8`` uses), per tensor, with ``reduce_range``, and every op
   type; latency over f32 and the cosine of the hidden states with f32's.

The product targets are reported as measured: int8 at most 0.6 x its f32 base's latency on the wide
models (width 768) with an MLM-loss increase of at most 2 %.

    python benchmarks/precision.py --seed 0            # the full grid; about 40 minutes on one idle core
    python benchmarks/precision.py --seed 0 --quick    # a small grid and a shorter training; minutes
    python benchmarks/precision.py --seed 0 --widths 768 --runtimes onnxruntime-int8 --no-settings \
        --out benchmarks/results/precision_ort_int8       # one variant on the wide models, full training
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
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
sys.path.insert(0, str(REPO / "benchmarks"))
OUT = REPO / "benchmarks" / "results" / "precision"

from runtimes import DEPTHS, WIDTHS, grid_model_dict  # noqa: E402  (the grid of benchmarks/runtimes.py)

BASES = ("torch", "onnxruntime", "openvino")
VARIANTS = ("onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-f16")
BATCH_SIZE, SEQ_LEN = 1, 128
WARMUP, ROUNDS, WINDOW_S, MIN_REPEATS_PER_WINDOW = 3, 5, 0.6, 3
# Width 128 and a high learning rate: within a few minutes on one core the model gets past the plateau
# where it predicts token frequencies alone (loss about 6.2 here), past which the loss depends on context
# and so on the precision of the hidden states.
TRAIN_MIX, TRAIN_LAYERS, TRAIN_WIDTH = "mixed", 2, 128
TRAIN_BATCH_SIZE, TRAIN_LR = 32, 3e-3
WIDE = 768
TARGET_RATIO, TARGET_LOSS_INCREASE = 0.6, 0.02


def settings(quick: bool) -> dict:
    if quick:
        return {"mixes": ("attention", "mixed"), "depths": (2,), "widths": (256, 768), "train_steps": 200,
                "drift_sequences": 8}
    return {"mixes": ("attention", "mixed"), "depths": DEPTHS, "widths": WIDTHS, "train_steps": 1200,
            "drift_sequences": 64}


# -- part 1: a trained model and the drift of every variant ------------------------------------------------


def train_model(seed: int, steps: int, folder: Path) -> tuple[object, object, dict]:
    import torch

    from flexibert import ArchSpec, PretrainConfig, build_mlm_model, evaluate_mlm, load_corpus, pretrain

    torch.set_num_threads(1)
    corpus = load_corpus(seq_len=SEQ_LEN, seed=seed)
    spec = ArchSpec.from_model_dict(grid_model_dict(TRAIN_LAYERS, TRAIN_WIDTH, TRAIN_MIX))
    model = build_mlm_model(spec, seed=seed, vocab_size=corpus.vocab_size)
    validation = corpus.validation[:64]
    initial = evaluate_mlm(model, validation, batch_size=16, seed=seed)
    config = PretrainConfig(max_steps=steps, batch_size=TRAIN_BATCH_SIZE, lr=TRAIN_LR, warmup_steps=max(1, steps // 10),
                            seed=seed, log_every=max(1, steps // 10))
    started = time.perf_counter()
    result = pretrain(model, corpus, config, checkpoint_dir=folder)
    elapsed_s = time.perf_counter() - started
    final = evaluate_mlm(model, validation, batch_size=16, seed=seed)
    print(f"trained {steps} steps in {elapsed_s:.0f} s: validation MLM loss {initial:.3f} -> {final:.3f}", flush=True)
    training = {"model_dict": spec.to_model_dict(), "steps": steps, "batch_size": config.batch_size,
                "lr": config.lr, "elapsed_s": elapsed_s, "initial_eval_loss": initial, "final_eval_loss": final,
                "loss_history": result.loss_history, "checkpoint": str(folder / "checkpoint.pt")}
    return model, corpus, training


def drift_of_variants(model, corpus, sequences: int, seed: int) -> dict:
    from protran import get_runtime, output_drift

    drift = {}
    for name in VARIANTS:
        reason = get_runtime(name).unavailable_reason()
        if reason is not None:
            drift[name] = {"available": False, "reason": reason}
            print(f"drift {name:17s} not available: {reason}", flush=True)
            continue
        entry = output_drift(model, name, corpus.validation[:sequences], batch_size=BATCH_SIZE, seed=seed)
        drift[name] = entry.report_entry()
        print(f"drift {name:17s} cosine {entry.hidden_cosine:.5f}, MLM loss {entry.mlm_loss_f32:.4f} -> "
              f"{entry.mlm_loss:.4f} ({entry.mlm_loss_increase_rel:+.2%})", flush=True)
    return drift


# -- part 2: latency over the grid ---------------------------------------------------------------------------


def time_window(session, seconds: float) -> list[float]:
    samples = []
    started = time.perf_counter()
    while len(samples) < MIN_REPEATS_PER_WINDOW or time.perf_counter() - started < seconds:
        tic = time.perf_counter()
        session.run()
        samples.append(time.perf_counter() - tic)
    return samples


def measure_cell(model, names: list[str], seed: int, tmp: Path) -> dict[str, dict]:
    """Prepare every runtime on one model, then time them in alternating windows."""
    from protran import get_runtime

    sessions, result = {}, {}
    try:
        for name in names:
            sessions[name] = get_runtime(name).prepare(model, BATCH_SIZE, SEQ_LEN, num_threads=1,
                                                       workdir=tmp / name, input_seed=seed)
            for _ in range(WARMUP):
                sessions[name].run()
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(ROUNDS):
            for name in names:
                samples[name] += time_window(sessions[name], WINDOW_S)
        for name in names:
            q25, median, q75 = np.percentile(samples[name], [25, 50, 75])
            result[name] = {"latency_s": float(median), "iqr_s": float(q75 - q25), "repeats": len(samples[name]),
                            "graph_node_count": sessions[name].graph_node_count,
                            "prepare_s": sessions[name].prepare_s}
    finally:
        for session in sessions.values():
            session.close()
    return result


def measure_grid(config: dict, seed: int, tmp: Path) -> list[dict]:
    import torch

    from flexibert import ArchSpec, build_model
    from protran import get_runtime

    wanted = config.get("runtimes") or (*BASES, *VARIANTS)
    wanted = {*wanted, *(get_runtime(name).variant.base_runtime for name in wanted)}  # a ratio needs its base
    names = [name for name in (*BASES, *VARIANTS)
             if name in wanted and get_runtime(name).unavailable_reason() is None]
    rows = []
    for mix in config["mixes"]:
        for layers in config["depths"]:
            for width in config["widths"]:
                spec = ArchSpec.from_model_dict(grid_model_dict(layers, width, mix))
                model = build_model(spec, seed=seed).eval()
                cell = measure_cell(model, names, seed, tmp / f"{mix}-{layers}-{width}")
                torch.set_num_threads(1)
                for name in names:
                    base = get_runtime(name).variant.base_runtime
                    ratio = cell[name]["latency_s"] / cell[base]["latency_s"]
                    rows.append({"mix": mix, "layers": layers, "width": width, "runtime": name, "base_runtime": base,
                                 "precision": get_runtime(name).variant.precision, **cell[name],
                                 "ratio_to_f32": ratio})
                line = ", ".join(f"{r['runtime']} {r['latency_s'] * 1e3:.1f} ms ({r['ratio_to_f32']:.2f}x)"
                                 for r in rows[-len(names):] if r["runtime"] in VARIANTS)
                print(f"{mix:9s} {layers:2d} x {width:3d}: {line}", flush=True)
                del model
                gc.collect()
    return rows


# -- part 3: why onnxruntime-int8 quantises what it does ------------------------------------------------

ORT_SETTINGS = {  # name -> quantize_dynamic options; the first is what onnxruntime-int8 uses
    "matmul per-channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": False},
    "matmul per-tensor": {"op_types_to_quantize": ["MatMul"], "per_channel": False, "reduce_range": False},
    "matmul per-channel reduce-range": {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": True},
    "all ops per-channel": {"op_types_to_quantize": None, "per_channel": True, "reduce_range": False},
}


def ort_settings(seed: int, tmp: Path) -> list[dict]:
    """ONNX Runtime's dynamic quantisation settings on 2-layer encoders of width 256 and 768: latency
    over f32 and the cosine of the hidden states with f32's (random weights)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from flexibert import ArchSpec, build_model, example_input_ids, export_onnx

    def session(path: Path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    rows = []
    for mix in ("attention", "mixed"):
        for width in (256, 768):
            spec = ArchSpec.from_model_dict(grid_model_dict(2, width, mix))
            model = build_model(spec, seed=seed).eval()
            folder = tmp / f"ort-{mix}-{width}"
            folder.mkdir(parents=True)
            path = export_onnx(model, folder / "model.onnx", batch_size=BATCH_SIZE, seq_len=SEQ_LEN, exporter="tracing")
            sessions = {"f32": session(path)}
            ids = example_input_ids(BATCH_SIZE, SEQ_LEN, model.vocab_size, seed=seed).numpy()
            feed = {sessions["f32"].get_inputs()[0].name: ids}
            graph = onnx.load(str(path)).graph
            batched = {tensor.name for tensor in graph.initializer if len(tensor.dims) != 2}
            # as onnxruntime-int8 does: MatMuls with a batched weight stay f32 (refused per channel)
            excluded = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in batched]
            for name, options in ORT_SETTINGS.items():
                quantized = folder / f"{name.replace(' ', '-')}.onnx"
                quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, nodes_to_exclude=excluded, **options)
                sessions[name] = session(quantized)
            samples: dict[str, list[float]] = {name: [] for name in sessions}
            for runnable in sessions.values():
                for _ in range(WARMUP):
                    runnable.run(None, feed)
            for _ in range(ROUNDS):
                for name, runnable in sessions.items():
                    samples[name] += time_window(_Runner(runnable, feed), WINDOW_S / 2)
            reference = sessions["f32"].run(None, feed)[0]
            f32_s = float(np.median(samples["f32"]))
            for name in ORT_SETTINGS:
                output = sessions[name].run(None, feed)[0]
                rows.append({"mix": mix, "layers": 2, "width": width, "setting": name,
                             "latency_s": float(np.median(samples[name])),
                             "ratio_to_f32": float(np.median(samples[name])) / f32_s,
                             "hidden_cosine": _mean_cosine(output, reference)})
                print(f"onnxruntime {mix:9s} 2 x {width:3d} {name:32s} {rows[-1]['ratio_to_f32']:.2f}x, "
                      f"cosine {rows[-1]['hidden_cosine']:.5f}", flush=True)
    return rows


class _Runner:
    def __init__(self, session, feed) -> None:
        self.session, self.feed = session, feed

    def run(self):
        return self.session.run(None, self.feed)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(np.mean((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


# -- report ----------------------------------------------------------------------------------------------


def targets(rows: list[dict], drift: dict) -> dict:
    """The product targets, per int8 variant, as measured (None where nothing wide was measured)."""
    report = {}
    for name in ("onnxruntime-int8", "openvino-int8"):
        wide = [r["ratio_to_f32"] for r in rows if r["runtime"] == name and r["width"] == WIDE]
        increase = drift.get(name, {}).get("mlm_loss_increase_rel")
        worst = max(wide) if wide else None
        report[name] = {
            "worst_ratio_width_768": worst, "median_ratio_width_768": float(np.median(wide)) if wide else None,
            "mlm_loss_increase_rel": increase,
            "latency_target_met": None if worst is None else worst <= TARGET_RATIO,
            "loss_target_met": None if increase is None else increase <= TARGET_LOSS_INCREASE,
        }
    return report


def markdown(result: dict) -> str:
    training = result["training"]
    lines = [
        "# Precision variants against f32", "",
        f"Trained model: {TRAIN_LAYERS} layers of width {TRAIN_WIDTH} ({TRAIN_MIX} operations), "
        f"{training['steps']} steps of batch {training['batch_size']} on the shipped corpus in "
        f"{training['elapsed_s']:.0f} s; validation MLM loss {training['initial_eval_loss']:.3f} -> "
        f"{training['final_eval_loss']:.3f}. Drift on {result['drift_sequences']} validation sequences.", "",
        "| variant | base | calibration | hidden cosine | MLM loss f32 | MLM loss | increase |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["drift"].items():
        if "reason" in entry:
            lines.append(f"| {name} | | not available: {entry['reason']} | | | | |")
        else:
            lines.append(f"| {name} | {entry['base_runtime']} | {entry['calibration']} "
                         f"| {entry['hidden_cosine']:.5f} | {entry['mlm_loss_f32']:.4f} | {entry['mlm_loss']:.4f} "
                         f"| {entry['mlm_loss_increase_rel']:+.2%} |")
    lines += ["", f"Latency, batch {BATCH_SIZE}, sequence {SEQ_LEN}, one thread (median over alternating "
              "windows; ratio = variant / its f32 base). The drift figures above are the trained model's, "
              "not each cell's.", "",
              "| mix | layers | width | runtime | latency (ms) | ratio to f32 | graph nodes |",
              "|---|---|---|---|---|---|---|"]
    for r in result["grid"]:
        nodes = "" if r["graph_node_count"] is None else r["graph_node_count"]
        lines.append(f"| {r['mix']} | {r['layers']} | {r['width']} | {r['runtime']} | {r['latency_s'] * 1e3:.2f} "
                     f"| {r['ratio_to_f32']:.2f} | {nodes} |")
    if result["onnxruntime_settings"]:
        lines += ["", "ONNX Runtime dynamic quantisation settings (2 layers, random weights; onnxruntime-int8 "
                  "uses the first, and leaves the projections of concatenated heads in f32):", "",
                  "| mix | width | setting | ratio to f32 | hidden cosine |", "|---|---|---|---|---|"]
    else:
        lines += ["", "ONNX Runtime's quantisation settings were not compared in this run (`--no-settings`)."]
    for r in result["onnxruntime_settings"]:
        lines.append(f"| {r['mix']} | {r['width']} | {r['setting']} | {r['ratio_to_f32']:.2f} "
                     f"| {r['hidden_cosine']:.5f} |")
    lines += ["", f"Targets: int8 <= {TARGET_RATIO} x f32 latency at width {WIDE}, MLM-loss increase <= "
              f"{TARGET_LOSS_INCREASE:.0%}.", "",
              "| variant | worst ratio at 768 | median ratio at 768 | loss increase | latency met | loss met |",
              "|---|---|---|---|---|---|"]
    for name, t in result["targets"].items():
        worst = "" if t["worst_ratio_width_768"] is None else f"{t['worst_ratio_width_768']:.2f}"
        median = "" if t["median_ratio_width_768"] is None else f"{t['median_ratio_width_768']:.2f}"
        increase = "" if t["mlm_loss_increase_rel"] is None else f"{t['mlm_loss_increase_rel']:+.2%}"
        met = f"{t['latency_target_met']} | {t['loss_target_met']}"
        lines.append(f"| {name} | {worst} | {median} | {increase} | {met} |")
    return "\n".join(lines) + "\n"


def drift_document(result: dict) -> dict:
    """The trained model's drift in the shape ``protran drift`` writes, for ``boshcode codesign
    --runtime-drift`` (the checkpoint itself is temporary: only its architecture hash is kept)."""
    from flexibert import ArchSpec, model_hash

    spec = ArchSpec.from_model_dict(result["training"]["model_dict"], space=False)
    return {"model": {"checkpoint": "(temporary: benchmarks/precision.py)", "arch_hash": model_hash(spec)},
            "sequences": result["drift_sequences"], "runtimes": result["drift"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small grid and a shorter training")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--widths", type=int, nargs="+", help="grid widths (default: all of benchmarks/runtimes.py)")
    parser.add_argument("--runtimes", nargs="+", choices=(*BASES, *VARIANTS),
                        help="runtimes timed over the grid, with their f32 bases (default: all); drift covers "
                             "every variant")
    parser.add_argument("--no-settings", dest="settings", action="store_false",
                        help="skip part 3 (ONNX Runtime's quantisation settings)")
    args = parser.parse_args(argv)
    config = settings(args.quick)
    if args.widths:
        config["widths"] = tuple(args.widths)
    config["runtimes"] = tuple(args.runtimes or ())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetran-precision-") as scratch:
        tmp = Path(scratch)
        model, corpus, training = train_model(args.seed, config["train_steps"], tmp / "pretrain")
        training["checkpoint"] = "(temporary)"
        drift = drift_of_variants(model, corpus, config["drift_sequences"], args.seed)
        del model
        gc.collect()
        rows = measure_grid(config, args.seed, tmp)
        settings_rows = ort_settings(args.seed, tmp) if args.settings else []
    import onnxruntime
    import openvino

    result = {
        "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed, "quick": args.quick, "batch_size": BATCH_SIZE, "seq_len": SEQ_LEN, "threads": 1,
        "drift_sequences": config["drift_sequences"], "training": training, "drift": drift, "grid": rows,
        "onnxruntime_settings": settings_rows,
        "targets": targets(rows, drift),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "logical_cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
                    "openvino": openvino.__version__},
        "elapsed_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "precision_quick" if args.quick else "precision"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    drift_json = "drift_quick.json" if args.quick else "drift.json"
    (args.out / drift_json).write_text(json.dumps(drift_document(result), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out / stem}.json and .md in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
