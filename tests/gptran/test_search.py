import json

import pytest
import torch
import torch.nn.functional as F

from flexibert import ArchSpec, DesignSpace
from flexibert._model import build_mlm_model
from gptran._mutations import MODES
from gptran._search import GrowAndPrune, SearchConfig, run_search

torch.set_num_threads(1)

TINY = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
VOCAB = 20


class FakeTrainer:
    """Real (tiny) models, no training. Losses come from a script, in the order nodes are trained,
    or else fall with the parameter count, so that growing pays off and pruning costs a little."""

    def __init__(self, losses=None, interrupt_at=None):
        self.losses = list(losses or [])
        self.interrupt_at = interrupt_at
        self.trained = 0

    def build_model(self, spec, seed):
        return build_mlm_model(spec, seed=seed, vocab_size=VOCAB, max_positions=16)

    def train(self, model, steps, seed):
        self.trained += 1
        if self.interrupt_at is not None and self.trained == self.interrupt_at:
            raise KeyboardInterrupt
        return [(step, 5.0 - step / (10 * steps)) for step in range(0, steps + 1, max(1, steps // 4))]

    def evaluate(self, model):
        if self.losses:
            return self.losses.pop(0)
        return 5.0 - sum(p.numel() for p in model.encoder.parameters()) / 1e6

    def batch_loss(self, model, seed):
        ids = torch.randint(5, VOCAB, (2, 8), generator=torch.Generator().manual_seed(seed % 2**31))
        return F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())


def _config(**overrides):
    settings = {"steps_per_child": 4, "max_nodes": 14, "num_samples": 3, "seed": 0}
    return SearchConfig(**(settings | overrides))


def test_search_visits_all_modes_and_stays_in_the_space():
    search = run_search(TINY, FakeTrainer(), _config())
    space = DesignSpace.default()
    modes = {node.mode for node in search.trained}
    assert modes == {"root", *MODES}
    assert len(search.trained) == 14 and search.stop_reason == "max_nodes"
    for node in search.trained:
        assert space.contains(node.spec)
        if node.parent is not None:
            assert node.lineage_steps == search.nodes[node.parent].lineage_steps + node.steps
    summary = search.summary()
    assert set(summary) == {"nodes", "best"}
    assert all(set(row) == {"id", "parent", "mode", "hash", "params", "loss"} for row in summary["nodes"])
    assert summary["nodes"][0]["parent"] is None and summary["nodes"][0]["mode"] == "root"
    assert summary["best"] == min(summary["nodes"], key=lambda row: row["loss"])["id"]
    json.dumps(search.tree())  # JSON-ready


def test_children_never_repeat_their_lineage():
    search = run_search(TINY, FakeTrainer(), _config(max_nodes=14))
    for node in search.trained[1:]:
        assert node.spec not in {ancestor.spec for ancestor in search.lineage(node.id)[:-1]}


def test_a_small_budget_still_visits_every_mode():
    search = run_search(TINY, FakeTrainer(), _config(num_samples=5, max_nodes=8))
    assert [node.mode for node in search.trained] == ["root"] + ["grow_attn_head"] * 4 + list(MODES[1:])


def test_steps_follow_table_iv_ratios():
    config = SearchConfig(steps_per_child=100)
    assert [config.steps_for(mode) for mode in ("root", *MODES)] == [100, 100, 250, 150, 100]
    assert SearchConfig(steps_per_child=100, paper_step_ratios=False).steps_for("grow_ffnn") == 100


def test_backtracks_to_the_next_best_node_when_a_branch_stops_improving():
    losses = [
        5.0,  # 0 root
        4.0, 4.5,  # 1, 2: grow_attn_head from 0 -> 1 accepted
        4.2, 4.3,  # 3, 4: grow_ffnn from 1, no child beats 4.0 -> fail 1
        # (prune_attn_head from 1 would give back the root's architecture: skipped)
        4.9,  # 5: prune_ffnn from 1, worse than 4.0 * 1.02 -> fail 2 -> backtrack
        4.1, 4.4,  # 6, 7: grow_ffnn from 2 (the next-best open node) -> 6 accepted
    ]
    search = run_search(TINY, FakeTrainer(losses), _config(num_samples=2, max_nodes=9, branch_patience=2))
    modes = [(node.id, node.parent, node.mode) for node in search.trained]
    assert modes[5] == (5, 1, "prune_ffnn") and "prune_attn_head" in search.nodes[1].explored
    assert search.events == [{"from": 1, "to": 2, "after_node": 5, "kind": "backtrack"}]
    assert search.nodes[1].stalled and not search.nodes[2].stalled
    assert [(n.parent, n.mode) for n in search.nodes[6:8]] == [(2, "grow_ffnn")] * 2
    assert search.nodes[6].accepted and search.current == 6
    assert search.best.id == 1


def test_branch_patience_one_backtracks_after_a_single_failure():
    losses = [5.0, 4.0, 4.5, 4.2, 4.3, 4.4, 4.6]
    search = run_search(TINY, FakeTrainer(losses), _config(num_samples=2, max_nodes=7, branch_patience=1))
    assert search.events[0]["from"] == 1 and search.events[0]["to"] == 2
    assert search.nodes[5].parent == 2


def test_pruned_child_is_kept_only_within_the_tolerance():
    # root, two grows (accept 1 at 4.0), two ffnn grows (accept 3 at 3.9), then prune_attn_head
    within = [5.0, 4.0, 4.5, 3.9, 4.2, 3.9 * 1.019]
    search = run_search(TINY, FakeTrainer(within), _config(num_samples=2, max_nodes=7))
    assert search.nodes[5].mode == "prune_attn_head" and search.nodes[5].accepted
    assert search.current == 5 and search.best.id == 3
    beyond = within[:-1] + [3.9 * 1.021]
    search = run_search(TINY, FakeTrainer(beyond), _config(num_samples=2, max_nodes=7))
    assert search.nodes[5].accepted is False and search.current == 3


def test_stops_when_the_best_loss_stops_improving():
    losses = [5.0] + [6.0] * 40
    search = run_search(
        TINY, FakeTrainer(losses), _config(num_samples=2, max_nodes=40, stop_patience=2, branch_patience=5)
    )
    assert search.stop_reason == "no_improvement"
    assert search.best.id == 0


def test_interrupted_search_resumes_to_the_same_tree(tmp_path):
    config = _config(max_nodes=9)
    reference = run_search(TINY, FakeTrainer(), config).summary()
    with pytest.raises(KeyboardInterrupt):
        run_search(TINY, FakeTrainer(interrupt_at=6), config, out_dir=tmp_path)
    saved = json.loads((tmp_path / "search.json").read_text())
    assert sum(node["status"] == "trained" for node in saved["nodes"]) == 5
    assert len(list((tmp_path / "checkpoints").glob("node-*.pt"))) == 5
    resumed = run_search(TINY, FakeTrainer(), config, out_dir=tmp_path)
    assert resumed.summary() == reference
    # a larger budget extends a finished search instead of starting over
    extended = run_search(TINY, FakeTrainer(), _config(max_nodes=11), out_dir=tmp_path)
    assert len(extended.trained) == 11 and extended.summary()["nodes"][:9] == reference["nodes"]


def test_resuming_with_other_settings_is_refused(tmp_path):
    run_search(TINY, FakeTrainer(), _config(max_nodes=2), out_dir=tmp_path)
    with pytest.raises(ValueError, match="different root or settings"):
        GrowAndPrune(TINY, FakeTrainer(), _config(max_nodes=2, seed=1), out_dir=tmp_path)
    other = dict(TINY, f=[[1024], [512]])
    with pytest.raises(ValueError, match="different root or settings"):
        GrowAndPrune(other, FakeTrainer(), _config(max_nodes=2), out_dir=tmp_path)


def test_checkpoints_hold_trained_weights(tmp_path):
    search = run_search(TINY, FakeTrainer(), _config(max_nodes=3), out_dir=tmp_path)
    model = search.load_model(2)
    assert ArchSpec.from_model_dict(search.tree()["nodes"][2]["spec"]) == model.encoder.spec
    state = torch.load(tmp_path / "checkpoints" / "node-2.pt", weights_only=True)
    torch.testing.assert_close(state["encoder.layers.0.output_norm.weight"], model.encoder.layers[0].output_norm.weight)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="max_nodes"):
        SearchConfig(max_nodes=0)
    with pytest.raises(ValueError, match="transfer"):
        SearchConfig(transfer="copy")
    with pytest.raises(ValueError, match="prune_tolerance"):
        SearchConfig(prune_tolerance=-1)
    outside = dict(TINY, o=[["sa_sdp_42"] * 3] * 2)
    with pytest.raises(ValueError, match="3 heads"):
        GrowAndPrune(outside, FakeTrainer())


def test_an_executor_trains_an_expansions_children_at_once_with_the_same_numbers():
    import pickle

    batches = []

    def elsewhere(fn, argument_tuples):
        """Every child shipped (pickled) as to another process, trained in reverse order; results in order."""
        batches.append(len(argument_tuples))
        shipped = [pickle.loads(pickle.dumps(arguments)) for arguments in argument_tuples]
        return [fn(*arguments) for arguments in reversed(shipped)][::-1]

    local = run_search(TINY, FakeTrainer(), _config(max_nodes=7))
    remote = run_search(TINY, FakeTrainer(), _config(max_nodes=7), executor=elsewhere)
    assert remote.summary() == local.summary() and remote.stop_reason == local.stop_reason
    assert [n.transferred_fraction for n in remote.trained] == [n.transferred_fraction for n in local.trained]
    for node in local.trained:
        ours, theirs = local.load_model(node.id).state_dict(), remote.load_model(node.id).state_dict()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert batches and max(batches) == 3  # num_samples children of an expansion in one call
