"""The ``flexibert`` command: sample, describe and export FlexiBERT 2.0 architectures."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from flexibert import clitools
from flexibert._embedding import embed, model_hash
from flexibert._errors import ExportError, InvalidArchitectureError
from flexibert._sampling import diversity_report, model_type, sample_architectures
from flexibert._space import DesignSpace
from flexibert._spec import ArchSpec
from flexibert.choices import EXPORT_FORMATS, SAMPLING_METHODS

PROG = "flexibert"
# TorchScript's profiling executor optimises the graph during its first two runs.
_WARMUP_RUNS = 2


# -- reading architectures ----------------------------------------------------------------------


def _load_space(path: str | None) -> DesignSpace:
    if path is None:
        return DesignSpace.default()
    try:
        return DesignSpace.from_yaml(path)
    except (ValueError, yaml.YAMLError) as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _json_documents(path: Path) -> list[Any]:
    """One JSON document, or one per line (JSON lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    try:
        return [json.loads(text)]
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply (more than about a thousand levels)") from None
    except json.JSONDecodeError as whole_error:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise ValueError(f"{path}: not valid JSON ({whole_error})") from None
        documents = []
        for number, line in enumerate(lines, start=1):
            try:
                documents.append(json.loads(line))
            except RecursionError:
                raise ValueError(f"{path}: line {number} is JSON nested too deeply (over about a thousand levels)") \
                    from None
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from None
        return documents


def _is_model_dict(data: Any) -> bool:
    return isinstance(data, dict) and {"l", "o", "h", "f"} <= set(data)


def _model_dicts(document: Any, path: Path) -> Iterator[tuple[str | None, Any]]:
    """(row key, model_dict) pairs of a model_dict, a {"model_dict": ...} row, a list of them, or a
    dataset keyed by model hash."""
    if _is_model_dict(document):
        yield None, document
    elif isinstance(document, dict) and "model_dict" in document:
        yield None, document["model_dict"]
    elif isinstance(document, dict) and document and all(
        isinstance(row, dict) and "model_dict" in row for row in document.values()
    ):
        for key, row in document.items():
            yield str(key), row["model_dict"]
    elif isinstance(document, list):
        for index, row in enumerate(document):
            for _, model_dict in _model_dicts(row, path):
                yield str(index), model_dict
    else:
        raise ValueError(
            f"{path}: expected a model_dict ({{\"l\", \"o\", \"h\", \"f\"}}), a {{\"model_dict\": ...}} row, "
            "a list of them, or a dataset keyed by model hash"
        )


def _row_key(line: int, key: str | None) -> str:
    return str(line) if key is None else f"{line}][{key}"


def read_architectures(paths: Sequence[str], space: DesignSpace) -> list[tuple[str, ArchSpec]]:
    """(label, ArchSpec) for every architecture in the files and directories (``*.json``, ``*.jsonl``)."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
            if not found:
                raise ValueError(f"{path}: directory holds no .json or .jsonl files")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory")
    specs = []
    for path in files:
        documents = _json_documents(path)
        rows = [
            (_row_key(number, key) if len(documents) > 1 else key, model_dict)
            for number, document in enumerate(documents)
            for key, model_dict in _model_dicts(document, path)
        ]
        if not rows:
            raise ValueError(f"{path}: holds no architectures")
        for key, model_dict in rows:
            label = str(path) if key is None else f"{path}[{key}]"
            try:
                specs.append((label, ArchSpec.from_model_dict(model_dict, space=space)))
            except InvalidArchitectureError as error:
                raise InvalidArchitectureError(f"{label}: {error}") from None
    return specs


def _summary(spec: ArchSpec, space: DesignSpace) -> dict[str, Any]:
    return {
        "hash": model_hash(spec),
        "model_dict": spec.to_model_dict(),
        "embedding": embed(spec, space),
        "model_type": model_type(spec, space),
    }


def _joined(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


# -- sample ---------------------------------------------------------------------------------------


def _cmd_sample(args: argparse.Namespace) -> int:
    space = _load_space(args.space)
    specs = sample_architectures(args.n, method=args.method, seed=args.seed, space=space,
                                 stratify_heads=not args.no_stratify_heads)
    rows = [_summary(spec, space) for spec in specs]
    if args.json:
        clitools.print_json(rows)
    else:
        table = [
            (i, row["hash"][:8], spec.num_layers, _joined(spec.hidden_sizes), _joined(spec.head_counts),
             row["model_type"])
            for i, (row, spec) in enumerate(zip(rows, specs))
        ]
        clitools.print_table(table, ("#", "hash", "layers", "hidden", "heads", "model_type"))
    # Keep stdout pure JSON with --json; notes go to stderr then.
    notes = sys.stderr if args.json else sys.stdout
    if len(specs) > 1:
        print(_diversity_line(diversity_report(specs, space)), file=notes)
    if args.out:
        print(_write_samples(rows, Path(args.out)), file=notes)
    return clitools.EXIT_OK


def _diversity_line(report: dict) -> str:
    types = ", ".join(f"{name} {count}" for name, count in report["model_types"].items())
    return (
        f"diversity: {report['n']} architectures; pairwise distance of normalised embeddings "
        f"min {report['min']:.3f}, median {report['median']:.3f}, mean {report['mean']:.3f}, "
        f"max {report['max']:.3f}; {types}"
    )


def _write_samples(rows: list[dict], out: Path) -> str:
    if out.suffix == ".jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return f"wrote {len(rows)} architectures to {out}"
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        (out / f"{row['hash']}.json").write_text(json.dumps(row["model_dict"]) + "\n", encoding="utf-8")
    return f"wrote {len(rows)} model_dict file{'' if len(rows) == 1 else 's'} to {out}/"


# -- describe -------------------------------------------------------------------------------------


def _import_features():
    try:
        from flexibert._features import analytic_features
    except ImportError as error:
        raise clitools.CliError(f"analytic features are unavailable ({error})") from None
    return analytic_features


def _cmd_describe(args: argparse.Namespace) -> int:
    space = _load_space(args.space)
    architectures = read_architectures(args.paths, space)
    analytic_features = _import_features()
    results = []
    for label, spec in architectures:
        features = analytic_features(spec, batch_size=args.batch_size, seq_len=args.seq_len)
        results.append({"source": label, **_summary(spec, space), **features,
                        "batch_size": args.batch_size, "seq_len": args.seq_len})
    if args.json:
        clitools.print_json(results)
        return clitools.EXIT_OK
    for index, (result, (_, spec)) in enumerate(zip(results, architectures)):
        if index:
            print()
        _print_description(result, spec)
    return clitools.EXIT_OK


def _print_description(result: dict, spec: ArchSpec) -> None:
    fields = [
        ("hash", result["hash"]),
        ("model_type", result["model_type"]),
        ("layers", spec.num_layers),
        ("hidden", _joined(spec.hidden_sizes)),
        ("heads", _joined(spec.head_counts)),
        ("params", f"{result['params'] / 1e6:.2f} M"),
        ("flops", f"{result['flops'] / 1e9:.3f} GFLOPs (batch {result['batch_size']}, seq {result['seq_len']})"),
        ("activation", f"{result['activation_bytes'] / 2**20:.1f} MiB"),
        ("embedding", result["embedding"]),
    ]
    print(result["source"])
    for name, value in fields:
        print(f"  {name:<11} {value}")


# -- export ---------------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    space = _load_space(args.space)
    architectures = read_architectures([args.path], space)
    if len(architectures) != 1:
        raise clitools.CliError(f"{args.path} holds {len(architectures)} architectures; export takes a file with one")
    (_, spec), = architectures
    try:
        from flexibert._export import as_model, export
    except ImportError as error:
        raise clitools.CliError(f"export is unavailable ({error})") from None
    out_dir = Path(args.out)
    started = time.perf_counter()
    model = as_model(spec)  # built once, exported to every format
    build_s = time.perf_counter() - started
    results = []
    for fmt in args.format:
        started = time.perf_counter()
        try:
            paths = export(model, out_dir, formats=(fmt,), batch_size=args.batch_size, seq_len=args.seq_len)
        except ExportError as error:
            raise clitools.CliError(f"{fmt} export failed: {error}") from None
        results.append({"format": fmt, "path": str(paths[fmt]), "export_s": time.perf_counter() - started})
    if args.run:
        _run_exports(model, results, args.batch_size, args.seq_len)
    key = model_hash(spec)
    if args.json:
        clitools.print_json({"hash": key, "batch_size": args.batch_size, "seq_len": args.seq_len,
                             "build_s": build_s, "exports": results})
    else:
        print(f"built {key[:8]} ({spec.num_layers} layers) in {build_s:.2f} s")
        header = ("format", "export_s") + (("run_s", "max_abs_diff") if args.run else ()) + ("path",)
        table = [
            (r["format"], f"{r['export_s']:.2f}")
            + ((f"{r['run_s']:.4f}", f"{r['max_abs_diff']:.2e}") if args.run else ())
            + (r["path"],)
            for r in results
        ]
        clitools.print_table(table, header)
    return clitools.EXIT_OK


def _artifact_runner(fmt: str, path: str):
    """A function that runs the exported file in its own runtime: ``ids -> hidden states``."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda ids: session.run(None, {name: ids})[0]
    if fmt == "openvino":
        import openvino

        # f32: the CPU plugin would otherwise pick bf16 on CPUs that support it.
        compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda ids: compiled({0: ids})[0]
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated but still runs
        module = torch.jit.load(path, map_location="cpu")

    def run_torchscript(ids):
        with torch.no_grad():
            return module(torch.from_numpy(ids)).numpy()

    return run_torchscript


def _run_exports(model, results: list[dict], batch_size: int, seq_len: int) -> None:
    """Time one run of every exported file (after warm-up) and compare its output with eager torch."""
    import numpy as np
    import torch

    from flexibert._export import example_input_ids, vocab_size_of

    ids = example_input_ids(batch_size, seq_len, vocab_size_of(model))
    with torch.no_grad():
        expected = model.eval()(ids).numpy()
    for result in results:
        try:
            run = _artifact_runner(result["format"], result["path"])
        except ImportError as error:
            raise clitools.CliError(f"cannot run the {result['format']} file: {error}") from None
        for _ in range(_WARMUP_RUNS):
            run(ids.numpy())
        started = time.perf_counter()
        output = np.asarray(run(ids.numpy()))
        result["run_s"] = time.perf_counter() - started
        result["max_abs_diff"] = float(np.max(np.abs(output - expected)))


# -- parser ---------------------------------------------------------------------------------------


def _add_space_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", metavar="FILE.yaml",
                        help="design space file (default: the FlexiBERT 2.0 space)")


def _add_shape_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=clitools.positive_int, default=1, help="batch size (default 1)")
    parser.add_argument("--seq-len", type=clitools.positive_int, default=128, help="sequence length (default 128)")


def _add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    sample = clitools.add_command(
        subparsers, "sample", _cmd_sample, "draw distinct architectures with a seeded sampler",
        "flexibert sample -n 16 --method lhs --seed 0 --out seeds/",
        description=(
            "Draw N distinct architectures and print them with a diversity summary.\n\n"
            "Methods: random, lhs (Latin hypercube), lhs_split (half narrow, half wide, as the\n"
            "reference seed set), sobol, halton, hammersly. Each layer's head count is drawn\n"
            "uniformly unless --no-stratify-heads is given (then ~85% of layers get 12 heads).\n"
            "--out DIR writes <hash>.json model_dict files; --out FILE.jsonl writes JSON lines."
        ),
    )
    sample.add_argument("-n", type=clitools.positive_int, default=16, help="number of architectures (default 16)")
    sample.add_argument("--method", choices=SAMPLING_METHODS, default="lhs", help="sampler (default lhs)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--no-stratify-heads", action="store_true",
                        help="draw the attention index uniformly over its whole range, as the reference")
    sample.add_argument("--out", metavar="DIR|FILE.jsonl", help="also write the architectures here")
    _add_space_option(sample)


def _add_describe_parser(subparsers: argparse._SubParsersAction) -> None:
    describe = clitools.add_command(
        subparsers, "describe", _cmd_describe, "parameters, FLOPs, memory, embedding and hash of architectures",
        "flexibert sample -n 4 --seed 0 --out seeds/\n"
        "flexibert describe seeds/ --batch-size 1 --seq-len 128",
        description=(
            "Describe architectures: parameters, FLOPs, activation memory, embedding, hash, model type.\n\n"
            "PATH is a model_dict JSON file, a file of {\"model_dict\": ...} rows (a list, JSON lines,\n"
            "or a ProTran dataset keyed by hash), or a directory of such files."
        ),
    )
    describe.add_argument("paths", nargs="+", metavar="PATH", help="model_dict files or directories")
    _add_shape_options(describe)
    _add_space_option(describe)


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    export = clitools.add_command(
        subparsers, "export", _cmd_export, "export an architecture to ONNX, OpenVINO IR or TorchScript",
        "flexibert sample -n 1 --seed 4 --out one/\n"
        "flexibert export one/*.json --format onnx,openvino,torchscript --out exported/ --run",
        description="Build a randomly initialised model for one architecture and export it.",
    )
    export.add_argument("path", metavar="MODEL_DICT.json", help="file with one model_dict")
    export.add_argument("--format", type=clitools.comma_list(EXPORT_FORMATS), default=["onnx"],
                        help=f"comma-separated formats out of {', '.join(EXPORT_FORMATS)} (default onnx)")
    export.add_argument("--out", required=True, metavar="DIR", help="output directory")
    export.add_argument("--run", action="store_true",
                        help="run each exported file once in its runtime; report latency and the largest "
                             "difference from eager torch")
    _add_shape_options(export)
    _add_space_option(export)


def build_parser() -> argparse.ArgumentParser:
    parser = clitools.make_parser(
        PROG,
        "Sample, describe and export architectures of the FlexiBERT 2.0 design space.",
        "flexibert sample -n 16 --method lhs_split --seed 0 --out seeds/\n"
        "flexibert describe seeds/ --seq-len 128\n"
        "flexibert sample -n 1 --seed 4 --out one/\n"
        "flexibert export one/*.json --format onnx,openvino --out exported/ --run",
    )
    subparsers = clitools.add_subcommands(parser)
    _add_sample_parser(subparsers)
    _add_describe_parser(subparsers)
    _add_export_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return clitools.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
