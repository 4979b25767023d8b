"""GPTran on a BERT-Tiny-sized root with the shipped corpus, and the root trained alone for comparison.

1. ``gptran run`` (as a subprocess, timed) from BERT-Tiny (2 layers, h = 128, 2 x sa_sdp_64, ff [512]).
   Children are scored on the first half of the validation blocks (``--eval-blocks``).
2. The second half of the validation blocks is the test set, used only here, with fixed masks:
   - the best node of the search;
   - the root trained alone for the same total number of steps as the best node's lineage (root
     steps plus every ancestor's and its own), in two ways: *matched*, continuing the trained root
     through the same segments (steps, data seeds, fresh optimizer and schedule per segment) as the
     lineage, so that only the architecture differs; and *single run*, one schedule over all the
     steps from the same initial weights.
3. Writes ``tree.json``, ``losses.png`` and ``summary.json`` to ``benchmarks/results/gptran_tiny``.

Run: ``python benchmarks/gptran_tiny.py --seed 0`` (about 15-25 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gptran_tiny"
BERT_TINY = {
    "l": 2, "o": [["sa_sdp_64", "sa_sdp_64"], ["sa_sdp_64", "sa_sdp_64"]], "h": [128, 128], "f": [[512], [512]]
}


def _search_args(args: argparse.Namespace, model_dict: Path, work: Path, selection_blocks: int) -> list[str]:
    return [
        "run", "--model-dict", str(model_dict), "--corpus", str(REPO / "datasets" / "corpus"),
        "--steps-per-child", str(args.steps_per_child), "--max-nodes", str(args.max_nodes), "--seed", str(args.seed),
        "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--eval-blocks", str(selection_blocks), "--threads", str(args.threads), "--out", str(work), "--json",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-child", type=int, default=100)
    parser.add_argument("--max-nodes", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, help="keep the search state here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from flexibert import TextCorpus, load_tokenizer
    from gptran import GrowAndPrune, MLMTrainer, SearchConfig, plot_loss_curves

    corpus = TextCorpus.from_dir(REPO / "datasets" / "corpus", load_tokenizer(), args.seq_len)
    selection_blocks = len(corpus.validation) // 2
    test_blocks = corpus.validation[selection_blocks:]

    temporary = None if args.work_dir else tempfile.mkdtemp(prefix="gptran_tiny_")
    work = args.work_dir or Path(temporary)
    work.mkdir(parents=True, exist_ok=True)
    model_dict = work / "root.json"
    model_dict.write_text(json.dumps(BERT_TINY), encoding="utf-8")
    command = [sys.executable, "-m", "gptran.cli", *_search_args(args, model_dict, work, selection_blocks)]
    print("$", " ".join(command[1:]), flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    search_s = time.perf_counter() - started
    if done.returncode != 0:
        print(f"gptran run failed with status {done.returncode}", file=sys.stderr)
        return done.returncode
    reported = json.loads(done.stdout)

    # The same search object, read back from its state, for lineages and trained weights.
    config = SearchConfig(steps_per_child=args.steps_per_child, max_nodes=args.max_nodes, seed=args.seed)
    trainer = MLMTrainer(
        corpus, batch_size=args.batch_size, lr=args.lr, eval_blocks=corpus.validation[:selection_blocks]
    )
    search = GrowAndPrune(BERT_TINY, trainer, config, out_dir=work)
    best = search.best
    lineage = search.lineage(best.id)
    total_steps = best.lineage_steps

    def test_loss(model) -> float:
        return trainer.evaluate(model, test_blocks)

    best_test = test_loss(search.load_model(best.id))
    root_test = test_loss(search.load_model(0))
    started = time.perf_counter()
    matched = search.load_model(0)  # the trained root, continued through the lineage's segments
    for node in lineage[1:]:
        trainer.train(matched, node.steps, node.train_seed)
    matched_test = test_loss(matched)
    single = trainer.build_model(search.root_spec, search.nodes[0].init_seed)
    trainer.train(single, total_steps, search.nodes[0].train_seed)
    single_test = test_loss(single)
    baseline_s = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    tree = search.tree()
    (args.out / "tree.json").write_text(json.dumps(tree, indent=1), encoding="utf-8")
    plot_loss_curves(tree, args.out / "losses.png")
    modes = sorted({node.mode for node in search.trained})
    summary = {
        "command": "gptran " + " ".join(command[3:]).replace(str(REPO) + "/", "").replace(str(work), "OUT"),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("work_dir", "out")
        },
        "selection_blocks": selection_blocks,
        "test_blocks": len(test_blocks),
        "search_wall_s": round(search_s, 1),
        "baselines_wall_s": round(baseline_s, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "stop_reason": search.stop_reason,
        "nodes": len(reported["nodes"]),
        "modes_visited": modes,
        "backtracks": [event for event in search.events if event.get("kind") == "backtrack"],
        "search": reported,
        "best": {
            "id": best.id, "hash": best.hash, "model_dict": best.spec.to_model_dict(), "params": best.params,
            "selection_loss": best.loss, "test_loss": best_test, "lineage": [node.id for node in lineage],
            "lineage_modes": [node.mode for node in lineage], "total_steps": total_steps,
        },
        "root": {"hash": search.nodes[0].hash, "params": search.nodes[0].params, "steps": search.nodes[0].steps,
                 "selection_loss": search.nodes[0].loss, "test_loss": root_test},
        "root_alone_matched": {"steps": total_steps, "test_loss": matched_test},
        "root_alone_single_run": {"steps": total_steps, "test_loss": single_test},
        "best_beats_root_alone": bool(best_test < min(matched_test, single_test)),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("search_wall_s", "nodes", "modes_visited", "best", "root",
                                              "root_alone_matched", "root_alone_single_run", "best_beats_root_alone")},
                     indent=1))
    if temporary:
        shutil.rmtree(temporary, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
