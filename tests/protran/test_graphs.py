"""Compiled-graph statistics: the on-disk cache, the costs+graph feature set and the profile CLI."""

import json
import sqlite3
import warnings

import numpy as np
import pytest

import protran._graphs as graphs
from flexibert import ArchSpec, LayerSpec, model_hash
from protran import (
    GRAPH_FEATURE_NAMES,
    GRAPH_OP_GROUPS,
    GraphCacheWarning,
    RunStore,
    cache_graph_stats_from_rows,
    compiled_graph_stats,
    get_runtime,
)
from protran.surrogates import COST_FEATURE_NAMES, FEATURE_SETS, feature_names, featurize, make_surrogate
from protran.vocabulary import COMPILED_FEATURE_SETS

SPEC = ArchSpec((LayerSpec(128, ("sa_sdp", "c_5"), (256,)), LayerSpec(128, ("sa_sdp", "sa_sdp"), (512,))))
OTHER = ArchSpec((LayerSpec(128, ("sa_sdp", "l_dft"), (256,)),))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGETRAN_CACHE", str(folder))
    return folder / "graphs"


@pytest.fixture
def compiles(monkeypatch):
    """Replace compilation by a fake that counts its calls: (arch hash, runtime name, batch, seq)."""
    calls = []

    def fake_compile(spec, runtime, batch_size, seq_len):
        calls.append((model_hash(spec), runtime.name, batch_size, seq_len))
        nodes = 10 * len(spec.layers) + seq_len // 16
        return nodes, {"matmul": 4 * len(spec.layers), "attention": 0, "norm": 2, "elementwise": 3,
                       "shape": nodes - 4 * len(spec.layers) - 5, "other": 0}, 0.25

    monkeypatch.setattr(graphs, "_compile", fake_compile)
    return calls


def test_second_call_reads_the_cache(cache_dir, compiles):
    first = compiled_graph_stats(SPEC, "onnxruntime", 1, 128)
    second = compiled_graph_stats(SPEC.to_model_dict(), "onnxruntime", 1, 128)
    assert len(compiles) == 1 and (cache_dir / "graphs.sqlite").is_file()
    assert not first.cached and second.cached
    assert (second.node_count, second.op_groups) == (first.node_count, first.op_groups)
    assert second.to_dict()["arch_hash"] == model_hash(SPEC) and second.compile_s == 0.25
    compiled_graph_stats(SPEC, "onnxruntime", 1, 64)  # another workload: compiled again
    compiled_graph_stats(OTHER, "onnxruntime", 1, 128)  # another architecture
    assert len(compiles) == 3


def test_key_holds_the_runtime_and_its_versions(cache_dir, compiles, monkeypatch):
    compiled_graph_stats(SPEC, "onnxruntime")
    compiled_graph_stats(SPEC, "openvino")
    assert [call[1] for call in compiles] == ["onnxruntime", "openvino"]
    assert "onnxruntime=" in compiled_graph_stats(SPEC, "onnxruntime").versions
    monkeypatch.setattr(graphs, "_versions_key", lambda runtime: "onnxruntime=99.0")  # an upgraded library
    assert not compiled_graph_stats(SPEC, "onnxruntime").cached
    assert len(compiles) == 3


def test_cache_dir_argument_and_default_location(tmp_path, compiles, monkeypatch):
    monkeypatch.delenv("EDGETRAN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert graphs.graph_cache_dir() == tmp_path / "xdg" / "edgetran" / "graphs"
    compiled_graph_stats(SPEC, "onnxruntime", cache_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "graphs.sqlite").is_file() and not (tmp_path / "xdg").exists()


def test_corrupt_cache_is_rebuilt_with_a_warning(cache_dir, compiles):
    cache_dir.mkdir(parents=True)
    (cache_dir / "graphs.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.warns(GraphCacheWarning, match="unreadable"):
        stats = compiled_graph_stats(SPEC, "onnxruntime")
    assert not stats.cached and len(compiles) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compiled_graph_stats(SPEC, "onnxruntime").cached


def test_unwritable_cache_folder_still_gives_the_graph(tmp_path, compiles):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(GraphCacheWarning, match="not usable"):
        stats = compiled_graph_stats(SPEC, "onnxruntime", cache_dir=blocker / "graphs")
    assert stats.node_count > 0 and len(compiles) == 1


def test_damaged_entry_is_compiled_again(cache_dir, compiles):
    compiled_graph_stats(SPEC, "onnxruntime")
    with sqlite3.connect(cache_dir / "graphs.sqlite") as db:
        db.execute("UPDATE graphs SET op_groups = 'not json'")
    assert not compiled_graph_stats(SPEC, "onnxruntime").cached and len(compiles) == 2


def test_unknown_runtime_is_one_line(cache_dir, compiles):
    with pytest.raises(ValueError, match="unknown runtime 'tvm'") as error:
        compiled_graph_stats(SPEC, "tvm")
    assert "\n" not in str(error.value) and "onnxruntime" in str(error.value)
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        featurize([SPEC], features="costs+graph", runtime="tvm")
    assert not compiles


def test_eager_torch_has_no_compiled_graph(cache_dir):
    with pytest.raises(ValueError, match="runs no compiled graph"):
        compiled_graph_stats(OTHER, "torch", 1, 16)


def test_rows_that_recorded_their_graph_fill_the_cache(cache_dir, compiles):
    engine = get_runtime("onnxruntime")

    class Row:
        arch_hash, runtime, batch_size, seq_len = model_hash(SPEC), "onnxruntime", 1, 128
        versions = {**engine.versions(), "numpy": "2.0", "protran": "0.1.0"}
        conditions = {"graph_node_count": 77, "graph_op_groups": dict.fromkeys(GRAPH_OP_GROUPS, 1)}

    class OldRow(Row):
        conditions = {"under_load": False}

    assert cache_graph_stats_from_rows([Row(), OldRow()]) == 1
    stats = compiled_graph_stats(SPEC, "onnxruntime")
    assert stats.cached and stats.node_count == 77 and not compiles


def test_costs_graph_features(cache_dir, compiles):
    assert "costs+graph" in FEATURE_SETS and "costs+graph" in COMPILED_FEATURE_SETS
    names = feature_names("costs+graph")
    assert names == [*COST_FEATURE_NAMES, *GRAPH_FEATURE_NAMES] and len(set(names)) == len(names)
    X = featurize([SPEC, OTHER], features="costs+graph", batch_size=1, seq_len=32, runtime="openvino")
    assert X.shape == (2, len(names)) and np.all(np.isfinite(X)) and np.all(X >= 0)
    np.testing.assert_array_equal(X[:, :len(COST_FEATURE_NAMES)],
                                  featurize([SPEC, OTHER], features="costs", batch_size=1, seq_len=32))
    assert X[:, len(COST_FEATURE_NAMES)].tolist() == [22.0, 12.0]
    assert len(compiles) == 2
    again = featurize([OTHER, SPEC, SPEC], features="costs+graph", batch_size=1, seq_len=32, runtime="openvino")
    np.testing.assert_array_equal(again, X[[1, 0, 0]])
    assert len(compiles) == 2  # every graph read from the cache
    assert featurize([], features="costs+graph", runtime="openvino").shape == (0, len(names))
    with pytest.raises(ValueError, match="give the runtime"):
        featurize([SPEC], features="costs+graph")
    assert featurize([SPEC], features="costs", runtime="tvm").shape == (1, len(COST_FEATURE_NAMES))


def test_additive_surrogate_fits_costs_graph(cache_dir, compiles):
    from flexibert import sample_architectures

    specs = sample_architectures(12, method="random", seed=3)
    X = featurize(specs, features="costs+graph", runtime="onnxruntime")
    nodes = X[:, len(COST_FEATURE_NAMES)]
    latency = 1e-3 + 2e-4 * nodes + 1e-3 * X[:, COST_FEATURE_NAMES.index("gflops")]
    model = make_surrogate("additive", seed=0, log_target=True, features="costs+graph").fit(X, latency)
    mean, std = model.predict(X, return_std=True)
    assert np.all(std >= 0) and np.median(np.abs(mean / latency - 1)) < 0.05


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_real_compilation_counts_every_node_once(cache_dir, runtime):
    stats = compiled_graph_stats(OTHER, runtime, 1, 16)
    assert stats.node_count > 10 and set(stats.op_groups) == set(GRAPH_OP_GROUPS)
    assert sum(stats.op_groups.values()) == stats.node_count and stats.op_groups["matmul"] > 0
    with get_runtime(runtime).prepare(OTHER, 1, 16, num_threads=1) as session:
        assert session.graph_node_count == stats.node_count


TINY_SPACE = """\
encoder_layers: [2]
hidden_size: [128]
attention_heads: [2, 4]
operation_types: [sa_sdp, c_5]
feed_forward_depth: [1]
feed_forward_dims: [256]
"""


def test_profile_cli_fits_costs_graph_and_reuses_measured_graphs(tmp_path, cache_dir, compiles, capsys):
    from protran.cli import main

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "runs"
    args = ["profile", "--device", "ci-cpu", "--space", str(space), "--seed-samples", "2", "--max-samples", "2",
            "--pool-size", "2", "--seq-len", "16", "--vocab-size", "500", "--time-cap-s", "2",
            "--target-rel-ci", "0.3", "--meter", "none", "--surrogate", "additive", "--features", "costs+graph",
            "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    with RunStore(summary["store"], readonly=True) as store:
        rows = store.measurements(status=("ok", "unstable"))
    assert rows and all(isinstance(row.conditions["graph_node_count"], int) for row in rows)
    assert all(sum(row.conditions["graph_op_groups"].values()) == row.conditions["graph_node_count"] for row in rows)
    measured = {row.arch_hash for row in rows}
    assert not measured & {call[0] for call in compiles}  # the measured graphs came from the rows
    manifest = json.loads((out / "ci-cpu.surrogates.json").read_text())
    assert manifest["features"] == "costs+graph" and manifest["runtime"] == "onnxruntime"
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(SPEC.to_model_dict()))
    assert main(["predict", "--surrogates", str(out), str(arch), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predicted"]["latency_s"]["mean"] > 0
    assert compiles == [(model_hash(SPEC), "onnxruntime", 1, 16)]  # a new architecture: compiled once
