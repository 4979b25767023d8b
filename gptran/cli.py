"""The ``gptran`` command: grow and prune an architecture under the masked-language-modelling loss."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexibert import DesignSpace, clitools, model_hash
from flexibert.choices import EXPORT_FORMATS, TRANSFER_MODES

PROG = "gptran"
DEFAULT_RUNS_DIR = Path("gptran-runs")


def _load_root(path: str, space: DesignSpace):
    from flexibert.cli import read_architectures

    architectures = read_architectures([path], space)
    if len(architectures) != 1:
        raise clitools.CliError(f"{path} holds {len(architectures)} architectures; gptran run takes a file with one")
    return architectures[0][1]


def _config(args: argparse.Namespace):
    from gptran._search import SearchConfig

    return SearchConfig(
        steps_per_child=args.steps_per_child, max_nodes=args.max_nodes, num_samples=args.num_samples,
        prune_samples=args.prune_samples, prune_tolerance=args.prune_tolerance,
        branch_patience=args.branch_patience, stop_patience=args.stop_patience, transfer=args.transfer,
        paper_step_ratios=not args.equal_steps, seed=args.seed,
    )


def _data_identity(args: argparse.Namespace, tokenizer_path: Path) -> dict[str, Any]:
    return {
        "corpus": str(Path(args.corpus).resolve()), "tokenizer": str(tokenizer_path.resolve()),
        "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr, "eval_blocks": args.eval_blocks,
    }


def _default_out(spec, config, data: dict[str, Any]) -> Path:
    """One directory per root and settings, so that the same command resumes and another starts afresh."""
    settings = json.dumps({"search": config.identity(), "data": data}, sort_keys=True)
    return DEFAULT_RUNS_DIR / f"{model_hash(spec)[:8]}-{hashlib.sha1(settings.encode()).hexdigest()[:8]}"


def _check_data_identity(out: Path, data: dict[str, Any]) -> None:
    path = out / "data.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != data:
            changed = sorted(key for key in data if saved.get(key) != data[key])
            raise clitools.CliError(
                f"{out} holds a search with other data settings ({', '.join(changed)}); use another --out"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")


class _SearchProgress:
    """The search's events as progress: one step per trained model (its mode, parent, loss, size and
    training time), and the verdict of every expansion, each backtrack and the end as lines of their own."""

    def __init__(self, progress: clitools.Progress) -> None:
        self._progress = progress

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "node":
            node = event["node"]
            parent = "-" if node.parent is None else node.parent
            # kept: the expansion lines below name nodes by id, so each node's line stays on a terminal too
            self._progress.step(f"node {node.id} ({node.mode}, parent {parent}): {node.description}; "
                                f"loss {node.loss:.4f}, {node.params / 1e6:.2f} M params, {node.steps} steps, "
                                f"{node.train_s:.0f} s", done=event["trained"], keep=True)
        elif kind == "expansion":
            expansion, parent, best = event["expansion"], event["parent"], event["best_child"]
            verdict = f"node {best.id} accepted" if expansion.accepted is not None else "no child accepted"
            self._progress.write(f"  {expansion.mode} from node {parent.id} ({parent.loss:.4f}): best child "
                                 f"{best.id} ({best.loss:.4f}), {verdict}")
        elif kind == "children":
            self._progress.write(f"  training {len(event['nodes'])} children of node {event['parent']} at once "
                                 f"(nodes {', '.join(str(node.id) for node in event['nodes'])})")
        elif kind == "backtrack":
            self._progress.write(f"  branch at node {event['from']} stopped improving: backtracking to node "
                                 f"{event['to']}")
        elif kind == "finished":
            self._progress.write(f"search finished ({event['reason']}); best node {event['best']}")


def _write_outputs(search, out: Path, export_formats: Sequence[str], seq_len: int) -> dict[str, Any]:
    from gptran._plots import plot_loss_curves

    tree = search.tree()
    (out / "tree.json").write_text(json.dumps(tree, indent=1), encoding="utf-8")
    plot_loss_curves(tree, out / "losses.png")
    best = search.best
    best_dir = out / "best"
    best_dir.mkdir(parents=True, exist_ok=True)
    (best_dir / "model_dict.json").write_text(json.dumps(best.spec.to_model_dict(), indent=1), encoding="utf-8")
    import torch

    model = search.load_model(best.id)
    torch.save(model.state_dict(), best_dir / "mlm_state_dict.pt")
    exported = {}
    if export_formats:
        from flexibert import export

        paths = export(model.encoder, best_dir, formats=export_formats, seq_len=seq_len)
        exported = {fmt: str(path) for fmt, path in paths.items()}
    return {
        "tree": str(out / "tree.json"), "plot": str(out / "losses.png"), "best_dir": str(best_dir), "exports": exported,
    }


def _cmd_run(args: argparse.Namespace) -> int:
    space = DesignSpace.default() if args.space is None else DesignSpace.from_yaml(args.space)
    root = _load_root(args.model_dict, space)
    corpus_dir = Path(args.corpus)
    if not corpus_dir.is_dir():
        raise clitools.CliError(f"--corpus {corpus_dir}: not a directory")
    tokenizer_path = Path(args.tokenizer) if args.tokenizer else corpus_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise clitools.CliError(f"tokenizer not found: {tokenizer_path} (pass --tokenizer FILE)")
    _check_executor(args)
    config = _config(args)
    data = _data_identity(args, tokenizer_path)
    out = Path(args.out) if args.out else _default_out(root, config, data)
    _check_data_identity(out, data)

    import torch

    from flexibert import TextCorpus, load_tokenizer
    from gptran._search import GrowAndPrune, MLMTrainer

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    corpus = TextCorpus.from_dir(corpus_dir, load_tokenizer(tokenizer_path), args.seq_len)
    eval_blocks = corpus.validation[: args.eval_blocks] if args.eval_blocks else None
    trainer = MLMTrainer(corpus, batch_size=args.batch_size, lr=args.lr, eval_blocks=eval_blocks)
    resume_hint = f"every trained model is saved in {out}; run the same command (with --out {out}) to resume"
    executor = None
    if args.executor == "ray":  # each expansion's children at once, one Ray task each
        from flexibert import ray_executor

        with contextlib.redirect_stdout(sys.stderr):  # Ray's messages are not the result
            executor = ray_executor(args.ray_address, num_cpus=args.threads if args.num_cpus is None else args.num_cpus,
                                    num_gpus=args.num_gpus or 0.0, threads=args.threads)
    try:
        with clitools.resumable(resume_hint), clitools.Progress(config.max_nodes, "grow-and-prune", "model") as bar:
            search = GrowAndPrune(root, trainer, config, out_dir=out, space=space, progress=_SearchProgress(bar),
                                  executor=executor)
            if search.trained:
                bar.resume_from(len(search.trained))
                bar.write(f"resuming the search in {out} ({len(search.trained)} models trained)")
            else:
                bar.write(f"searching from {model_hash(root)[:8]} in {out}")
            with contextlib.redirect_stdout(sys.stderr) if executor is not None else contextlib.nullcontext():
                search.run()
    finally:
        if executor is not None:
            executor.close()
    outputs = _write_outputs(search, out, args.export or (), args.seq_len)
    elapsed_s = time.perf_counter() - started
    if args.json:
        clitools.print_json(search.summary())
        return clitools.EXIT_OK
    best = search.best
    rows = [
        (n.id, "-" if n.parent is None else n.parent, n.mode, n.hash[:8], f"{n.params / 1e6:.3f}", f"{n.loss:.4f}",
         {True: "yes", False: "no", None: "-"}[n.accepted] + (" *" if n.id == best.id else ""))
        for n in search.trained
    ]
    clitools.print_table(rows, ("id", "parent", "mode", "hash", "params_M", "loss", "accepted"))
    print(f"best: node {best.id} ({best.hash}), loss {best.loss:.4f}, {best.params / 1e6:.3f} M params; "
          f"stopped: {search.stop_reason}; {elapsed_s:.0f} s")
    print(f"tree: {outputs['tree']}  curves: {outputs['plot']}  model: {outputs['best_dir']}")
    for fmt, path in outputs["exports"].items():
        print(f"exported {fmt}: {path}")
    return clitools.EXIT_OK


def _check_executor(args: argparse.Namespace) -> None:
    """Ray's options need --executor ray; a missing extra fails in one line before anything is trained."""
    if args.executor == "local":
        for flag, value in (("--ray-address", args.ray_address), ("--num-cpus", args.num_cpus),
                            ("--num-gpus", args.num_gpus)):
            if value is not None:
                raise clitools.CliError(f"{flag} needs --executor ray")
        return
    from flexibert.lazy import optional_dependency

    with optional_dependency("running on a Ray cluster (--executor ray)"):
        import ray  # noqa: F401


_EXAMPLE = (
    "echo '{\"l\": 2, \"o\": [[\"sa_sdp_64\", \"sa_sdp_64\"], [\"sa_sdp_64\", \"sa_sdp_64\"]], "
    "\"h\": [128, 128], \"f\": [[512], [512]]}' > tiny.json\n"
    "gptran run --model-dict tiny.json --corpus datasets/corpus --steps-per-child 100 --max-nodes 12 --seed 0"
)


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    run = clitools.add_command(
        subparsers, "run", _cmd_run, "grow-and-prune search from one architecture", _EXAMPLE,
        description=(
            "Train the root, then expand nodes in the cycle grow_attn_head -> grow_ffnn -> prune_attn_head ->\n"
            "prune_ffnn. Children inherit their parent's weights, train, and are scored by held-out MLM loss;\n"
            "the best child of a grow is accepted if it beats its parent, a pruned child if it is at most\n"
            "--prune-tolerance worse. A branch that stops improving backtracks to the next-best node.\n\n"
            "Steps per child follow the paper's Table IV ratios: N for the root, grow_attn_head and\n"
            "prune_ffnn, 2.5 N for grow_ffnn, 1.5 N for prune_attn_head (--equal-steps: N for all).\n\n"
            "The state is saved after every model under --out (default gptran-runs/<hash>-<settings>);\n"
            "after Ctrl-C, the same command resumes. Outputs there: tree.json, losses.png, and best/\n"
            "(model_dict.json, mlm_state_dict.pt, and any --export files)."
        ),
    )
    run.add_argument("--model-dict", required=True, metavar="FILE", help="JSON file with the root model_dict")
    run.add_argument("--corpus", required=True, metavar="DIR",
                     help="text corpus directory (train.txt [+ validation.txt], or *.txt files)")
    run.add_argument("--tokenizer", metavar="FILE", help="tokenizers JSON file (default: DIR/tokenizer.json)")
    run.add_argument("--steps-per-child", type=clitools.positive_int, default=100, metavar="N",
                     help="training steps of the root and of a grow_attn_head child (default 100)")
    run.add_argument("--max-nodes", type=clitools.positive_int, default=12, metavar="N",
                     help="models to train, root included (default 12)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--out", metavar="DIR", help="state and output directory (see above)")
    run.add_argument("--num-samples", type=clitools.positive_int, default=5, metavar="N",
                     help="children per grow (default 5)")
    run.add_argument("--prune-samples", type=clitools.positive_int, default=1, metavar="N",
                     help="children per prune (default 1)")
    run.add_argument("--prune-tolerance", type=clitools.non_negative_float, default=0.02, metavar="F",
                     help="a pruned child may be this fraction worse than its parent (default 0.02)")
    run.add_argument("--branch-patience", type=clitools.positive_int, default=2, metavar="N",
                     help="expansions without an accepted child before backtracking (default 2)")
    run.add_argument("--stop-patience", type=clitools.positive_int, default=5, metavar="N",
                     help="expansions without a new best loss before stopping (default 5)")
    run.add_argument("--transfer", choices=TRANSFER_MODES, default="ordered",
                     help="weight transfer mode (default ordered); the two differ only where hidden widths "
                          "differ, which grow and prune never change")
    run.add_argument("--equal-steps", action="store_true", help="train every child --steps-per-child steps")
    run.add_argument("--seq-len", type=clitools.positive_int, default=64, help="tokens per block (default 64)")
    run.add_argument("--batch-size", type=clitools.positive_int, default=16, help="blocks per step (default 16)")
    run.add_argument("--lr", type=clitools.positive_float, default=1e-3,
                     help="peak learning rate of every child (default 1e-3)")
    run.add_argument("--eval-blocks", type=clitools.positive_int, metavar="N",
                     help="score on the first N validation blocks only (default: all)")
    run.add_argument("--threads", type=clitools.positive_int, default=1, metavar="N",
                     help="torch CPU threads (default 1: small models gain little from more, and on a busy "
                          "machine extra threads slow training down several times)")
    run.add_argument("--export", type=clitools.comma_list(EXPORT_FORMATS), metavar="FORMATS",
                     help=f"also export the best encoder ({', '.join(EXPORT_FORMATS)}, comma-separated)")
    run.add_argument("--space", metavar="YAML", help="design space file (default: FlexiBERT 2.0)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local (default): train the children here, one after another; ray: the children of "
                          "each expansion at once, one Ray task each, with the same numbers; needs "
                          "pip install 'edgetran[ray]'")
    run.add_argument("--ray-address", metavar="ADDR", help="with --executor ray: the cluster, e.g. HEAD:6379 "
                                                             "(default: RAY_ADDRESS or this machine's cluster)")
    run.add_argument("--num-cpus", type=clitools.positive_float, default=None,
                     help="with --executor ray: CPUs each child's task reserves (default: --threads)")
    run.add_argument("--num-gpus", type=clitools.non_negative_float, default=None,
                     help="with --executor ray: GPUs each child's task reserves (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = clitools.make_parser(
        PROG, "Grow and prune a FlexiBERT 2.0 architecture block by block under the MLM loss (GPTran).", _EXAMPLE
    )
    _add_run_parser(clitools.add_subcommands(parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return clitools.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
