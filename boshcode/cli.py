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
# As boshcode._baselines.BASELINES, boshcode._search.MODES and DEFAULT_BUDGET (tested), spelled out here:
# importing them would load torch for --help.
METHODS = ("boshcode", "random", "gbrt", "gpr", "rf")
MODES = ("codesign", "hw_nas", "nas", "no_aleatoric")
DEFAULT_BUDGET = 100
ORACLE_SEED = 0


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


def _oracle(args: argparse.Namespace):
    from boshcode._oracle import MeasuringOracle, SurrogateOracle

    # The oracle is fitted with a fixed seed, so that every --seed searches the same problem.
    oracle = SurrogateOracle.from_files(args.profile, args.accuracy, seed=ORACLE_SEED, task=args.task,
                                        accuracy_source=args.accuracy_source)
    if args.measure_on is None:
        return oracle
    from protran.meters import detect_meter

    meter = detect_meter(args.meter)
    if meter is None and args.meter != "none":
        print(f"{PROG}: no power meter found on this machine: '{args.measure_on}' gives latency only, so it is "
              "searched only when --beta and --gamma are 0", file=sys.stderr)
    return MeasuringOracle(oracle, args.measure_on, runtime=args.runtime, meter=meter)


def _codesign(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    weights = _weights(args)
    constraints = _constraints(args)
    if args.mode == "hw_nas" and args.device is None:
        raise clitools.CliError("--mode hw_nas searches one device: give --device NAME")
    if args.method != "boshcode" and args.mode != "codesign":
        raise clitools.CliError(f"--mode {args.mode} is a BOSHCODE mode; the baselines run --mode codesign")
    oracle = _oracle(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, problem = _search(args, oracle, weights, constraints)
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    best = problem.describe(result.best)
    output: dict[str, Any] = {
        "device": best["device"],
        "model_dict": best["model_dict"],
        "hash": best["hash"],
        "predicted": best["predicted"],
        "predicted_std": best["predicted_std"],
        "performance": best["performance"],
        "extrapolated": _extrapolated(oracle, problem, result.best),
        "elapsed_s": 0.0,
        "search_s": result.elapsed_s,
        "history": result.history,
        "method": result.method,
        "mode": args.mode,
        "embedding": best["embedding"],
        "weights": weights.as_dict(),
        "maxima": problem.maxima.as_dict(),
        "devices": problem.devices,
        "evaluations": len(result.evaluations),
        "stopped": result.stopped,
    }
    if args.export is not None:
        output["onnx"] = str(_export(args.export, problem, result.best, oracle))
    output["elapsed_s"] = time.perf_counter() - started
    if args.json:
        clitools.print_json(output)
    else:
        _print_summary(output)
    return 0


def _extrapolated(oracle, problem, evaluation) -> bool | None:
    """Whether the winner's accuracy is an extrapolation (None for an oracle that cannot say)."""
    check = getattr(oracle, "extrapolated", None)
    return None if check is None else check(problem.spec(evaluation.embedding))


def _search(args: argparse.Namespace, oracle, weights, constraints):
    from boshcode._baselines import BaselineSettings, run_baseline
    from boshcode._search import SearchSettings, codesign, make_problem

    if args.method == "boshcode":
        settings = SearchSettings(budget=args.budget, seed=args.seed, patience=args.patience)
        with clitools.Progress(args.budget, "codesign", "eval") as bar:

            def progress(info: dict[str, Any]) -> None:
                bar.step(f"best P {info['best']:.4f}", done=info["evaluations"])

            return codesign(oracle, weights, mode=args.mode, device=args.device, settings=settings,
                            constraints=constraints, progress=progress)
    problem = make_problem(oracle, weights, device=args.device, constraints=constraints)
    return run_baseline(args.method, problem, BaselineSettings(budget=args.budget, seed=args.seed)), problem


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
    print(f"best pair ({output['method']}, {output['evaluations']} evaluations, {output['elapsed_s']:.1f} s):")
    print(f"  device       {output['device']}")
    print(f"  hash         {output['hash']}")
    print(f"  model_dict   {output['model_dict']}")
    print(f"  performance  {output['performance']:.4f}")
    if output.get("extrapolated"):
        print("  note         its accuracy is an extrapolation: the architecture lies outside the scored ones")
    units = {"accuracy": "", "latency_s": "s/seq", "energy_j": "J/seq", "peak_power_w": "W"}
    for name, value in output["predicted"].items():
        std = output["predicted_std"][name]
        shown = "n/a" if value is None else f"{value:.6g} ± {std:.3g} {units[name]}".rstrip()
        print(f"  {name:<12} {shown}")
    if "onnx" in output:
        print(f"  onnx         {output['onnx']}")


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
        description="P = alpha * accuracy + beta * (1 - energy) + gamma * (1 - peak power) + epsilon * (1 - latency), "
                    "each measure divided by its largest value in the data (the largest measured on any profiled "
                    "device; the largest score) and clipped to [0, 1]. Measures come from the ProTran surrogates "
                    "fitted on the profiles and the accuracy surrogate fitted on the accuracy file.",
    )
    p.add_argument("--profile", nargs="+", action="extend", required=True, metavar="FILE",
                   help="a ProTran dataset.json (device = file name) or a run store (device = its runs' device); "
                        "repeat, or list several, for every device")
    p.add_argument("--accuracy", required=True, metavar="FILE", nargs="+", action="extend",
                   help="accuracy data, one or more files learnt from together: NAS-Bench-BERT JSON, glue_pretrain "
                        "JSON, CSV or run store")
    p.add_argument("--accuracy-source", metavar="SOURCE",
                   help="accuracy on this source's scale (default: the source with the most scored architectures)")
    for name, help_text in (("alpha", "weight of accuracy"), ("beta", "weight of 1 - energy"),
                            ("gamma", "weight of 1 - peak power"), ("epsilon", "weight of 1 - latency")):
        p.add_argument(f"--{name}", type=_probability, required=True, help=f"{help_text} (weights: >= 0, sum 1)")
    p.add_argument("--method", choices=METHODS, default="boshcode", help="search method (default boshcode)")
    p.add_argument("--budget", type=clitools.positive_int, default=DEFAULT_BUDGET,
                   help=f"evaluations, the initial sample included (default {DEFAULT_BUDGET})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the search: initial sample, surrogates, queries (default 0; the oracle's own "
                        "surrogates are always fitted with seed 0)")
    p.add_argument("--mode", choices=MODES, default="codesign",
                   help="codesign (all devices, default), hw_nas (one --device), nas (accuracy first, then the best "
                        "device), no_aleatoric (UCB without the aleatoric term)")
    p.add_argument("--device", help="search only this device (with --mode hw_nas, or to restrict a baseline)")
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
    p.add_argument("--runtime", default="onnxruntime", choices=RUNTIME_NAMES,
                   help="runtime for --measure-on (default onnxruntime)")
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
