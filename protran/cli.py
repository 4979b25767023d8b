"""The ``protran`` command: profile a board, predict costs, move data in and out, replay the loop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from flexibert import _cli_common as common

PROG = "protran"


def _meter_errors_are_user_errors(handler):
    """A missing or unreadable sensor is the user's to fix: one line, exit 1, no traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from protran.meters import MeterError

        try:
            return handler(args)
        except MeterError as problem:
            raise common.CliError(str(problem), exit_code=common.EXIT_FAILURE) from None

    return wrapped


# -- profile --------------------------------------------------------------------------------------


@_meter_errors_are_user_errors
def _profile(args: argparse.Namespace) -> int:
    from protran._profile import ProfileConfig, profile

    config = ProfileConfig(
        **_measurement_settings(args), seed=args.seed, seed_samples=args.seed_samples,
        pool_size=args.pool_size, target_mse=args.target_mse, patience=args.patience,
        max_samples=args.max_samples, max_hours=args.max_hours, surrogate=args.surrogate,
        features=args.features, acquisition=args.acquisition, space_path=args.space,
    )
    meter = _detect_meter(args.meter)
    store_path = _store_path(args)
    reporter = _ProgressReporter(config.max_samples, quiet=args.json)
    try:
        summary = profile(config, store_path, args.out, resume=args.resume, meter=meter, progress=reporter)
    except KeyboardInterrupt:
        reporter.close()
        print(f"{PROG}: interrupted; every finished measurement is in {store_path}. "
              f"Run the same command with --resume to continue.", file=sys.stderr)
        return 130
    reporter.close()
    result = {**summary.to_dict(), "store": str(store_path)}
    if args.json:
        common.print_json(result)
    else:
        print(f"run {summary.run_id} on {summary.device} ({summary.runtime}): {summary.measured_ok} measured, "
              f"{summary.failed} failed, {summary.unstable} unstable; stopped: {summary.stop_reason}")
        for measure, mse in summary.cv_mse.items():
            shown = f"{mse:.5f}" if mse is not None else "n/a (too few rows)"
            print(f"  {measure:<13} cross-validated MSE (max-normalised) {shown}")
        missing = [m for m in ("energy_j", "peak_power_w") if m not in summary.measures]
        if missing:
            print(f"  {', '.join(missing)}: not available (no power meter)")
        for measure, path in summary.surrogate_paths.items():
            print(f"  surrogate {measure}: {path}")
        print(f"  store: {store_path}")
    return 0


def _measurement_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ProfileConfig fields that ``profile`` and ``measure`` share: what is measured and how."""
    return {"device": args.device, "runtime": args.runtime, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "num_threads": args.threads, "meter": args.meter, "target_rel_ci": args.target_rel_ci,
            "time_cap_s": args.time_cap_s, "timeout_s": args.timeout_s, "vocab_size": args.vocab_size}


def _detect_meter(name: str):
    from protran.meters import detect_meter

    meter = detect_meter(name)
    if meter is None and name != "none":
        print(f"{PROG}: no power meter found on this machine: measuring latency only; energy and peak power "
              "are recorded as not available", file=sys.stderr)
    return meter


def _store_path(args: argparse.Namespace) -> Path:
    return Path(args.store or f"{args.out}/{args.device}.sqlite")


# -- measure ----------------------------------------------------------------------------------------


@_meter_errors_are_user_errors
def _measure(args: argparse.Namespace) -> int:
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures
    from protran._profile import ProfileConfig, measure_listed
    from protran._store import RunStore

    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    config = ProfileConfig(**_measurement_settings(args), max_samples=max(len(specs), 16))
    meter = _detect_meter(args.meter)
    store_path = _store_path(args)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    reporter = _ProgressReporter(len(specs), quiet=args.json, label="measuring")
    try:
        with RunStore(store_path) as store:
            summary = measure_listed(config, specs, store, purpose=args.purpose, resume=args.resume, meter=meter,
                                     progress=reporter)
    except KeyboardInterrupt:
        reporter.close()
        print(f"{PROG}: interrupted; every finished measurement is in {store_path}. "
              f"Run the same command with --resume to continue.", file=sys.stderr)
        return 130
    reporter.close()
    result = {**summary.to_dict(), "store": str(store_path)}
    if args.json:
        common.print_json(result)
    else:
        print(f"run {summary.run_id} ({summary.purpose}) on {summary.device} ({summary.runtime}): "
              f"{summary.measured_ok} of {summary.requested} measured, {summary.unstable} unstable, "
              f"{summary.failed} failed; store: {store_path}")
    return 0


class _ProgressReporter:
    """A tqdm bar over the sample budget, with the current surrogate error and the last latency."""

    def __init__(self, total: int, quiet: bool, label: str = "profiling") -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="arch", desc=label, file=sys.stderr, disable=None,
                         dynamic_ncols=True)
        self._quiet = quiet

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "measured":
            self._bar.n = event["n_attempts"]
            result = event["result"]
            latency = f"{result.latency_s * 1e3:.2f} ms" if result.latency_s is not None else result.status
            postfix = {"ok": event["n_ok"], "last": latency}
            postfix.update({f"mse_{k.split('_')[0]}": f"{v:.4f}" for k, v in event["cv_mse"].items()})
            self._bar.set_postfix(postfix, refresh=True)
        elif kind == "fitted":
            self._bar.set_postfix({"ok": event["n_ok"], **{f"mse_{k.split('_')[0]}": f"{v:.4f}"
                                                           for k, v in event["cv_mse"].items()}}, refresh=True)

    def close(self) -> None:
        self._bar.close()


# -- predict ----------------------------------------------------------------------------------------


def _predict(args: argparse.Namespace) -> int:
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures

    if (args.surrogates is None) == (args.profile is None):
        raise common.CliError("give either --surrogates DIR (saved by `protran profile`) or --profile FILE... "
                              "(fit surrogates on measured profiles, as `protran pareto` does)")
    if args.accuracy is not None and args.profile is None:
        raise common.CliError("--accuracy needs --profile")
    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    if args.profile is not None:
        rows = _fitted_models(args, accuracy_required=False).predict(specs)
    else:
        from protran._predict import predict_specs

        rows = predict_specs(specs, args.surrogates)
    if args.json:
        common.print_json(rows)
        return 0
    header = ["hash", "device", "measure", "prediction", "std"]
    table = [[row["hash"][:8], row["device"], measure, f"{value['mean']:.6g}", f"{value['std']:.3g}"]
             for row in rows for measure, value in row["predicted"].items()]
    common.print_table(table, header)
    return 0


def _fitted_models(args: argparse.Namespace, accuracy_required: bool):
    """The accuracy and hardware surrogates of ``pareto`` and ``predict --profile``: the same files,
    task and seed give the same models, so both commands predict the same values."""
    from protran._accuracy import load_accuracy
    from protran._pareto import fit_models, load_profiles

    profiles = load_profiles(args.profile)
    if args.accuracy is None and accuracy_required:
        raise common.CliError("--accuracy is required")
    records = load_accuracy(args.accuracy) if args.accuracy is not None else None
    return fit_models(profiles, records, task=args.task, seed=args.seed)


# -- pareto -------------------------------------------------------------------------------------------


def _pareto(args: argparse.Namespace) -> int:
    from protran._pareto import Constraints, SearchSettings, plot_frontiers

    constraints = Constraints(
        max_latency_s=args.max_latency_ms / 1e3 if args.max_latency_ms is not None else None,
        max_energy_j=args.max_energy_j, max_peak_power_w=args.max_peak_power_w, max_params=args.max_params,
        max_layers=args.max_layers,
    )
    chosen = {"pop_size": args.pop_size, "n_generations": args.generations}
    settings = SearchSettings(seed=args.seed, **{key: value for key, value in chosen.items() if value is not None})
    models = _fitted_models(args, accuracy_required=True)
    devices = []
    for device in models.devices:
        available = models.measures(device)
        unconstrained = [m for m in constraints.measure_limits() if m not in available]
        if unconstrained:
            _note(f"{device}: no {unconstrained[0].replace('_', ' ')} measurements to apply the constraint to; "
                  "skipping this device")
            continue
        for measure in args.measure:
            if measure not in available:
                _note(f"{device}: no {measure.replace('_', ' ')} measurements; no {measure} frontier")
        if any(measure in available for measure in args.measure):
            devices.append(device)
    if not devices:
        raise common.CliError("no device has the measurements these frontiers and constraints need")
    frontiers = [frontier for frontier in _search_with_progress(models, devices, constraints, settings, args.json)
                 if frontier.measure in args.measure]
    if args.plot:
        plot_frontiers(frontiers, args.plot)
    if args.json:
        common.print_json({"frontiers": [frontier.to_dict() for frontier in frontiers]})
        return 0
    for frontier in frontiers:
        _print_frontier(frontier)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _note(message: str) -> None:
    print(f"{PROG} pareto: {message}", file=sys.stderr)


def _search_with_progress(models, devices: list[str], constraints, settings, quiet: bool) -> list:
    """Every device's frontiers (all its measures, searched together), with one progress bar."""
    from tqdm import tqdm

    from protran._pareto import search_frontiers

    bar = tqdm(total=len(devices) * settings.n_generations, unit="gen", desc="pareto", file=sys.stderr,
               disable=quiet, dynamic_ncols=True)
    frontiers = []
    try:
        for index, device in enumerate(devices):

            def progress(event: dict[str, Any], start: int = index * settings.n_generations) -> None:
                bar.n = start + event["generation"]
                bar.set_postfix({"device": event["device"], "archs": event["evaluations"]}, refresh=True)

            frontiers += search_frontiers(models, device, constraints, settings, progress=progress)
    finally:
        bar.close()
    return frontiers


def _print_frontier(frontier) -> None:
    from protran._pareto import MEASURE_UNITS, REFERENCE_POINT

    unit = MEASURE_UNITS[frontier.measure]
    print(f"{frontier.device} · accuracy vs {frontier.measure.replace('_', ' ')}: {len(frontier.points)} points, "
          f"hypervolume {frontier.hypervolume:.4f} (normalised, reference point {REFERENCE_POINT})")
    rows = [[point.arch_hash[:8], point.spec.num_layers, f"{point.accuracy:.4f} ± {point.accuracy_std:.4f}",
             f"{point.value:.4g} ± {point.value_std:.2g}"] for point in frontier.points]
    common.print_table(rows, ["hash", "layers", "accuracy", f"{frontier.measure} ({unit})"])
    print()


# -- import / export ------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    from protran._store import RunStore

    if args.accuracy:
        return _import_accuracy(args)
    with RunStore(args.store) as store:
        run_id = store.import_protran_json(args.dataset, device=args.device)
        count = len(store.measurements(run_id=run_id))
        device = store.get_run(run_id).device
    result = {"run_id": run_id, "device": device, "rows": count, "store": args.store}
    if args.json:
        common.print_json(result)
    else:
        print(f"imported {count} rows of {device} into {args.store} as run {run_id}")
    return 0


def _import_accuracy(args: argparse.Namespace) -> int:
    from protran._accuracy import AccuracyFormatError, import_accuracy, load_accuracy

    try:
        records = load_accuracy(args.dataset)
        added = import_accuracy(args.store, args.dataset)
    except (AccuracyFormatError, FileNotFoundError) as problem:
        raise common.CliError(str(problem)) from None
    tasks = sorted({record.task for record in records})
    result = {"records": len(records), "added": added, "tasks": tasks, "store": args.store}
    if args.json:
        common.print_json(result)
    else:
        print(f"imported {added} new of {len(records)} accuracy records ({', '.join(tasks)}) into {args.store}")
    return 0


# -- proxy --------------------------------------------------------------------------------------------


def _proxy(args: argparse.Namespace) -> int:
    import torch

    from flexibert import DesignSpace
    from flexibert.cli import read_architectures
    from protran._proxy import ProxyConfig, load_proxy_corpus, measure_proxies
    from protran._store import RunStore

    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    try:
        config = ProxyConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    except ValueError as problem:
        raise common.CliError(str(problem)) from None
    torch.set_num_threads(args.threads)
    corpus = load_proxy_corpus(config, args.corpus)
    with RunStore(args.store) as store:
        # Each result is committed as soon as it exists, so an interrupted run keeps what it measured.
        def keep(done: int, total: int, result) -> None:
            store.add_accuracy([result.to_record(specs[done - 1], config)])
            if not args.json:
                print(f"{done}/{total} {result.arch_hash[:8]}: validation MLM loss {result.eval_loss:.4f} "
                      f"({result.elapsed_s:.0f} s)", file=sys.stderr, flush=True)

        results = measure_proxies(specs, config, corpus=corpus, progress=keep)
    rows = [{"hash": r.arch_hash, "proxy_loss": r.eval_loss, "steps": r.steps, "seconds": r.elapsed_s}
            for r in results]
    if args.json:
        common.print_json(rows)
    else:
        common.print_table([[r["hash"][:8], f"{r['proxy_loss']:.4f}", f"{r['seconds']:.0f}"] for r in rows],
                           ["hash", "proxy loss", "seconds"])
        print(f"stored as task 'mlm_proxy' in {args.store}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from protran._store import RunStore

    with RunStore(args.store, readonly=True) as store:
        count = store.export_protran_json(args.output, run_id=args.run)
    if args.json:
        common.print_json({"rows": count, "output": args.output})
    else:
        print(f"wrote {count} rows to {args.output}")
    return 0


# -- replay -------------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from protran._replay import replay_files

    result = replay_files(args.dataset, prior_paths=args.prior, seed_samples=args.seed_samples,
                          target_mse=args.target_mse, seed=args.seed, surrogate=args.surrogate,
                          acquisition=args.acquisition, max_samples=args.max_samples)
    if args.json:
        print(json.dumps(result))
        return 0
    reached = result["samples_to_target"]
    print(f"samples to reach MSE {args.target_mse} on the unmeasured rows: "
          + ", ".join(f"{k} {v if v is not None else 'not reached'}" for k, v in reached.items()))
    return 0


# -- meters -----------------------------------------------------------------------------------------------


@_meter_errors_are_user_errors
def _meters(args: argparse.Namespace) -> int:
    from protran.meters import available_meters

    rows = [{"meter": name, "available": ok, "reason": reason} for name, ok, reason in available_meters()]
    if args.json:
        common.print_json(rows)
    else:
        common.print_table([[r["meter"], "yes" if r["available"] else "no", r["reason"]] for r in rows],
                           ["meter", "available", "detail"])
    return 0


@_meter_errors_are_user_errors
def _meter_server(args: argparse.Namespace) -> int:
    from protran.meters import run_meter_server

    options = dict(item.split("=", 1) for item in args.option)
    run_meter_server(args.meter, host=args.host, port=args.port, token=args.token, **options)
    return 0


# -- parser ------------------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


# The defaults of protran._pareto.SearchSettings, spelled out so that --help needs no numpy (tested).
_SEARCH_DEFAULTS = {"pop_size": 300, "n_generations": 40}


def _add_model_arguments(parser: argparse.ArgumentParser, accuracy_required: bool) -> None:
    """The inputs that decide the fitted surrogates; ``pareto`` and ``predict`` share them."""
    parser.add_argument("--profile", nargs="+", action="extend", metavar="FILE", required=accuracy_required,
                        help="hardware profiles: ProTran dataset.json files or run stores (one device each, "
                             "or every device of a store); repeatable")
    parser.add_argument("--accuracy", required=accuracy_required, metavar="FILE",
                        help="accuracy data: the reference JSON (glue_pretrain_16.json), a CSV "
                             "(model_dict or embedding, task, score, pretrain_loss) or a run store")
    parser.add_argument("--task", default="glue", help="accuracy task to model (default glue)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the surrogates and the search (default 0)")


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    """What is measured and how; ``profile`` and ``measure`` share them."""
    parser.add_argument("--device", required=True, help="a name for this board, e.g. rpi4 or jetson-orin-cpu")
    parser.add_argument("--runtime", default="onnxruntime", choices=("torch", "onnxruntime", "openvino"))
    parser.add_argument("--meter", default="auto",
                        help="auto, none, ina219, hwmon, ina3221, rapl, nvml, powermetrics, tegrastats or "
                             "remote:HOST:PORT (default auto: whatever exists, else latency only)")
    parser.add_argument("--batch-size", type=common.positive_int, default=1)
    parser.add_argument("--seq-len", type=common.positive_int, default=128)
    parser.add_argument("--threads", type=common.positive_int, default=1, help="inference threads (default 1)")
    parser.add_argument("--target-rel-ci", type=float, default=0.02,
                        help="repeat until the median latency's 95%% CI half-width is within this fraction")
    parser.add_argument("--time-cap-s", type=float, default=30.0, help="longest timed window per architecture")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="kill a measurement after this long")
    parser.add_argument("--vocab-size", type=common.positive_int,
                        help="vocabulary of the measured models (default 30522; it only sizes the embedding table)")


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="run store file (default OUT/DEVICE.sqlite)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run with the same settings")


def build_parser() -> argparse.ArgumentParser:
    parser = common.make_parser(
        PROG,
        "Measure and predict the latency, energy and peak power of FlexiBERT 2.0 architectures.",
        "protran profile --device my-laptop --runtime onnxruntime --max-samples 32 --out runs/",
    )
    sub = common.add_subcommands(parser)

    p = common.add_command(
        sub, "profile", _profile, "profile this machine: measure, fit surrogates, repeat until they converge",
        "protran profile --device my-laptop --runtime onnxruntime --meter auto --max-samples 48 --out runs/\n"
        "protran profile --device my-laptop --out runs/ --resume   # after Ctrl-C",
    )
    _add_measurement_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-samples", type=common.positive_int, default=16,
                   help="Latin-hypercube architectures measured first (default 16)")
    p.add_argument("--pool-size", type=common.positive_int, default=64,
                   help="fresh random candidates scored per iteration (default 64)")
    p.add_argument("--target-mse", type=float, default=0.005,
                   help="stop when the cross-validated MSE of every max-normalised measure is at most this")
    p.add_argument("--patience", type=common.positive_int, default=3,
                   help="consecutive passing checks needed to stop (default 3)")
    p.add_argument("--max-samples", type=common.positive_int, default=96)
    p.add_argument("--max-hours", type=float, default=4.0)
    p.add_argument("--surrogate", default="additive",
                   help="surrogate model: additive (default), gbdt, adaboost, dt, lr, gpr, svr or mlp")
    p.add_argument("--features", default="costs", choices=("embedding", "analytic", "both", "costs"),
                   help="architecture features (default costs; additive needs costs or analytic)")
    p.add_argument("--acquisition", default="uncertainty", choices=("uncertainty", "random"))
    p.add_argument("--space", help="design-space YAML to sample from (default: FlexiBERT 2.0)")
    p.add_argument("--out", default="runs", help="folder for the run store and the fitted surrogates")
    _add_store_arguments(p)

    p = common.add_command(
        sub, "measure", _measure,
        "measure given architectures as one run (a held-out test set, a test-retest repeat); no surrogates",
        "flexibert sample -n 32 --method random --seed 1 --out holdout/\n"
        "protran measure holdout/ --device my-laptop --runtime onnxruntime --purpose holdout --out runs/",
    )
    p.add_argument("model_dicts", nargs="+", help="model_dict JSON files (or folders of them), measured in order")
    _add_measurement_arguments(p)
    p.add_argument("--purpose", default="listed",
                   help="a word stored with the run to tell it apart, e.g. holdout or retest (default listed)")
    p.add_argument("--out", default="runs", help="folder for the run store (default runs)")
    _add_store_arguments(p)

    p = common.add_command(
        sub, "predict", _predict,
        "predict latency, energy, peak power (and accuracy) of architectures from saved or fitted surrogates",
        "protran predict --surrogates runs/ arch.json\n"
        "protran predict --profile ../shared/data/protran/cpu_rpi_b1_r1.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json arch.json",
    )
    p.add_argument("model_dicts", nargs="+", help="model_dict JSON files (or folders of them)")
    p.add_argument("--surrogates", help="folder holding surrogates saved by `protran profile`")
    _add_model_arguments(p, accuracy_required=False)

    p = common.add_command(
        sub, "pareto", _pareto,
        "predicted Pareto frontiers of accuracy against latency, energy or peak power, per device",
        "protran pareto --profile ../shared/data/protran/*.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json --plot frontiers.png\n"
        "protran pareto --profile runs/my-board.sqlite --accuracy scores.csv --measure energy "
        "--max-latency-ms 50 --json",
        description="For every device with a hardware profile, search the whole design space (NSGA-II over the "
                    "embedding) for the architectures no other beats on both predicted accuracy and the predicted "
                    "measure. Values are in the profile's units: seconds or joules per sequence, watts.",
    )
    _add_model_arguments(p, accuracy_required=True)
    p.add_argument("--measure", type=common.comma_list(("latency", "energy", "peak_power")),
                   default=["latency", "energy", "peak_power"],
                   help="latency, energy and/or peak_power, comma-separated (default: all three)")
    p.add_argument("--plot", help="write a plot with one frontier per device and a panel per measure (PNG, PDF, SVG)")
    p.add_argument("--max-latency-ms", type=_positive_float,
                   help="keep architectures predicted to take at most this many milliseconds per sequence")
    p.add_argument("--max-energy-j", type=_positive_float,
                   help="keep architectures predicted to use at most this many joules per sequence")
    p.add_argument("--max-peak-power-w", type=_positive_float,
                   help="keep architectures predicted to peak at no more than this many watts")
    p.add_argument("--max-params", type=common.positive_int,
                   help="keep architectures with at most this many parameters")
    p.add_argument("--max-layers", type=common.positive_int, help="keep architectures with at most this many layers")
    p.add_argument("--pop-size", type=common.positive_int,
                   help=f"NSGA-II population per measure (default {_SEARCH_DEFAULTS['pop_size']})")
    p.add_argument("--generations", type=common.positive_int,
                   help=f"NSGA-II generations per device; its measures are searched together "
                        f"(default {_SEARCH_DEFAULTS['n_generations']})")

    p = common.add_command(
        sub, "import", _import, "import a ProTran dataset.json into a run store",
        "protran import ../shared/data/protran/cpu_rpi_b1_r1.json --store boards.sqlite",
    )
    p.add_argument("dataset")
    p.add_argument("--store", required=True)
    p.add_argument("--device", help="device name (default: the file name without .json)")
    p.add_argument("--accuracy", action="store_true",
                   help="the file holds accuracy data (reference glue_pretrain JSON or a CSV of model_dict or "
                        "embedding, task, score, pretrain_loss), not measurements")

    p = common.add_command(
        sub, "proxy", _proxy,
        "rank architectures without GLUE: MLM loss after a short fixed pre-training budget on a local corpus",
        "protran proxy archs/ --store runs/accuracy.sqlite --steps 200\n"
        "protran pareto --profile runs/my-board.sqlite --accuracy runs/accuracy.sqlite --task mlm_proxy",
        description="Pre-trains every architecture from the same seed, with the same batches and masks, for the "
                    "same number of steps, and stores its validation MLM loss as task 'mlm_proxy' in the run store, "
                    "with score exp(-loss) (the geometric-mean probability of the masked token: higher is better).",
    )
    p.add_argument("model_dicts", nargs="+", help="model_dict JSON files (or folders of them)")
    p.add_argument("--store", required=True, help="run store to keep the results in")
    p.add_argument("--steps", type=common.positive_int, default=200, help="pre-training steps (default 200)")
    p.add_argument("--batch-size", type=common.positive_int, default=16, help="blocks per step (default 16)")
    p.add_argument("--seq-len", type=common.positive_int, default=64, help="tokens per block (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=common.positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--corpus", help="a folder with train.txt (and validation.txt), or text files, tokenised with "
                                    "the shipped tokenizer (default: the shipped datasets/corpus)")

    p = common.add_command(
        sub, "export", _export, "export a run (or the whole store) as a ProTran dataset.json",
        "protran export --store runs/my-laptop.sqlite --run 1 my-laptop.json",
    )
    p.add_argument("output")
    p.add_argument("--store", required=True)
    p.add_argument("--run", type=common.positive_int, help="run id (default: every run of the store)")

    p = common.add_command(
        sub, "replay", _replay, "replay the active-learning loop on recorded measurements",
        "protran replay ../shared/data/protran/cpu_rpi_b1_r1.json --seed 0 --json",
    )
    p.add_argument("dataset", help="ProTran dataset.json or run store")
    p.add_argument("--prior", action="append", default=[], help="other boards' data for transfer (repeatable)")
    p.add_argument("--seed-samples", type=common.positive_int, default=16)
    p.add_argument("--target-mse", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--surrogate", default=None, help="surrogate model (default: the benchmarked best)")
    p.add_argument("--acquisition", default=None, help="uncertainty or random (default: the benchmarked best)")
    p.add_argument("--max-samples", type=common.positive_int, default=None)

    common.add_command(sub, "meters", _meters, "list the power meters and whether this machine has them",
                       "protran meters")

    p = common.add_command(
        sub, "meter-server", _meter_server,
        "stream power samples from the host that holds the sensor to a profiler elsewhere",
        "protran meter-server --meter ina219 --option address=0x45 --port 9555\n"
        "protran meter-server --meter ina219 --host 0.0.0.0 --port 9555 --token s3cret",
    )
    p.add_argument("--meter", required=True, help="the local meter to serve, e.g. ina219")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=9555)
    p.add_argument("--token", help="shared secret; required when listening beyond loopback")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="meter option, e.g. address=0x45 or shunt_ohms=0.1 (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
