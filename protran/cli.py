"""The ``protran`` command: profile a board, predict costs, move data in and out, replay the loop."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flexibert import clitools
from protran.surrogates import FEATURE_SETS, SURROGATE_NAMES
from protran.vocabulary import (
    ACQUISITIONS,
    DEFAULT_FEATURES,
    DEFAULT_SURROGATE,
    DEFAULT_TRAINING_FREE_METRIC,
    DRIFT_CORRECTIONS,
    MEASURE_NAMES,
    MEASURES,
    METER_NAMES,
    RUNTIME_NAMES,
    TRAINING_FREE_METRICS,
    name_of,
)

PROG = "protran"


def _meter_errors_are_user_errors(handler):
    """A missing or unreadable sensor is the user's to fix: one line, exit 2, no traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from protran.meters import MeterError

        try:
            return handler(args)
        except MeterError as problem:
            raise clitools.CliError(str(problem)) from None

    return wrapped


# -- profile --------------------------------------------------------------------------------------


@_meter_errors_are_user_errors
def _profile(args: argparse.Namespace) -> int:
    from protran._fleet_cli import check_executor
    from protran._profile import ProfileConfig, load_prior, profile
    from protran._transfer import PRIOR_SEED_SAMPLES

    check_executor(args)
    seed_samples = args.seed_samples or (PRIOR_SEED_SAMPLES if args.prior else 16)
    config = ProfileConfig(
        **_measurement_settings(args), seed=args.seed, seed_samples=seed_samples, prior_paths=tuple(args.prior),
        pool_size=args.pool_size, target_mse=args.target_mse, patience=args.patience,
        max_samples=args.max_samples, max_hours=args.max_hours, surrogate=args.surrogate,
        features=args.features, acquisition=args.acquisition, space_path=args.space, recheck=not args.no_recheck,
    )
    if args.executor == "ray":  # every --device on its board of a Ray cluster (protran._fleet)
        from protran._fleet_cli import profile_fleet

        return profile_fleet(args, config)
    store_path = _checked_store_path(args)
    prior = load_prior(config)  # other boards' files are read, and refused, before the meter is touched
    meter = _detect_meter(args.meter)
    with clitools.resumable(_resume_hint(store_path)), \
            clitools.Progress(config.max_samples, "profiling", "arch") as bar:
        summary = profile(config, store_path, args.out, resume=args.resume, meter=meter,
                          progress=_ProfileProgress(bar), take_over=args.take_over, prior=prior)
    result = {**summary.to_dict(), "store": str(store_path)}
    if args.json:
        clitools.print_json(result)
    else:
        print(f"run {summary.run_id} on {summary.device} ({summary.runtime}): {summary.measured_ok} measured, "
              f"{summary.failed} failed, {summary.unstable} unstable; stopped: {summary.stop_reason}")
        for measure, mse in summary.cv_mse.items():
            shown = f"{mse:.5f}" if mse is not None else "n/a (too few rows)"
            print(f"  {measure:<13} cross-validated MSE (max-normalised) {shown}")
        missing = [m.field for m in MEASURES if m.needs_meter and m.field not in summary.measures]
        if missing:
            print(f"  {', '.join(missing)}: not available (no power meter)")
        for measure in summary.not_predictable:
            print(f"  {measure}: cross-validated R² {summary.predictability_r2[measure]:.2f}, barely predictable "
                  "from the architecture on this board; not chased")
        if summary.reference_drift is not None:
            verdict = "above" if summary.drift_exceeded else "within"
            print(f"  reference drift {summary.reference_drift:.1%} ({verdict} the {config.drift_threshold:.1%} "
                  "threshold; latencies corrected for it)")
        for measure, path in summary.surrogate_paths.items():
            print(f"  surrogate {measure}: {path}")
        print(f"  store: {store_path}")
    return 0


def _resume_hint(store_path: Path) -> str:
    return f"every finished measurement is in {store_path}; run the same command with --resume to continue"


def _measurement_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ProfileConfig fields that ``profile`` and ``measure`` share: what is measured and how."""
    return {"device": args.device, "runtime": args.runtime, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "num_threads": args.threads, "meter": args.meter, "target_rel_ci": args.target_rel_ci,
            "time_cap_s": args.time_cap_s, "timeout_s": args.timeout_s, "vocab_size": args.vocab_size,
            "cpus": args.cpus, "reference_every": args.reference_every, "drift_threshold": args.drift_threshold,
            "drift_correction": args.drift_correction, "remeasure": not args.no_remeasure,
            "processes": args.processes}


def _detect_meter(name: str):
    from protran.meters import detect_meter

    meter = detect_meter(name)
    if meter is None and name != "none":
        print(f"{PROG}: no power meter found on this machine: measuring latency only; energy and peak power "
              "are recorded as not available", file=sys.stderr)
    return meter


def _checked_store_path(args: argparse.Namespace) -> Path:
    """The run store's path, checked before anything is measured or written: ``--out`` is a folder (or
    absent), and an existing store opens and is one this version can write."""
    from protran._store import RunStore

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise clitools.CliError(f"--out {out}: exists and is not a folder; give a folder for the run store "
                                "and the surrogates")
    path = Path(args.store or out / f"{args.device}.sqlite")
    if path.exists():
        RunStore(path, readonly=True).close()  # a damaged, foreign or newer store fails here, untouched
    return path


# -- measure ----------------------------------------------------------------------------------------


@_meter_errors_are_user_errors
def _measure(args: argparse.Namespace) -> int:
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures
    from protran._profile import ProfileConfig, measure_listed
    from protran._store import RunStore

    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    config = ProfileConfig(**_measurement_settings(args), max_samples=max(len(specs), 16))
    store_path = _checked_store_path(args)
    meter = _detect_meter(args.meter)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with clitools.resumable(_resume_hint(store_path)), \
            clitools.Progress(len(specs), "measuring", "arch") as bar, RunStore(store_path) as store:
        summary = measure_listed(config, specs, store, purpose=args.purpose, resume=args.resume, meter=meter,
                                 progress=_ProfileProgress(bar), take_over=args.take_over)
    result = {**summary.to_dict(), "store": str(store_path)}
    if args.json:
        clitools.print_json(result)
    else:
        print(f"run {summary.run_id} ({summary.purpose}) on {summary.device} ({summary.runtime}): "
              f"{summary.measured_ok} of {summary.requested} measured, {summary.unstable} unstable, "
              f"{summary.failed} failed; store: {store_path}")
    return 0


class _ProfileProgress:
    """The profiler's events as progress: one step per measurement (architecture, status, latency, the
    measurements that succeeded so far) and, once surrogates are fitted, their cross-validated error."""

    def __init__(self, progress: clitools.Progress) -> None:
        self._progress = progress

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "started":
            self._progress.resume_from(event["n_attempts"])
        elif kind == "measured":
            self._progress.step(_measured_detail(event), done=event["n_attempts"])
        elif kind == "fitted":
            self._progress.note(", ".join([f"{event['n_ok']} ok", *_mse_details(event["cv_mse"])]))


def _measured_detail(event: dict[str, Any]) -> str:
    result = event["result"]
    latency = "n/a" if result.latency_s is None else f"{result.latency_s * 1e3:.2f} ms"
    return ", ".join([f"{result.arch_hash[:8]} {result.status}", f"latency {latency}", f"{event['n_ok']} ok",
                      *_mse_details(event["cv_mse"])])


def _mse_details(cv_mse: dict[str, float]) -> list[str]:
    """The surrogates' cross-validated errors, by short measure name (``mse latency 0.0012``)."""
    return [f"mse {name_of(measure)} {value:.4f}" for measure, value in cv_mse.items()]


# -- predict ----------------------------------------------------------------------------------------


def _predict(args: argparse.Namespace) -> int:
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures

    if args.surrogates is not None and args.profile is not None:
        raise clitools.CliError("give --surrogates DIR or --profile FILE..., not both")
    if args.surrogates is None and args.profile is None and args.accuracy is None:
        raise clitools.CliError("give --accuracy FILE... (accuracy), --surrogates DIR (saved by `protran profile`) "
                                "or --profile FILE... (fit hardware surrogates on measured profiles)")
    _architectures_after_accuracy(args)
    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    models = _predict_models(args)
    if args.accuracy is not None:
        return _print_accuracy_predictions(args, models, specs)
    rows = [row for device in models.devices for row in models.predict(specs, device)]
    if args.json:
        clitools.print_json(rows)
        return 0
    header = ["hash", "device", "measure", "prediction", "std"]
    table = [[row["hash"][:8], row["device"], measure, f"{value['mean']:.6g}", f"{value['std']:.3g}"]
             for row in rows for measure, value in row["predicted"].items()]
    clitools.print_table(table, header)
    return 0


def _architectures_after_accuracy(args: argparse.Namespace) -> None:
    """``--accuracy A.json B.csv arch.json``: argparse hands every path to --accuracy; the first folder
    or model_dict file and all after it are the architectures."""
    from protran._files import FileKind, file_kind

    for index, path in enumerate(args.accuracy or []):
        if Path(path).is_dir() or (Path(path).is_file() and file_kind(path) is FileKind.MODEL_DICT):
            args.model_dicts = args.accuracy[index:] + args.model_dicts
            args.accuracy = args.accuracy[:index]
            if not args.accuracy:
                raise clitools.CliError(f"--accuracy {path}: that is an architecture; give an accuracy file first")
            break
    if not args.model_dicts:
        raise clitools.CliError("give at least one architecture: a model_dict JSON file or a folder of them")


def _predict_models(args: argparse.Namespace):
    """The models ``predict`` asks: fitted on --profile, loaded from --surrogates, or accuracy alone."""
    import dataclasses

    from protran.models import fit_models, load_models

    if args.surrogates is None:
        return _fitted_models(args, accuracy_required=False)
    models = load_models(args.surrogates)
    if args.accuracy is None:
        return models
    accuracy = fit_models([], _accuracy_records(args), task=args.task, seed=args.seed,
                          accuracy_source=args.accuracy_source)
    return dataclasses.replace(models, accuracy_model=accuracy.accuracy_model, accuracy_specs=accuracy.accuracy_specs,
                               accuracy_scores=accuracy.accuracy_scores, task=accuracy.task)


def _print_accuracy_predictions(args: argparse.Namespace, models, specs: list) -> int:
    """``{"predictions": [{"hash", "accuracy", "accuracy_std", "extrapolated", ...}]}``: one row per
    architecture, or per (architecture, device) with the hardware rows' fields when there are devices."""
    from protran._accuracy_model import prediction_rows

    if models.devices:
        rows = []
        for row in (row for device in models.devices for row in models.predict(specs, device)):
            accuracy = row["predicted"]["accuracy"]
            rows.append({"hash": row["hash"], "accuracy": accuracy["mean"], "accuracy_std": accuracy["std"],
                         "extrapolated": accuracy["extrapolated"], **{k: v for k, v in row.items() if k != "hash"}})
    else:
        rows = prediction_rows(models.accuracy_model, specs)
    if args.json:
        clitools.print_json({"predictions": rows})
        return 0
    target = models.accuracy_model.target
    table = [[row["hash"][:8], row.get("device", ""), f"{row['accuracy']:.4g} ± {row['accuracy_std']:.2g}",
              "yes" if row["extrapolated"] else ""] for row in rows]
    clitools.print_table(table, ["hash", "device", f"{target.task} ({target.source} scale)", "extrapolated"])
    return 0


def _accuracy_records(args: argparse.Namespace) -> list:
    from protran._accuracy import load_accuracy_files

    return load_accuracy_files(args.accuracy)


def _fitted_models(args: argparse.Namespace, accuracy_required: bool):
    """The accuracy and hardware surrogates of ``pareto`` and ``predict --profile``: the same files,
    task and seed give the same models, so both commands predict the same values."""
    from protran.models import fit_models, load_profiles

    profiles = load_profiles(args.profile) if args.profile is not None else []
    if args.accuracy is None and accuracy_required:
        raise clitools.CliError("--accuracy is required")
    records = _accuracy_records(args) if args.accuracy is not None else None
    return fit_models(profiles, records, task=args.task, seed=args.seed, accuracy_source=args.accuracy_source)


# -- pareto -------------------------------------------------------------------------------------------


def _pareto(args: argparse.Namespace) -> int:
    from protran._pareto import SearchSettings
    from protran._plots import check_plot_path, plot_frontiers
    from protran.models import Constraints

    constraints = Constraints(
        max_latency_s=args.max_latency_s, max_energy_j=args.max_energy_j, max_peak_power_w=args.max_peak_power_w,
        max_params=args.max_params, max_layers=args.max_layers,
    )
    chosen = {"pop_size": args.pop_size, "n_generations": args.generations}
    settings = SearchSettings(seed=args.seed, **{key: value for key, value in chosen.items() if value is not None})
    if args.plot:
        check_plot_path(args.plot)  # before the search, not after it
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
        raise clitools.CliError("no device has the measurements these frontiers and constraints need")
    frontiers = [frontier for frontier in _search_with_progress(models, devices, constraints, settings)
                 if frontier.measure in args.measure]
    for warning in _extrapolation_warnings(models, frontiers):  # on stderr: the JSON shape is kept
        _note(f"warning: {warning}")
    suggestions = None if args.suggest_training is None else _suggest(args, models, frontiers, constraints)
    if args.plot:
        plot_frontiers(frontiers, args.plot)
    if args.json:
        result: dict[str, Any] = {"frontiers": [frontier.to_dict() for frontier in frontiers]}
        if suggestions is not None:
            result["suggested_training"] = [suggestion.to_dict() for suggestion in suggestions]
        clitools.print_json(result)
        return 0
    for frontier in frontiers:
        _print_frontier(frontier)
    if suggestions is not None:
        _print_suggestions(suggestions, len(frontiers))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# A frontier with at least this share of its points outside the scored or the profiled architectures
# is mostly extrapolation, which the user should hear about, not find in a per-point flag.
_EXTRAPOLATED_SHARE_WARNING = 0.5


def _extrapolation_warnings(models, frontiers: list) -> list[str]:
    """One line per frontier that lies mostly outside the data it was predicted from: architectures
    unlike the scored ones (accuracy extrapolated) or unlike the ones measured on its device."""
    warnings = []
    for frontier in frontiers:
        points = frontier.points
        if not points:
            continue
        where = f"{frontier.device} · {frontier.measure}"
        unscored = sum(point.extrapolated for point in points)
        if unscored >= _EXTRAPOLATED_SHARE_WARNING * len(points):
            warnings.append(f"{where}: {unscored} of {len(points)} frontier points lie outside the scored "
                            "architectures, so their accuracy is extrapolated; score architectures like them "
                            "(protran pareto --suggest-training K names which)")
        outside = models.outside_profiled([point.spec for point in points], frontier.device)
        if outside is not None and outside.sum() >= _EXTRAPOLATED_SHARE_WARNING * len(points):
            warnings.append(f"{where}: {int(outside.sum())} of {len(points)} frontier points are larger or smaller "
                            f"than every architecture measured on {frontier.device}, so their {frontier.measure} "
                            "is extrapolated; measure some of them there (protran measure)")
    return warnings


def _note(message: str) -> None:
    print(f"{PROG} pareto: {message}", file=sys.stderr)


def _search_with_progress(models, devices: list[str], constraints, settings) -> list:
    """Every device's frontiers (all its measures, searched together), one step per generation."""
    from protran._pareto import search_frontiers

    frontiers = []
    with clitools.Progress(len(devices) * settings.n_generations, "pareto", "gen") as bar:
        for index, device in enumerate(devices):

            def progress(event: dict[str, Any], start: int = index * settings.n_generations) -> None:
                bar.step(f"{event['device']}, {event['evaluations']} architectures",
                         done=start + event["generation"])

            frontiers += search_frontiers(models, device, constraints, settings, progress=progress)
    return frontiers


def _suggest(args: argparse.Namespace, models, frontiers: list, constraints) -> list:
    """The architectures to train next; every architecture scored on the task in the accuracy
    files (any source) counts as scored."""
    from protran._suggest import suggest_training

    scored = {record.spec for record in _accuracy_records(args) if record.task == models.task
              and record.score is not None}
    return suggest_training(models, frontiers, args.suggest_training, seed=args.seed, constraints=constraints,
                            scored=scored | set(models.accuracy_specs))


def _print_suggestions(suggestions: list, n_frontiers: int) -> None:
    print(f"train next: {len(suggestions)} architecture(s), by expected hypervolume gain summed over "
          f"{n_frontiers} frontier(s), each given the ones above it")
    rows = [[s.arch_hash[:8], s.spec.num_layers, f"{s.accuracy:.4f} ± {s.accuracy_std:.4f}",
             "yes" if s.extrapolated else "", f"{s.expected_gain:.4g}"] for s in suggestions]
    clitools.print_table(rows, ["hash", "layers", "accuracy", "extrapolated", "expected gain"])


def _print_frontier(frontier) -> None:
    from protran._pareto import REFERENCE_POINT
    from protran.models import target_parts
    from protran.vocabulary import measure

    unit = measure(frontier.measure).unit
    # the runtime is named unless the target's label already names it (device[runtime])
    named = frontier.runtime is None or target_parts(frontier.device)[1] == frontier.runtime
    runtime = "" if named else f" ({frontier.runtime})"
    print(f"{frontier.device}{runtime} · accuracy vs {frontier.measure.replace('_', ' ')}: "
          f"{len(frontier.points)} points, hypervolume {frontier.hypervolume:.4f} "
          f"(normalised, reference point {REFERENCE_POINT})")
    rows = [[point.arch_hash[:8], point.spec.num_layers, f"{point.accuracy:.4f} ± {point.accuracy_std:.4f}",
             f"{point.value:.4g} ± {point.value_std:.2g}"] for point in frontier.points]
    clitools.print_table(rows, ["hash", "layers", "accuracy", f"{frontier.measure} ({unit})"])
    print()


# -- import / export ------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    from protran._store import RunStore, read_protran_json

    if args.accuracy:
        return _import_accuracy(args)
    read_protran_json(args.dataset)  # the whole file is valid before the store is opened (or created)
    with _removed_if_new_and_failed(args.store), RunStore(args.store) as store:
        run_id = store.import_protran_json(args.dataset, device=args.device)
        count = len(store.measurements(run_id=run_id))
        device = store.get_run(run_id).device
    result = {"run_id": run_id, "device": device, "rows": count, "store": args.store}
    if args.json:
        clitools.print_json(result)
    else:
        print(f"imported {count} rows of {device} into {args.store} as run {run_id}")
    return 0


@contextlib.contextmanager
def _removed_if_new_and_failed(store: str | Path) -> Iterator[None]:
    """A store this command creates and then fails to fill (a full disk, Ctrl-C) is removed, so a
    failed import leaves the disk as it found it; an existing store keeps everything it held."""
    from protran._store import remove_database_files

    path = Path(store)
    new = not path.exists()
    try:
        yield
    except BaseException:
        if new:
            remove_database_files(path)
        raise


def _import_accuracy(args: argparse.Namespace) -> int:
    from protran._accuracy import AccuracyFormatError, import_accuracy, load_accuracy

    try:
        records = load_accuracy(args.dataset)
        added = import_accuracy(args.store, args.dataset)
    except (AccuracyFormatError, FileNotFoundError) as problem:
        raise clitools.CliError(str(problem)) from None
    tasks = sorted({record.task for record in records})
    result = {"records": len(records), "added": added, "tasks": tasks, "store": args.store}
    if args.json:
        clitools.print_json(result)
    else:
        print(f"imported {added} new of {len(records)} accuracy records ({', '.join(tasks)}) into {args.store}")
    return 0


# -- proxy --------------------------------------------------------------------------------------------


def _training_free(args: argparse.Namespace) -> int:
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures
    from protran._training_free import SIZE_METRICS, training_free_scores

    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    if args.metric in SIZE_METRICS:
        rows = training_free_scores(specs, args.metric, seed=args.seed)
    else:  # seconds per architecture: show progress
        import torch

        torch.set_num_threads(args.threads)
        with clitools.Progress(len(specs), "training-free", "arch") as bar:
            rows = training_free_scores(specs, args.metric, seed=args.seed,
                                        progress=lambda done, total: bar.step(done=done))
    if args.json:
        clitools.print_json({"scores": [{"hash": row["hash"], "score": row["score"]} for row in rows]})
    else:
        clitools.print_table([[row["hash"][:8], f"{row['score']:.6g}"] for row in rows], ["hash", args.metric])
    return 0


def _proxy(args: argparse.Namespace) -> int:
    if args.metric not in TRAINING_FREE_METRICS:
        raise clitools.CliError(f"unknown --metric {args.metric!r}; "
                                f"choose one of {clitools.one_of(TRAINING_FREE_METRICS)}")
    if args.training_free:
        return _training_free(args)
    if args.store is None:
        raise clitools.CliError("--store is required (the run store to keep the losses in), unless --training-free")
    from flexibert import DesignSpace
    from flexibert.cli import read_architectures
    from protran._proxy import ProxyConfig

    specs = [spec for _, spec in read_architectures(args.model_dicts, DesignSpace.default())]
    try:
        config = ProxyConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    except ValueError as problem:
        raise clitools.CliError(str(problem)) from None
    if args.executor == "ray":  # one Ray task per architecture (protran._fleet)
        from protran._fleet_cli import proxy_fleet

        results = proxy_fleet(args, specs, config)
    else:
        results = _proxy_here(args, specs, config)
    rows = [{"hash": r.arch_hash, "proxy_loss": r.eval_loss, "steps": r.steps, "seconds": r.elapsed_s}
            for r in results]
    if args.json:
        clitools.print_json(rows)
    else:
        clitools.print_table([[r["hash"][:8], f"{r['proxy_loss']:.4f}", f"{r['seconds']:.0f}"] for r in rows],
                             ["hash", "proxy loss", "seconds"])
        print(f"stored as task 'mlm_proxy' in {args.store}")
    return 0


def _proxy_here(args: argparse.Namespace, specs: list, config: Any) -> list:
    """The proxies trained on this machine, one after another, each loss committed as it arrives."""
    import torch

    from protran._proxy import load_proxy_corpus, measure_proxies
    from protran._store import RunStore

    torch.set_num_threads(args.threads)
    corpus = load_proxy_corpus(config, args.corpus)
    kept = (f"every finished architecture's loss is in {args.store}; run the command again with the others "
            "to continue")
    with clitools.resumable(kept), clitools.Progress(len(specs), "proxy", "arch") as bar, \
            RunStore(args.store) as store:
        # Each result is committed as soon as it exists, so an interrupted run keeps what it measured.
        def keep(done: int, total: int, result) -> None:
            store.add_accuracy([result.to_record(specs[done - 1], config)])
            bar.step(f"{result.arch_hash[:8]}: validation MLM loss {result.eval_loss:.4f} ({result.elapsed_s:.0f} s)",
                     done=done)

        return measure_proxies(specs, config, corpus=corpus, progress=keep)


def _correct(args: argparse.Namespace) -> int:
    from protran._profile import correct_run
    from protran._store import RunStore

    RunStore(args.store, readonly=True).close()  # a missing or damaged store is refused, untouched
    with RunStore(args.store) as store:
        run_ids = [args.run] if args.run else [run.id for run in store.runs()]
        for run_id in run_ids:
            store.get_run(run_id)  # an unknown run is refused before anything is written
        results = [correct_run(store, run_id, args.drift_threshold, args.drift_correction) for run_id in run_ids]
    if args.json:
        clitools.print_json(results)
    else:
        for r in results:
            drift = "no references" if r["reference_drift"] is None else f"reference drift {r['reference_drift']:.1%}"
            print(f"run {r['run_id']}: {r['rows']} rows corrected ({args.drift_correction}) with threshold "
                  f"{args.drift_threshold:.1%}, "
                  f"{r['changed']} changed; {drift}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from protran._store import RunStore

    with RunStore(args.store, readonly=True) as store:
        count = store.export_protran_json(args.output, run_id=args.run)
    if args.json:
        clitools.print_json({"rows": count, "output": args.output})
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
        clitools.print_json(rows)
    else:
        clitools.print_table([[r["meter"], "yes" if r["available"] else "no", r["reason"]] for r in rows],
                             ["meter", "available", "detail"])
    return 0


@_meter_errors_are_user_errors
def _meter_server(args: argparse.Namespace) -> int:
    from protran.meters import run_meter_server

    options = dict(args.option)
    run_meter_server(args.meter, host=args.host, port=args.port, token=args.token, **options)
    return 0


# -- parser ------------------------------------------------------------------------------------------------


def _port(text: str) -> int:
    port = clitools.positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE, e.g. address=0x45")
    return key.strip(), value


class _DeprecatedMilliseconds(argparse.Action):
    """``--max-latency-ms``, kept for old scripts: stored in seconds as ``--max-latency-s``, with a note."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        seconds = value / 1e3
        print(f"{PROG}: {option_string} is deprecated; use --max-latency-s {seconds:g}", file=sys.stderr)
        setattr(namespace, self.dest, seconds)


# The defaults of protran._pareto.SearchSettings, spelled out so that --help needs no numpy (tested).
_SEARCH_DEFAULTS = {"pop_size": 300, "n_generations": 40}


def _add_model_arguments(parser: argparse.ArgumentParser, accuracy_required: bool) -> None:
    """The inputs that decide the fitted surrogates; ``pareto`` and ``predict`` share them."""
    parser.add_argument("--profile", nargs="+", action="extend", metavar="FILE", required=accuracy_required,
                        help="hardware profiles: ProTran dataset.json files or run stores (one device each, "
                             "or every device of a store); repeatable")
    parser.add_argument("--accuracy", required=accuracy_required, metavar="FILE", nargs="+", action="extend",
                        help="accuracy data, one or more files learnt from together: NAS-Bench-BERT JSON, the "
                             "reference JSON (glue_pretrain_16.json), a CSV (model_dict or embedding, task, score, "
                             "pretrain_loss) or a run store")
    parser.add_argument("--task", default="glue", help="accuracy task to model (default glue)")
    parser.add_argument("--accuracy-source", metavar="SOURCE",
                        help="report accuracy on this source's scale (default: the source with the most scored "
                             "architectures, e.g. nasbench_bert: GLUE 0-100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the surrogates and the search (default 0)")


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    """What is measured and how; ``profile`` and ``measure`` share them."""
    from protran._fleet_cli import DeviceNames

    parser.add_argument("--device", required=True, action=DeviceNames,
                        help="a name for this board, e.g. rpi4 or jetson-orin-cpu (profile --executor ray: "
                             "repeatable, one board each)")
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIME_NAMES)
    parser.add_argument("--meter", default="auto",
                        help=f"{clitools.one_of(METER_NAMES)} (default auto: whatever exists, else latency only)")
    parser.add_argument("--batch-size", type=clitools.positive_int, default=1)
    parser.add_argument("--seq-len", type=clitools.positive_int, default=128)
    parser.add_argument("--threads", type=clitools.positive_int, default=1, help="inference threads (default 1)")
    parser.add_argument("--target-rel-ci", type=clitools.positive_float, default=0.02,
                        help="repeat until the median latency's 95%% CI half-width is within this fraction")
    parser.add_argument("--time-cap-s", type=clitools.positive_float, default=30.0,
                        help="longest timed window per architecture")
    parser.add_argument("--timeout-s", type=clitools.positive_float, default=600.0,
                        help="kill a measurement after this long")
    parser.add_argument("--vocab-size", type=clitools.positive_int,
                        help="vocabulary of the measured models (default 30522; it only sizes the embedding table)")
    parser.add_argument("--cpus", type=clitools.cpu_list,
                        help="pin the measured process and its threads to these CPUs, e.g. 2,3 or 0-3 (default: "
                             "no pinning); --threads must not exceed their number")
    parser.add_argument("--reference-every", type=clitools.non_negative_int, default=8, metavar="N",
                        help="measure a fixed reference architecture at the start and after every N measurements, "
                             "and correct latencies for the machine's drift (default 8; 0: off)")
    parser.add_argument("--drift-threshold", type=clitools.non_negative_float, default=0.05, metavar="F",
                        help="beyond this fraction from its baseline, the reference's drift corrects latencies "
                             "and is warned about (default 0.05; 0: always correct)")
    _add_drift_correction(parser)
    parser.add_argument("--processes", type=clitools.positive_int, default=1, metavar="N",
                        help="measure each architecture (and each reference) in N fresh processes and keep their "
                             "median; with 2, a third when they disagree (default 1)")
    parser.add_argument("--no-remeasure", action="store_true",
                        help="do not measure rows whose confidence interval stayed wide once more at the end")


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="run store file (default OUT/DEVICE.sqlite)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run with the same settings")
    parser.add_argument("--take-over", action="store_true",
                        help="with --resume: take the run over from a process on another host that is gone "
                             "(a process on this host is checked; a live one is never taken over)")


def _add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "profile", _profile, "profile this machine: measure, fit surrogates, repeat until they converge",
        "protran profile --device my-laptop --runtime onnxruntime --meter auto --max-samples 48 --out runs/\n"
        "protran profile --device my-laptop --out runs/ --resume   # after Ctrl-C",
    )
    _add_measurement_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-samples", type=clitools.positive_int,
                   help="Latin-hypercube architectures measured first (default 16; with --prior, fewer)")
    p.add_argument("--prior", action="append", default=[], metavar="FILE",
                   help="other boards' measurements (a run store or ProTran data set; repeatable) as a transfer "
                        "prior: fewer seeds, a model that starts from their costs, its own stopping rule")
    p.add_argument("--pool-size", type=clitools.positive_int, default=64,
                   help="fresh random candidates scored per iteration (default 64)")
    p.add_argument("--target-mse", type=clitools.positive_float, default=0.005,
                   help="stop when the cross-validated MSE of every max-normalised measure is at most this")
    p.add_argument("--patience", type=clitools.positive_int, default=3,
                   help="consecutive passing checks needed to stop (default 3)")
    p.add_argument("--max-samples", type=clitools.positive_int, default=96)
    p.add_argument("--max-hours", type=clitools.positive_float, default=4.0)
    others = [name for name in SURROGATE_NAMES if name != DEFAULT_SURROGATE]
    p.add_argument("--surrogate", default=DEFAULT_SURROGATE,
                   help=f"surrogate model: {DEFAULT_SURROGATE} (default), {clitools.one_of(others)}")
    p.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURE_SETS,
                   help=f"architecture features (default {DEFAULT_FEATURES}; additive needs costs, costs+graph or "
                        "analytic; costs+graph compiles every candidate once: seconds each, cached)")
    p.add_argument("--acquisition", default="uncertainty", choices=ACQUISITIONS)
    p.add_argument("--no-recheck", action="store_true",
                   help="do not measure again, at the end, the rows the other rows say were measured slow")
    p.add_argument("--space", help="design-space YAML to sample from (default: FlexiBERT 2.0)")
    p.add_argument("--out", default="runs", help="folder for the run store and the fitted surrogates")
    _add_store_arguments(p)
    from protran._fleet_cli import add_executor_arguments

    add_executor_arguments(p)


def _add_measure_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
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


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "predict", _predict,
        "predict latency, energy, peak power (and accuracy) of architectures from saved or fitted surrogates",
        "protran predict --accuracy datasets/accuracy/nasbench_bert_250.json arch.json --json\n"
        "protran predict --surrogates runs/ arch.json\n"
        "protran predict --profile ../shared/data/protran/cpu_rpi_b1_r1.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json arch.json",
    )
    p.add_argument("model_dicts", nargs="*", metavar="ARCH", help="model_dict JSON files (or folders of them)")
    p.add_argument("--surrogates", help="folder holding surrogates saved by `protran profile`")
    _add_model_arguments(p, accuracy_required=False)


def _add_pareto_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "pareto", _pareto,
        "predicted Pareto frontiers of accuracy against latency, energy or peak power, per device",
        "protran pareto --profile ../shared/data/protran/*.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json --plot frontiers.png\n"
        "protran pareto --profile runs/my-board.sqlite --accuracy scores.csv --measure energy "
        "--max-latency-s 0.05 --json",
        description="For every device with a hardware profile, search the whole design space (NSGA-II over the "
                    "embedding) for the architectures no other beats on both predicted accuracy and the predicted "
                    "measure. Values are in the profile's units: seconds or joules per sequence, watts.",
    )
    _add_model_arguments(p, accuracy_required=True)
    p.add_argument("--measure", type=clitools.comma_list(MEASURE_NAMES), default=list(MEASURE_NAMES),
                   help=f"{', '.join(MEASURE_NAMES[:-1])} and/or {MEASURE_NAMES[-1]}, comma-separated "
                        "(default: all three)")
    p.add_argument("--plot", help="write a plot with one frontier per device and a panel per measure (PNG, PDF, SVG)")
    p.add_argument("--max-latency-s", type=clitools.positive_float,
                   help="keep architectures predicted to take at most this many seconds per sequence")
    p.add_argument("--max-latency-ms", dest="max_latency_s", type=clitools.positive_float,
                   action=_DeprecatedMilliseconds, help=argparse.SUPPRESS)
    p.add_argument("--max-energy-j", type=clitools.positive_float,
                   help="keep architectures predicted to use at most this many joules per sequence")
    p.add_argument("--max-peak-power-w", type=clitools.positive_float,
                   help="keep architectures predicted to peak at no more than this many watts")
    p.add_argument("--max-params", type=clitools.positive_int,
                   help="keep architectures with at most this many parameters")
    p.add_argument("--max-layers", type=clitools.positive_int, help="keep architectures with at most this many layers")
    p.add_argument("--pop-size", type=clitools.positive_int,
                   help=f"NSGA-II population per measure (default {_SEARCH_DEFAULTS['pop_size']})")
    p.add_argument("--generations", type=clitools.positive_int,
                   help=f"NSGA-II generations per device; its measures are searched together "
                        f"(default {_SEARCH_DEFAULTS['n_generations']})")
    p.add_argument("--suggest-training", type=clitools.positive_int, metavar="K",
                   help="also suggest K unscored architectures to train next: those whose scores are expected "
                        "to raise the frontiers' hypervolume the most (summed over devices and measures; "
                        "frontier points and their near neighbours are candidates); --json adds "
                        "\"suggested_training\"")


def _add_import_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "import", _import, "import a ProTran dataset.json into a run store",
        "protran import ../shared/data/protran/cpu_rpi_b1_r1.json --store boards.sqlite",
    )
    p.add_argument("dataset")
    p.add_argument("--store", required=True)
    p.add_argument("--device", help="device name (default: the file name without .json)")
    p.add_argument("--accuracy", action="store_true",
                   help="the file holds accuracy data (reference glue_pretrain JSON or a CSV of model_dict or "
                        "embedding, task, score, pretrain_loss), not measurements")


def _add_proxy_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "proxy", _proxy,
        "rank architectures without GLUE: MLM loss after a short fixed pre-training budget on a local corpus",
        "protran proxy archs/ --store runs/accuracy.sqlite --steps 200\n"
        "protran pareto --profile runs/my-board.sqlite --accuracy runs/accuracy.sqlite --task mlm_proxy",
        description="Pre-trains every architecture from the same seed, with the same batches and masks, for the "
                    "same number of steps, and stores its validation MLM loss as task 'mlm_proxy' in the run store, "
                    "with score exp(-loss) (the geometric-mean probability of the masked token: higher is better).",
    )
    p.add_argument("model_dicts", nargs="+", help="model_dict JSON files (or folders of them)")
    p.add_argument("--store", help="run store to keep the results in (needed unless --training-free)")
    p.add_argument("--training-free", action="store_true",
                   help="score without training or labels, by a size measure or a freshly initialised model (see "
                        "--metric); prints {\"scores\": [{\"hash\", \"score\"}]} with --json, higher meaning "
                        "predicted more accurate")
    p.add_argument("--metric", default=DEFAULT_TRAINING_FREE_METRIC, metavar="METRIC",
                   help=f"with --training-free: {clitools.one_of(TRAINING_FREE_METRICS)} (default "
                        f"{DEFAULT_TRAINING_FREE_METRIC}). Kendall tau with the GLUE average of 246 NAS-Bench-BERT "
                        "architectures: combined 0.626 (cross-validated), flops 0.511, params_no_embeddings 0.501, "
                        "params 0.489, activation_distance 0.466, synaptic_saliency 0.408, synaptic_diversity 0.255, "
                        "jacobian_cov 0.242, head_importance 0.207, head_confidence 0.148. Size metrics take "
                        "milliseconds; the others build a freshly initialised model (under a second for a 4-layer "
                        "model, 6-10 s for BERT-base; see --seed, --threads) and need the train extra")
    p.add_argument("--steps", type=clitools.positive_int, default=200, help="pre-training steps (default 200)")
    p.add_argument("--batch-size", type=clitools.positive_int, default=16, help="blocks per step (default 16)")
    p.add_argument("--seq-len", type=clitools.positive_int, default=64, help="tokens per block (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=clitools.positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--corpus", help="a folder with train.txt (and validation.txt), or text files, tokenised with "
                                    "the shipped tokenizer (default: the shipped datasets/corpus)")
    from protran._fleet_cli import add_training_executor_arguments

    add_training_executor_arguments(p)


def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "export", _export, "export a run (or the whole store) as a ProTran dataset.json",
        "protran export --store runs/my-laptop.sqlite --run 1 my-laptop.json",
    )
    p.add_argument("output")
    p.add_argument("--store", required=True)
    p.add_argument("--run", type=clitools.positive_int, help="run id (default: every run of the store)")


def _add_correct_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "correct", _correct,
        "recompute a finished run's drift corrections from its stored references and raw latencies",
        "protran correct --store runs/my-laptop.sqlite --drift-threshold 0.03",
    )
    p.add_argument("--store", required=True)
    p.add_argument("--run", type=clitools.positive_int, help="run id (default: every run of the store)")
    p.add_argument("--drift-threshold", type=clitools.non_negative_float, default=0.05, metavar="F",
                   help="correct rows only where the reference is more than this fraction from its baseline "
                        "(default 0.05; 0: always)")
    _add_drift_correction(p)


def _add_drift_correction(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drift-correction", choices=DRIFT_CORRECTIONS, default="latest",
                        help="correct a row by the latest reference before it, by the geometric mean of the "
                             "references just before and after it (bracket: for --reference-every 1), or by the "
                             "reference timed in the row's own process right after it (in-process: no reference "
                             "of its own, --reference-every is not used; pair with --drift-threshold 0); "
                             "default latest")


def _add_replay_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "replay", _replay, "replay the active-learning loop on recorded measurements",
        "protran replay ../shared/data/protran/cpu_rpi_b1_r1.json --seed 0 --json",
    )
    p.add_argument("dataset", help="ProTran dataset.json or run store")
    p.add_argument("--prior", action="append", default=[], help="other boards' data for transfer (repeatable)")
    p.add_argument("--seed-samples", type=clitools.positive_int, default=None,
                   help="rows measured before the first query (default 16; with --prior, fewer)")
    p.add_argument("--target-mse", type=clitools.positive_float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--surrogate", default=None, help="surrogate model (default: the benchmarked best)")
    p.add_argument("--acquisition", default=None,
                   help=f"{clitools.one_of(ACQUISITIONS)} (default: the benchmarked best)")
    p.add_argument("--max-samples", type=clitools.positive_int, default=None)


def _add_meters_parser(sub: argparse._SubParsersAction) -> None:
    clitools.add_command(sub, "meters", _meters, "list the power meters and whether this machine has them",
                         "protran meters")


def _add_meter_server_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "meter-server", _meter_server,
        "stream power samples from the host that holds the sensor to a profiler elsewhere",
        "protran meter-server --meter ina219 --option address=0x45 --port 9555\n"
        "protran meter-server --meter ina219 --host 0.0.0.0 --port 9555 --token s3cret",
    )
    p.add_argument("--meter", required=True, help="the local meter to serve, e.g. ina219")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=_port, default=9555)
    p.add_argument("--token", help="shared secret; required when listening beyond loopback")
    p.add_argument("--option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="meter option, e.g. address=0x45 or shunt_ohms=0.1 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = clitools.make_parser(
        PROG,
        "Measure and predict the latency, energy and peak power of FlexiBERT 2.0 architectures.",
        "protran profile --device my-laptop --runtime onnxruntime --max-samples 32 --out runs/",
    )
    sub = clitools.add_subcommands(parser)
    for add_parser in (_add_profile_parser, _add_measure_parser, _add_predict_parser, _add_pareto_parser,
                       _add_import_parser, _add_proxy_parser, _add_export_parser, _add_correct_parser,
                       _add_replay_parser, _add_meters_parser, _add_meter_server_parser):
        add_parser(sub)
    from protran._drift import add_drift_parser
    from protran._fleet_cli import add_fleet_parser

    add_fleet_parser(sub)
    add_drift_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return clitools.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
