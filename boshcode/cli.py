"""The ``boshcode`` command: co-design an architecture and a device for chosen weights of P."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexibert import clitools
from protran.vocabulary import METER_NAMES, RUNTIME_NAMES

PROG = "boshcode"
# As boshcode's BASELINES, MODES, NORMALISATIONS and the defaults (tested), spelled out here:
# importing them would load torch for --help.
METHODS = ("boshcode", "random", "gbrt", "gpr", "rf", "optuna-tpe", "optuna-gp", "optuna-nsga2", "optuna-tpe-mo",
           "optuna-nsga2-mo")
MODES = ("codesign", "hw_nas", "nas", "no_aleatoric")
NORMALISATIONS = ("max", "log")
DEFAULT_NORMALISATION = "log"
DEFAULT_BUDGET = 100
DEFAULT_RISK = 0.5
DEFAULT_TOP = 3
ARCH_INPUTS = ("structure", "embedding", "both")
DEFAULT_ARCH_INPUTS = "structure"
DEFAULT_GOBI_STARTS = 0
ORACLE_SEED = 0
# A real evaluation (a training, a measurement) may take long; one that takes longer than this is hung.
DEFAULT_ORACLE_TIMEOUT_S = 3600.0
# What --measure-on measures with when the target's profile names no runtime.
DEFAULT_MEASURE_RUNTIME = "onnxruntime"


def _weights(args: argparse.Namespace):
    from boshcode._objective import parse_weights

    try:
        return parse_weights(args.alpha, args.beta, args.gamma, args.epsilon)
    except ValueError as problem:
        raise clitools.CliError(f"--alpha/--beta/--gamma/--epsilon: {problem}") from None


def _constraints(args: argparse.Namespace):
    from boshcode._problem import Constraints

    return Constraints(max_latency_s=args.max_latency_s, max_energy_j=args.max_energy_j,
                       max_peak_power_w=args.max_peak_power_w)


def _drift_charges(args: argparse.Namespace) -> dict[str, float] | None:
    """``{runtime: factor}`` of --runtime-drift, checked before anything runs; None when the charge is off
    (the default without a drift file) or the accuracy comes from the user's own oracle."""
    if args.runtime_drift is None:
        if args.drift_charge == "on":
            raise clitools.CliError("--drift-charge on needs drift data: give --runtime-drift FILE (from "
                                    "`protran drift`)")
        return None
    from boshcode._drift import drift_charges, load_runtime_drift

    charges = drift_charges(load_runtime_drift(args.runtime_drift))
    if args.drift_charge == "off":
        return None
    if args.oracle_command is not None or args.oracle is not None:
        if args.drift_charge == "on":
            raise clitools.CliError("--drift-charge on charges our surrogates' accuracy; your oracle's accuracy is "
                                    "taken as given: drop --drift-charge (or --runtime-drift)")
        print(f"{PROG}: note: your oracle's accuracy is taken as given; --runtime-drift is not charged",
              file=sys.stderr)
        return None
    return charges


def _oracle(args: argparse.Namespace, charges: dict[str, float] | None = None):
    """The oracle the options name: the user's own (a command or a Python object) or ours."""
    if args.oracle_command is not None or args.oracle is not None:
        return _external_oracle(args)
    if not args.profile or not args.accuracy:
        raise clitools.CliError("give --profile FILE... and --accuracy FILE... (our surrogates), or your own "
                                "evaluation with --oracle-command CMD or --oracle module:factory")
    from boshcode._oracle import MeasuringOracle, SurrogateOracle

    # The oracle is fitted with a fixed seed, so that every --seed searches the same problem.
    oracle = SurrogateOracle.from_files(args.profile, args.accuracy, seed=ORACLE_SEED, task=args.task,
                                        accuracy_source=args.accuracy_source, drift_charges=charges)
    if args.measure_on is None:
        return oracle
    from protran.meters import detect_meter

    target = _target(oracle, args.measure_on, args.runtimes, "--measure-on")
    profiled = oracle.runtime(target) if target in oracle.devices else None
    # a profile imported from a reference file names no runtime this machine has: measure with the default
    runtime = args.runtime or (profiled if profiled in RUNTIME_NAMES else DEFAULT_MEASURE_RUNTIME)
    meter = detect_meter(args.meter)
    if meter is None and args.meter != "none":
        print(f"{PROG}: no power meter found on this machine: '{target}' gives latency only, so it is "
              "searched only when --beta and --gamma are 0", file=sys.stderr)
    return MeasuringOracle(oracle, target, runtime=runtime, meter=meter)


def _target(oracle, name: str | None, runtimes: list[str] | None, option: str) -> str | None:
    """The target ``name`` names: a target label (``device[runtime]``) as given, or a device name that
    is profiled under one runtime (of ``runtimes``, when given). Unknown names are left to the search
    to refuse, with the list of targets."""
    from boshcode._oracle import device_runtime
    from protran.models import target_parts

    if name is None or name in oracle.devices:
        return name
    matches = [d for d in oracle.devices if target_parts(d)[0] == name
               and (runtimes is None or device_runtime(oracle, d) in runtimes)]
    if len(matches) > 1:
        raise clitools.CliError(f"{option} {name}: profiled under several runtimes; give one target of "
                                f"{', '.join(matches)} (or --runtimes R)")
    return matches[0] if matches else name


def _external_oracle(args: argparse.Namespace):
    ours = [flag for flag, value in (("--profile", args.profile), ("--accuracy", args.accuracy),
                                     ("--measure-on", args.measure_on), ("--task", args.task),
                                     ("--accuracy-source", args.accuracy_source)) if value]
    if args.oracle_command is not None and args.oracle is not None:
        raise clitools.CliError("give one of --oracle-command and --oracle, not both")
    if ours:
        raise clitools.CliError(f"{', '.join(ours)} configure our own oracle; with --oracle-command or --oracle "
                                "your oracle answers every evaluation: drop them")
    from boshcode._external import CommandOracle, load_oracle_object
    from boshcode._oracle import OracleError

    if args.oracle is not None:
        return load_oracle_object(args.oracle)
    try:
        # The oracle's own log lines (its stderr) are shown as they come: they are the user's training.
        return CommandOracle(args.oracle_command, timeout_s=args.oracle_timeout_s, echo_stderr=True)
    except OracleError as problem:
        raise clitools.CliError(f"--oracle-command: {problem}") from None


def _codesign(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    weights = _weights(args)
    constraints = _constraints(args)
    if args.mode == "hw_nas" and args.device is None:
        raise clitools.CliError("--mode hw_nas searches one --device: give --device NAME")
    if args.method != "boshcode" and args.mode != "codesign":
        raise clitools.CliError(f"--mode {args.mode} is a BOSHCODE mode; the baselines run --mode codesign")
    if args.mode == "nas" and (args.resume or args.state):
        raise clitools.CliError("--mode nas searches accuracy alone first and keeps no search state: drop "
                                "--state/--resume, or use --mode codesign")
    if args.resume is not None and not Path(args.resume).is_file():
        raise clitools.CliError(f"--resume {args.resume}: no such file; give the state file a stopped search saved")
    charges = _drift_charges(args)
    oracle = _oracle(args, charges)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning  # as they happen: a failed evaluation is news now
            result, problem = _search(args, oracle, weights, constraints)
    finally:
        close = getattr(oracle, "close", None)
        if close is not None:
            close()
    output = _result_json(args, oracle, problem, result, weights)
    output["drift_charge"] = charges
    if args.export is not None:
        output["onnx"] = str(_export(args.export, problem, result.best, oracle))
    output["elapsed_s"] = time.perf_counter() - started
    if args.json:
        clitools.print_json(output)
    else:
        _print_summary(output)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _result_json(args: argparse.Namespace, oracle, problem, result, weights) -> dict[str, Any]:
    from boshcode._search import recommend

    chosen, *alternatives = recommend(result.evaluations, args.risk, args.top)
    result.best = chosen
    return {
        **_pair_json(oracle, problem, chosen, args.risk),
        "elapsed_s": 0.0,
        "search_s": result.elapsed_s,
        "history": result.history,
        "method": result.method,
        "mode": args.mode,
        "risk": args.risk,
        "alternatives": [_pair_json(oracle, problem, e, args.risk) for e in alternatives],
        "weights": weights.as_dict(),
        "normalise": problem.normalise,
        "bounds": problem.bounds.to_json(),
        "devices": problem.devices,
        "targets": [{"device": device, "runtime": problem.runtime(i)} for i, device in enumerate(problem.devices)],
        "evaluations": len(result.evaluations),
        "oracle_calls": problem.n_oracle_calls,
        "stopped": result.stopped,
    }


def _pair_json(oracle, problem, evaluation, risk: float) -> dict[str, Any]:
    described = problem.describe(evaluation)
    reasons = _extrapolation(oracle, problem, evaluation)
    return {
        "device": described["device"], "runtime": described["runtime"], "model_dict": described["model_dict"],
        "hash": described["hash"],
        "embedding": described["embedding"], "predicted": described["predicted"],
        "predicted_std": described["predicted_std"], "performance": evaluation.performance,
        "performance_std": evaluation.performance_std, "performance_lcb": evaluation.lower_bound(risk),
        "feasible": evaluation.feasible,
        "extrapolated": None if reasons is None else bool(reasons), "extrapolation": reasons or [],
    }


def _extrapolation(oracle, problem, evaluation) -> list[str] | None:
    """Why the pair's values are extrapolations: its accuracy lies outside the scored architectures, its
    device has few measured rows (None for an oracle that can say neither)."""
    from boshcode._oracle import FEW_ROWS

    accuracy, rows = getattr(oracle, "extrapolated", None), getattr(oracle, "n_rows", None)
    if accuracy is None and rows is None:
        return None
    reasons = []
    if accuracy is not None and accuracy(problem.spec(evaluation.embedding)):
        reasons.append("accuracy outside the scored architectures")
    device = problem.devices[evaluation.device]
    if rows is not None and rows(device) < FEW_ROWS:
        reasons.append(f"{device} profiled on {rows(device)} rows (< {FEW_ROWS})")
    return reasons


def _search(args: argparse.Namespace, oracle, weights, constraints):
    from boshcode._baselines import BaselineSettings, run_baseline
    from boshcode._oracle import OracleError
    from boshcode._search import SearchSettings, codesign, make_problem
    from boshcode._state import initial_with, resume, save_state, state_header

    device = _target(oracle, args.device, args.runtimes, "--device")
    problem = make_problem(oracle, weights, mode=args.mode, device=device, constraints=constraints,
                           normalise=args.normalise, runtimes=args.runtimes)
    header = state_header(problem, f"{args.method}/{args.mode}")
    done = resume(args.resume, problem, header["method"]) if args.resume is not None else []
    n_initial = 16
    initial = initial_with(problem, done, min(n_initial, args.budget), args.seed) if done else None
    state_path = args.state or args.resume
    if state_path is not None:
        problem.on_evaluated = lambda _: save_state(state_path, header, problem.evaluated())
    try:
        with clitools.Progress(args.budget, "codesign", "eval") as bar:
            bar.resume_from(len(done))
            if args.method == "boshcode":
                settings = SearchSettings(budget=args.budget, seed=args.seed, patience=args.patience,
                                          n_initial=n_initial, n_starts=args.gobi_starts, inputs=args.arch_inputs)

                def progress(info: dict[str, Any]) -> None:
                    bar.step(f"best P {info['best']:.4f}", done=info["evaluations"])

                return codesign(oracle, weights, mode=args.mode, device=device, settings=settings,
                                constraints=constraints, progress=progress, problem=problem, initial=initial)
            problem.on_evaluated = _also(problem.on_evaluated, lambda new: bar.step(done=len(problem.evaluated())))
            settings = BaselineSettings(budget=args.budget, seed=args.seed, n_initial=n_initial)
            return run_baseline(args.method, problem, settings, initial=initial), problem
    except (OracleError, KeyboardInterrupt) as stop:
        raise _stopped(stop, header, problem, state_path) from None


def _stopped(stop: BaseException, header: dict[str, Any], problem, state_path: str | None) -> BaseException:
    """Save what was evaluated (nothing an oracle answered is lost) and say how to go on."""
    from boshcode._state import save_state

    evaluations = problem.evaluated()
    if evaluations:
        state_path = state_path or f"boshcode-state-{time.strftime('%Y%m%d-%H%M%S')}.json"
        save_state(state_path, header, evaluations)
        kept = (f"the {len(evaluations)} evaluations so far are saved in {state_path}; rerun the same command "
                f"with --resume {state_path} to continue")
    else:
        kept = "nothing was evaluated yet; run the same command again"
    if isinstance(stop, KeyboardInterrupt):
        return clitools.Interrupted(kept)
    return clitools.CliError(f"the oracle failed: {stop}; {kept}")


def _also(first, second):
    def both(new):
        if first is not None:
            first(new)
        second(new)
    return both
def _export(path: str, problem, evaluation, oracle) -> Path:
    """The winner as ONNX with the batch size and sequence length its device was profiled with."""
    from flexibert import export_onnx

    device = problem.devices[evaluation.device]
    batch_size, seq_len = oracle.workload(device) if hasattr(oracle, "workload") else (1, 128)
    target = Path(path)
    if target.suffix != ".onnx":
        target = target / f"{problem.describe(evaluation)['hash']}_{device}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(problem.spec(evaluation.embedding), target, batch_size=batch_size, seq_len=seq_len,
                       exporter="tracing")


def _print_summary(output: dict[str, Any]) -> None:
    print(f"recommended pair ({output['method']}, {output['evaluations']} evaluations, {output['elapsed_s']:.1f} s; "
          f"highest P - {output['risk']:g} std, {output['normalise']} normalisation):")
    print(f"  device       {output['device']}")
    print(f"  runtime      {output['runtime'] or 'unknown'}")
    print(f"  hash         {output['hash']}")
    print(f"  model_dict   {output['model_dict']}")
    print(f"  performance  {output['performance']:.4f} ± {output['performance_std']:.4f} "
          f"(lower bound {output['performance_lcb']:.4f})")
    for reason in output["extrapolation"]:
        print(f"  note         an extrapolation: {reason}")
    if output["drift_charge"]:
        charged = ", ".join(f"{runtime} x{factor:.4g}" for runtime, factor in output["drift_charge"].items())
        print(f"  note         predicted accuracy charged for runtime drift: {charged}")
    units = {"accuracy": "", "latency_s": "s/seq", "energy_j": "J/seq", "peak_power_w": "W"}
    for name, value in output["predicted"].items():
        std = output["predicted_std"][name]
        shown = "n/a" if value is None else f"{value:.6g} ± {std or 0:.3g} {units[name]}".rstrip()
        print(f"  {name:<12} {shown}")
    if "onnx" in output:
        print(f"  onnx         {output['onnx']}")
    if output["alternatives"]:
        print("alternatives:")
        for other in output["alternatives"]:
            flag = "  (extrapolated)" if other["extrapolated"] else ""
            runtime = other["runtime"] or "runtime unknown"
            print(f"  P {other['performance']:.4f} ± {other['performance_std']:.4f}  {other['device']:<24} "
                  f"{runtime:<18} {other['hash']}{flag}")


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}': give names separated by commas, none empty")
    return names


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    return value


class _RenamedToMeasureOn(argparse.Action):
    """The old ``--measure DEVICE``: refused with one line, since protran's ``--measure`` means which measures."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        device = values or "DEVICE"
        parser.exit(clitools.EXIT_USAGE, f"{parser.prog}: error: {option_string} is now --measure-on: use "
                                         f"--measure-on {device} to measure that device for real on this machine\n")


def _add_codesign_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "codesign", _codesign,
        "find the (architecture, device) pair with the highest performance P",
        "boshcode codesign --profile ../shared/data/protran/*.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json --alpha 0.5 --beta 0.2 --gamma 0.2 --epsilon 0.1\n"
        "boshcode codesign --profile runs/my-board.sqlite --profile ../shared/data/protran/cpu_rpi_b1_r1.json "
        "--accuracy scores.csv --alpha 0.4 --beta 0.3 --gamma 0.2 --epsilon 0.1 --method rf --json",
        description="P = alpha * accuracy + beta * energy + gamma * peak power + epsilon * latency, each measure "
                    "mapped to [0, 1] (1 best) with the bounds of the data (--normalise) and clipped. Measures come "
                    "from the ProTran surrogates fitted on the profiles and the accuracy model fitted on the accuracy "
                    "files, or from your own evaluation (--oracle-command, --oracle). The recommended pair has the "
                    "highest P - risk * std of P among those evaluated.",
    )
    p.add_argument("--profile", nargs="+", action="extend", metavar="FILE",
                   help="a ProTran dataset.json (device = file name) or a run store (device = its runs' device); "
                        "repeat, or list several, for every device")
    p.add_argument("--accuracy", metavar="FILE", nargs="+", action="extend",
                   help="accuracy data, one or more files learnt from together: NAS-Bench-BERT JSON, glue_pretrain "
                        "JSON, CSV or run store")
    p.add_argument("--accuracy-source", metavar="SOURCE",
                   help="accuracy on this source's scale (default: the source with the most scored architectures)")
    for name, help_text in (("alpha", "weight of accuracy"), ("beta", "weight of 1 - energy"),
                            ("gamma", "weight of 1 - peak power"), ("epsilon", "weight of 1 - latency")):
        p.add_argument(f"--{name}", type=_probability, required=True, help=f"{help_text} (weights: >= 0, sum 1)")
    p.add_argument("--oracle-command", metavar="CMD",
                   help="your own evaluation: a command started once that speaks JSON lines (header "
                        "{\"devices\", \"bounds\"}, then one answer line per {\"device\", \"model_dict\"} line)")
    p.add_argument("--oracle", metavar="MODULE:FACTORY",
                   help="your own evaluation as a Python object with devices, bounds and predict(specs, device)")
    p.add_argument("--oracle-timeout-s", type=clitools.positive_float, default=DEFAULT_ORACLE_TIMEOUT_S,
                   help=f"an --oracle-command evaluation taking longer is a hung oracle "
                        f"(default {DEFAULT_ORACLE_TIMEOUT_S:g} s)")
    p.add_argument("--normalise", choices=NORMALISATIONS, default=DEFAULT_NORMALISATION,
                   help="how measures map to [0, 1]: log (default; costs on a log scale between their smallest and "
                        "largest value, accuracy between its bounds) or max (the paper's: value / largest)")
    p.add_argument("--risk", type=clitools.non_negative_float, default=DEFAULT_RISK,
                   help=f"recommend the pair with the highest P - RISK * std of P (default {DEFAULT_RISK:g}; "
                        "0: the highest predicted P)")
    p.add_argument("--top", type=clitools.non_negative_int, default=DEFAULT_TOP,
                   help=f"also list this many alternatives (default {DEFAULT_TOP})")
    p.add_argument("--state", metavar="FILE",
                   help="keep the search state in FILE after every evaluation (a stopped search saves it anyway)")
    p.add_argument("--resume", metavar="FILE",
                   help="continue the search saved in FILE (same options; its evaluations count towards the budget)")
    p.add_argument("--method", choices=METHODS, default="boshcode", help="search method (default boshcode)")
    p.add_argument("--budget", type=clitools.positive_int, default=DEFAULT_BUDGET,
                   help=f"evaluations, the initial sample included (default {DEFAULT_BUDGET})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the search: initial sample, surrogates, queries (default 0; the oracle's own "
                        "surrogates are always fitted with seed 0)")
    p.add_argument("--mode", choices=MODES, default="codesign",
                   help="codesign (all devices, default), hw_nas (one --device), nas (accuracy first, then the best "
                        "device), no_aleatoric (UCB without the aleatoric term)")
    p.add_argument("--device", help="search only this target (with --mode hw_nas, or to restrict a baseline): a "
                                    "device name, or device[runtime] for a device profiled under several runtimes")
    p.add_argument("--runtimes", type=_names, metavar="R1,R2",
                   help="search only the targets (device, runtime) under these runtimes, comma-separated "
                        "(default: every target; targets whose runtime is unknown are left out)")
    p.add_argument("--runtime-drift", metavar="FILE",
                   help="runtime drift from float32 (the JSON `protran drift` writes): a target under a runtime it "
                        "lists has its predicted accuracy and std multiplied by 1 - max(0, mlm_loss_increase_rel). "
                        "Our surrogates only: with --oracle-command/--oracle your oracle's accuracy is taken as given")
    p.add_argument("--drift-charge", choices=("on", "off"),
                   help="charge accuracy for runtime drift (default: on with --runtime-drift, off without)")
    p.add_argument("--gobi-starts", type=clitools.non_negative_int, default=DEFAULT_GOBI_STARTS,
                   help="BOSHCODE: climb the acquisition by GOBI from this many of the pool's best points "
                        f"(default {DEFAULT_GOBI_STARTS}: the pool's UCB alone)")
    p.add_argument("--arch-inputs", choices=ARCH_INPUTS, default=DEFAULT_ARCH_INPUTS,
                   help="what BOSHCODE's networks read of an architecture: its structure features (default), "
                        "its embedding (the paper's) or both")
    p.add_argument("--patience", type=clitools.positive_int,
                   help="stop after this many evaluations without improvement (default: use the whole budget)")
    p.add_argument("--task", help="accuracy task (default glue)")
    p.add_argument("--max-latency-s", type=clitools.positive_float, help="pairs slower than this score P_MIN")
    p.add_argument("--max-energy-j", type=clitools.positive_float,
                   help="pairs using more energy per sequence score P_MIN")
    p.add_argument("--max-peak-power-w", type=clitools.positive_float,
                   help="pairs drawing more peak power score P_MIN")
    p.add_argument("--export", metavar="PATH",
                   help="write the winner as ONNX (a .onnx file, or a folder) for its device's batch size")
    p.add_argument("--measure-on", metavar="DEVICE",
                   help="measure this profiled device for real on this machine instead of predicting it")
    p.add_argument("--measure", nargs="?", action=_RenamedToMeasureOn, help=argparse.SUPPRESS)
    p.add_argument("--runtime", choices=RUNTIME_NAMES,
                   help="runtime for --measure-on (default: the runtime the target was profiled under where "
                        f"this machine has it, else {DEFAULT_MEASURE_RUNTIME})")
    p.add_argument("--meter", default="auto",
                   help=f"power meter for --measure-on: {clitools.one_of(METER_NAMES)} "
                        "(default auto; none: latency only)")


def build_parser() -> argparse.ArgumentParser:
    parser = clitools.make_parser(
        PROG,
        "Co-design a FlexiBERT 2.0 architecture and the edge device that runs it (BOSHCODE).",
        "boshcode codesign --profile ../shared/data/protran/*.json "
        "--accuracy ../shared/data/flexibert/glue_pretrain_16.json --alpha 0.5 --beta 0.2 --gamma 0.2 --epsilon 0.1",
    )
    _add_codesign_parser(clitools.add_subcommands(parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return clitools.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
