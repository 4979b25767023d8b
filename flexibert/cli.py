"""The ``flexibert`` command: sample, describe, export and serve FlexiBERT 2.0 architectures."""

from __future__ import annotations

import argparse
import contextlib
import errno
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


def _single_architecture(path: str, space: DesignSpace, command: str) -> ArchSpec:
    architectures = read_architectures([path], space)
    if len(architectures) != 1:
        raise clitools.CliError(f"{path} holds {len(architectures)} architectures; {command} takes a file with one")
    (_, spec), = architectures
    return spec


def _cmd_export(args: argparse.Namespace) -> int:
    space = _load_space(args.space)
    spec = _single_architecture(args.path, space, "export")
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


# -- serve ----------------------------------------------------------------------------------------


def _serve_runtime(name: str):
    """The runtime called ``name``, checked before any slow work.

    Runtimes live in protran, which itself depends on flexibert: so flexibert imports protran only
    here, when a serve command runs, and only its public names (never at module level, which would
    make the two packages import each other).
    """
    try:
        from protran import available_runtimes, get_runtime
    except ImportError as error:
        raise clitools.CliError(f"serving needs protran's runtimes, which do not import here ({error}); "
                                "install edgetran with its runtime dependencies") from None
    runtime = get_runtime(name)  # an unknown name: ValueError listing the runtimes there are
    if not runtime.is_available():
        found = ", ".join(available_runtimes()) or "none"
        raise clitools.CliError(f"runtime '{name}' is not available on this machine (its library or device is "
                                f"missing); runtimes available here: {found}")
    return runtime


def _served_model(args: argparse.Namespace, serve, vocab_size: int):
    space = _load_space(args.space)
    path = Path(args.model)
    if not path.exists():
        raise clitools.CliError(f"{path}: no such file or directory; give a pre-training checkpoint or a "
                                "model_dict JSON file")
    if serve.is_checkpoint(path):
        spec = _single_architecture(args.arch, space, "--arch") if args.arch else None
        return serve.load_checkpoint_model(path, spec)
    if args.arch:
        raise clitools.CliError(f"--arch applies to checkpoints; {path} is an architecture file already")
    spec = _single_architecture(args.model, space, "serve")
    return serve.random_model(spec, vocab_size, str(path), seed=args.seed)


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.cpus is not None and args.threads is not None and args.threads > len(set(args.cpus)):
        raise clitools.CliError(f"--threads {args.threads} exceeds the {len(set(args.cpus))} CPU(s) of --cpus; "
                                "threads would take turns on the pinned CPUs")
    if args.bench is not None and args.http is not None:
        raise clitools.CliError("--bench and --http are separate modes; give one of them")
    runtime = _serve_runtime(args.runtime)
    from flexibert import _serve as serve

    cpus = serve.pin_to_cpus(args.cpus) if args.cpus is not None else None  # before any runtime thread starts
    server = _bind(args, serve) if args.http is not None else None
    with server if server is not None else contextlib.nullcontext():
        _serve_model(args, serve, runtime, cpus, server)
    return clitools.EXIT_OK


def _serve_model(args: argparse.Namespace, serve, runtime, cpus: list[int] | None, server) -> None:
    from flexibert._data import load_tokenizer

    tokenizer = load_tokenizer()
    masked_lm = _served_model(args, serve, tokenizer.get_vocab_size())
    max_positions = masked_lm.model.encoder.max_positions
    if args.seq_len > max_positions:
        raise clitools.CliError(f"--seq-len {args.seq_len} exceeds the model's {max_positions} positions")
    if not masked_lm.trained:
        warnings.warn(f"{masked_lm.source} is an architecture without trained weights: serving random weights (seed "
                      f"{args.seed}); the predicted tokens are meaningless, the latency is real", stacklevel=2)
    with serve.head_threads(args.threads, runtime.name), runtime.prepare(
            serve.encoder_of(masked_lm), batch_size=1, seq_len=args.seq_len, num_threads=args.threads) as session:
        filler = serve.MaskFiller(masked_lm, session, tokenizer, top_k=args.top_k)
        if args.bench is not None:
            _serve_bench(args, serve, filler, cpus)
        elif server is not None:
            _serve_http(args, server, filler)
        else:
            if sys.stdin.isatty():
                print(f"serving {masked_lm.source} with {args.runtime}: one JSON line per request, "
                      '{"text": "... [MASK] ..."}; Ctrl-D ends', file=sys.stderr)
            with clitools.resumable("the server stopped"):
                serve.serve_lines(filler, sys.stdin, sys.stdout)


def _bind(args: argparse.Namespace, serve):
    """The HTTP server's socket, bound before the slow work, so that a port in use fails at once."""
    try:
        return serve.make_http_server(args.host, args.http)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise clitools.CliError(f"port {args.http} on {args.host} is in use; choose another --http PORT "
                                    "(0 picks a free one)") from None
        raise clitools.CliError(f"cannot listen on {args.host}:{args.http} ({error.strerror or error})") from None


def _serve_http(args: argparse.Namespace, server, filler) -> None:
    server.filler = filler
    with clitools.resumable("the server stopped"):
        host, port = server.server_address[:2]
        print(f"serving {filler.masked_lm.source} with {args.runtime} on http://{host}:{port} "
              "(POST /predict, GET /health); Ctrl-C stops", file=sys.stderr, flush=True)
        server.serve_forever()


def _serve_bench(args: argparse.Namespace, serve, filler, cpus: list[int] | None) -> None:
    with clitools.resumable(clitools.NOTHING_KEPT):
        figures = serve.bench(filler, args.bench, seed=args.seed, warmup=args.warmup)
    report = {"runtime": args.runtime, "requests": args.bench, "seq_len": args.seq_len, "threads": args.threads,
              "cpus": cpus, **figures, "model": filler.masked_lm.source, "hash": model_hash(filler.masked_lm.spec),
              "trained": filler.masked_lm.trained, "mlm_head": "torch", "warmup": args.warmup, "seed": args.seed,
              "thread_settings": filler.session.thread_settings}
    if args.json:
        clitools.print_json(report)
        return
    latency, request = report["latency_s"], report["request_s"]
    print(f"{args.runtime}: {args.bench} requests, seq {args.seq_len}, threads {args.threads or 'default'}: "
          f"latency p50 {latency['p50'] * 1e3:.2f} ms p99 {latency['p99'] * 1e3:.2f} ms; "
          f"request p50 {request['p50'] * 1e3:.2f} ms p99 {request['p99'] * 1e3:.2f} ms; "
          f"{report['throughput_rps']:.1f} requests/s")


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


def _port(text: str) -> int:
    port = clitools.non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def _add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = clitools.add_command(
        subparsers, "serve", _cmd_serve, "fill in [MASK] tokens with a model in a runtime; serve or benchmark it",
        "flexibert sample -n 1 --seed 4 --out one/\n"
        'echo \'{"text": "the [MASK] of the river"}\' | flexibert serve one/*.json --runtime onnxruntime\n'
        "flexibert serve one/*.json --runtime onnxruntime --http 8080\n"
        "flexibert serve one/*.json --runtime onnxruntime --threads 1 --cpus 1 --bench 200 --json",
        description=(
            "Serve a masked-language model: each request is a text with one or more [MASK] tokens;\n"
            "the answer holds the top-k tokens with their probabilities for each mask, latency_s (the\n"
            "exported encoder's run in the runtime) and request_s (the whole request, including the\n"
            "MLM head, which runs in torch).\n\n"
            "MODEL is a pre-training checkpoint (checkpoint.pt or its folder; weights and architecture)\n"
            "or a model_dict JSON file (random weights: latency is real, predictions are meaningless).\n"
            "Texts are padded or cut to --seq-len tokens (the compiled shape; 128, as profiles measure).\n\n"
            "Modes: JSON lines on stdin/stdout ({\"text\": ...} in, {\"masks\": ..., \"latency_s\": ...,\n"
            "\"request_s\": ...} or {\"error\": ...} out); --http PORT (POST /predict, GET /health); --bench N\n"
            "(N seeded requests from the shipped corpus: p50/p99 latency and request time, throughput)."
        ),
    )
    serve.add_argument("model", metavar="MODEL", help="pre-training checkpoint, or a file with one model_dict")
    serve.add_argument("--runtime", default="onnxruntime",
                       help="protran runtime to run the encoder in, e.g. torch, onnxruntime or openvino "
                            "(default onnxruntime)")
    serve.add_argument("--arch", metavar="MODEL_DICT.json",
                       help="architecture of a checkpoint that does not record its own")
    serve.add_argument("--seq-len", type=clitools.positive_int, default=128,
                       help="tokens per request, padded or cut (default 128)")
    serve.add_argument("--top-k", type=clitools.positive_int, default=5, help="tokens per mask (default 5)")
    serve.add_argument("--http", type=_port, metavar="PORT",
                       help="serve HTTP on this port (0: a free one, printed on stderr)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on with --http (default 127.0.0.1)")
    serve.add_argument("--bench", type=clitools.positive_int, metavar="N",
                       help="run N seeded requests after warm-up and report latency percentiles and throughput")
    serve.add_argument("--warmup", type=clitools.non_negative_int, default=3,
                       help="untimed requests before --bench (default 3)")
    serve.add_argument("--seed", type=int, default=0,
                       help="seed of the --bench texts and of random weights (default 0)")
    serve.add_argument("--threads", type=clitools.positive_int,
                       help="runtime and MLM-head threads (default: the runtime's own choice)")
    serve.add_argument("--cpus", type=clitools.cpu_list,
                       help="pin this process and its threads to these CPUs, e.g. 1 or 0-3 (default: no pinning)")
    _add_space_option(serve)


def build_parser() -> argparse.ArgumentParser:
    parser = clitools.make_parser(
        PROG,
        "Sample, describe, export and serve architectures of the FlexiBERT 2.0 design space.",
        "flexibert sample -n 16 --method lhs_split --seed 0 --out seeds/\n"
        "flexibert describe seeds/ --seq-len 128\n"
        "flexibert sample -n 1 --seed 4 --out one/\n"
        "flexibert export one/*.json --format onnx,openvino --out exported/ --run",
    )
    subparsers = clitools.add_subcommands(parser)
    _add_sample_parser(subparsers)
    _add_describe_parser(subparsers)
    _add_export_parser(subparsers)
    _add_serve_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return clitools.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
