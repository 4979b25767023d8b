"""What a runtime's compiler makes of an architecture: the node count of the graph it really runs.

Analytic cost features (parameters, FLOPs, activation bytes) describe the model as written. A runtime
runs something else: ONNX Runtime fuses attention, LayerNorm and GELU patterns into single kernels and
OpenVINO merges element-wise chains into subgraphs, so two architectures with equal FLOPs can launch
very different numbers of kernels. :func:`compiled_graph_stats` exports and compiles an architecture
(no timing) and reports the compiled graph's node count and its nodes by op group
(:data:`GRAPH_OP_GROUPS`); the ``costs+graph`` feature set appends them to the cost features.

Compiling takes seconds (the export dominates; see ``benchmarks/compiler_features.py``), so results
are kept on disk in a small SQLite cache keyed by architecture hash, runtime name, batch size,
sequence length and the versions of the libraries involved (a new ONNX Runtime compiles differently).
The cache lives in ``$EDGETRAN_CACHE/graphs`` or else the user's cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache``)``/edgetran/graphs``. Readers and writers may share it (SQLite
locking with a busy timeout); a file that is not a readable cache is replaced with a warning.

Where measured rows already recorded the graph (the measuring worker stores ``graph_node_count`` and
``graph_op_groups`` in a row's ``conditions``), :func:`cache_graph_stats_from_store` fills the cache
from them instead of compiling again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_FILENAME = "graphs.sqlite"
#: Op groups of a compiled graph, in feature order; every node falls in exactly one.
GRAPH_OP_GROUPS: tuple[str, ...] = ("matmul", "attention", "norm", "elementwise", "shape", "other")
#: Columns the ``costs+graph`` feature set appends to the cost features.
GRAPH_FEATURE_NAMES: tuple[str, ...] = ("graph_nodes", *(f"graph_{group}_nodes" for group in GRAPH_OP_GROUPS))

# Op types (ONNX Runtime's optimised ONNX ops, OpenVINO's executed layer types), lower-cased, by group;
# anything unlisted counts as "other".
_GROUP_OF_OP = {
    **dict.fromkeys(("matmul", "gemm", "fusedmatmul", "matmulinteger", "qlinearmatmul", "matmulnbits",
                     "fullyconnected", "conv", "convolution", "qlinearconv", "convinteger",
                     "groupconvolution", "dft", "rdft"), "matmul"),
    **dict.fromkeys(("attention", "multiheadattention", "scaleddotproductattention", "groupqueryattention",
                     "sdpa", "packedattention", "softmax"), "attention"),
    **dict.fromkeys(("layernormalization", "skiplayernormalization", "simplifiedlayernormalization",
                     "skipsimplifiedlayernormalization", "embedlayernormalization", "mvn", "rms",
                     "normalizel2"), "norm"),
    **dict.fromkeys(("add", "sub", "mul", "div", "pow", "sqrt", "erf", "tanh", "relu", "gelu", "biasgelu",
                     "fastgelu", "sigmoid", "exp", "neg", "abs", "cast", "eltwise", "subgraph", "where",
                     "equal", "less", "greater", "reducemean", "reducesum", "reduce", "math",
                     "quantizelinear", "dequantizelinear", "fakequantize", "convert", "activation"), "elementwise"),
    **dict.fromkeys(("reshape", "transpose", "slice", "split", "concat", "concatenation", "pad", "gather",
                     "squeeze", "unsqueeze", "expand", "tile", "reorder", "stridedslice", "variadicsplit",
                     "broadcast", "shapeof", "shape", "constantofshape", "identity", "flatten", "range",
                     "input", "parameter", "output", "result", "const", "constant"), "shape"),
}


class GraphCacheWarning(UserWarning):
    """The graph cache file was unreadable and has been rebuilt, or could not be used at all."""


@dataclass(frozen=True)
class CompiledGraphStats:
    """The compiled graph of one architecture in one runtime and workload.

    ``node_count``: nodes of the graph the runtime runs after its own optimisation (as
    ``Session.graph_node_count``); ``op_groups``: those nodes by :data:`GRAPH_OP_GROUPS` (empty where
    the runtime's graph cannot be inspected by op type); ``compile_s``: seconds the export and
    compilation took when the entry was made (0 where it came from a measured row); ``versions``:
    the libraries it was compiled with; ``cached``: whether this call read it from the cache.
    """

    arch_hash: str
    runtime: str
    batch_size: int
    seq_len: int
    node_count: int
    op_groups: dict[str, int] = field(default_factory=dict)
    compile_s: float = 0.0
    versions: str = ""
    cached: bool = False

    def features(self) -> list[float]:
        """The ``costs+graph`` columns (:data:`GRAPH_FEATURE_NAMES`): the node count, then each group."""
        return [float(self.node_count), *(float(self.op_groups.get(group, 0)) for group in GRAPH_OP_GROUPS)]

    def to_dict(self) -> dict[str, Any]:
        """``{"arch_hash", "runtime", "batch_size", "seq_len", "node_count", "op_groups": {group: n},
        "compile_s", "versions", "cached"}``."""
        return {"arch_hash": self.arch_hash, "runtime": self.runtime, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "node_count": self.node_count, "op_groups": dict(self.op_groups),
                "compile_s": self.compile_s, "versions": self.versions, "cached": self.cached}


def graph_cache_dir() -> Path:
    """``$EDGETRAN_CACHE/graphs``, else ``$XDG_CACHE_HOME/edgetran/graphs``, else ``~/.cache/edgetran/graphs``."""
    if os.environ.get("EDGETRAN_CACHE"):
        return Path(os.environ["EDGETRAN_CACHE"]) / "graphs"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgetran" / "graphs"


# -- inspecting a prepared session --------------------------------------------------------------------


def op_group(op_type: str) -> str:
    """The group (:data:`GRAPH_OP_GROUPS`) of one op type, e.g. ``SkipLayerNormalization`` -> ``norm``."""
    return _GROUP_OF_OP.get(op_type.lower(), "other")


def session_op_types(session: Any) -> list[str] | None:
    """Op types of the nodes a prepared ``Session`` runs, or None where its graph cannot be read.

    ONNX Runtime sessions save their optimised graph beside the export (``model.optimized.onnx``);
    OpenVINO sessions expose the compiled runtime model, whose nodes name their executed layer type.
    """
    compiled = getattr(session, "_compiled", None)
    if compiled is not None and hasattr(compiled, "get_runtime_model"):
        types = []
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            types.append(info["layerType"].astype(str) if "layerType" in info else op.get_type_name())
        return types
    workdir = getattr(session, "workdir", None)
    optimized = Path(workdir) / "model.optimized.onnx" if workdir is not None else None
    if optimized is not None and optimized.is_file():
        import onnx

        return [node.op_type for node in onnx.load(str(optimized), load_external_data=False).graph.node]
    return None


def group_counts(op_types: Sequence[str]) -> dict[str, int]:
    """Nodes per op group, every group present (zeros included)."""
    counts = Counter(op_group(op) for op in op_types)
    return {group: int(counts.get(group, 0)) for group in GRAPH_OP_GROUPS}


def session_graph_record(session: Any) -> dict[str, Any]:
    """``{"graph_node_count": n | None, "graph_op_groups": {group: n} | None}`` of a prepared session:
    what a measurement stores with its row so that the cache need not compile it again."""
    try:
        types = session_op_types(session)
    except Exception:  # inspecting is a bonus; a runtime whose graph reads differently still measures
        types = None
    return {"graph_node_count": session.graph_node_count,
            "graph_op_groups": group_counts(types) if types is not None else None}


# -- compiling ------------------------------------------------------------------------------------------


def _versions_key(runtime: Any) -> str:
    return ";".join(f"{name}={version}" for name, version in sorted(_library_versions(runtime).items()))


@functools.lru_cache(maxsize=32)
def _library_versions_of(runtime_type: type, name: str) -> tuple[tuple[str, str], ...]:
    # Reading package metadata takes milliseconds; installed versions do not change within a process.
    from protran._runtimes import get_runtime

    return tuple(get_runtime(name).versions().items())


def _library_versions(runtime: Any) -> dict[str, str]:
    return dict(_library_versions_of(type(runtime), runtime.name))


def _compile(spec: Any, runtime: Any, batch_size: int, seq_len: int) -> tuple[int, dict[str, int], float]:
    """Export and compile once (no timing of inference); the node count, op groups and seconds taken."""
    start = time.perf_counter()
    with runtime.prepare(spec, batch_size, seq_len, num_threads=1) as session:
        record = session_graph_record(session)
    seconds = time.perf_counter() - start
    if record["graph_node_count"] is None:
        raise ValueError(f"runtime '{runtime.name}' runs no compiled graph (e.g. eager torch); choose a "
                         "runtime that compiles one, such as onnxruntime or openvino")
    return int(record["graph_node_count"]), record["graph_op_groups"] or {}, seconds


# -- the cache ------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graphs (
    arch_hash TEXT NOT NULL,
    runtime TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    seq_len INTEGER NOT NULL,
    versions TEXT NOT NULL,
    node_count INTEGER NOT NULL,
    op_groups TEXT NOT NULL,
    compile_s REAL NOT NULL,
    PRIMARY KEY (arch_hash, runtime, batch_size, seq_len, versions)
)
"""


class GraphCache:
    """The on-disk cache of :class:`CompiledGraphStats` (one SQLite file in ``folder``)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else graph_cache_dir()
        self.path = self.folder / CACHE_FILENAME

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            connection = self._open()
        except sqlite3.OperationalError:
            raise  # locked for longer than the timeout, or not writable: the file itself is fine
        except sqlite3.DatabaseError as error:
            warnings.warn(f"graph cache {self.path} is unreadable ({error}); rebuilding it", GraphCacheWarning,
                          stacklevel=4)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            connection = self._open()
        try:
            yield connection
        finally:
            connection.close()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30.0)
        try:
            connection.execute(_SCHEMA)
            connection.execute("SELECT count(*) FROM graphs").fetchone()  # a damaged file fails here
            connection.commit()
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def get(self, arch_hash: str, runtime: str, batch_size: int, seq_len: int,
            versions: str) -> CompiledGraphStats | None:
        try:
            with self._connect() as db:
                row = db.execute(
                    "SELECT node_count, op_groups, compile_s FROM graphs WHERE arch_hash = ? AND runtime = ? "
                    "AND batch_size = ? AND seq_len = ? AND versions = ?",
                    (arch_hash, runtime, batch_size, seq_len, versions)).fetchone()
        except (sqlite3.OperationalError, OSError) as error:
            self._unavailable(error)
            return None
        if row is None:
            return None
        try:
            groups = {str(k): int(v) for k, v in json.loads(row[1]).items()}
        except (ValueError, TypeError, AttributeError):
            return None  # a damaged entry: compile again and overwrite it
        return CompiledGraphStats(arch_hash, runtime, batch_size, seq_len, int(row[0]), groups, float(row[2]),
                                  versions, cached=True)

    def get_many(self, arch_hashes: Sequence[str], runtime: str, batch_size: int, seq_len: int,
                 versions: str) -> dict[str, CompiledGraphStats]:
        """The cached entries among ``arch_hashes`` (one connection for all), by hash."""
        wanted = set(arch_hashes)
        try:
            with self._connect() as db:
                rows = db.execute("SELECT arch_hash, node_count, op_groups, compile_s FROM graphs WHERE runtime = ? "
                                  "AND batch_size = ? AND seq_len = ? AND versions = ?",
                                  (runtime, batch_size, seq_len, versions)).fetchall()
        except (sqlite3.OperationalError, OSError) as error:
            self._unavailable(error)
            return {}
        found = {}
        for arch_hash, node_count, groups, compile_s in rows:
            if arch_hash not in wanted:
                continue
            try:
                parsed = {str(k): int(v) for k, v in json.loads(groups).items()}
            except (ValueError, TypeError, AttributeError):
                continue  # a damaged entry: compiled again and overwritten
            found[arch_hash] = CompiledGraphStats(arch_hash, runtime, batch_size, seq_len, int(node_count), parsed,
                                                  float(compile_s), versions, cached=True)
        return found

    def put(self, stats: CompiledGraphStats) -> None:
        try:
            with self._connect() as db:
                db.execute("INSERT OR REPLACE INTO graphs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (stats.arch_hash, stats.runtime, stats.batch_size, stats.seq_len, stats.versions,
                            stats.node_count, json.dumps(stats.op_groups), stats.compile_s))
                db.commit()
        except (sqlite3.OperationalError, OSError) as error:
            self._unavailable(error)

    def _unavailable(self, error: Exception) -> None:
        # The cache only saves time: a folder that cannot be written (or a lock held too long) costs a
        # compilation, not the prediction.
        warnings.warn(f"graph cache {self.path} is not usable ({error}); compiling without it; set "
                      "EDGETRAN_CACHE to a writable folder", GraphCacheWarning, stacklevel=4)


def compiled_graph_stats(spec: Any, runtime: str, batch_size: int = 1, seq_len: int = 128, *,
                         cache_dir: str | Path | None = None) -> CompiledGraphStats:
    """The compiled graph of ``spec`` (an ArchSpec or model_dict) in ``runtime`` (any name
    ``protran.get_runtime`` accepts) for ``batch_size`` sequences of ``seq_len`` tokens.

    Read from the cache (``cache_dir``, default :func:`graph_cache_dir`) when this architecture,
    runtime, workload and library versions were compiled before; otherwise exported and compiled
    once (seconds; nothing is timed) and stored. An unknown runtime raises ValueError; a runtime
    whose libraries are missing, ``protran.RuntimeUnavailableError``.
    """
    from flexibert import as_spec, model_hash
    from protran._runtimes import get_runtime

    engine = get_runtime(runtime)
    engine._check_available()
    spec = as_spec(spec)
    arch_hash, versions = model_hash(spec), _versions_key(engine)
    cache = GraphCache(cache_dir)
    found = cache.get(arch_hash, runtime, batch_size, seq_len, versions)
    if found is not None:
        return found
    node_count, groups, seconds = _compile(spec, engine, batch_size, seq_len)
    stats = CompiledGraphStats(arch_hash, runtime, batch_size, seq_len, node_count, groups, seconds, versions)
    cache.put(stats)
    return stats


def graph_feature_matrix(specs: Sequence[Any], runtime: str, batch_size: int = 1, seq_len: int = 128, *,
                         cache_dir: str | Path | None = None) -> Any:
    """The :data:`GRAPH_FEATURE_NAMES` columns of ``specs`` (rows x 7), compiling what is not cached."""
    import numpy as np

    from flexibert import as_spec, model_hash
    from protran._runtimes import get_runtime

    engine = get_runtime(runtime)
    engine._check_available()
    specs = [as_spec(spec) for spec in specs]
    hashes = [model_hash(spec) for spec in specs]
    cached = GraphCache(cache_dir).get_many(hashes, runtime, batch_size, seq_len, _versions_key(engine))
    rows = [(cached[arch_hash] if arch_hash in cached else
             compiled_graph_stats(spec, runtime, batch_size, seq_len, cache_dir=cache_dir)).features()
            for spec, arch_hash in zip(specs, hashes)]
    return np.array(rows, dtype=float).reshape(len(rows), len(GRAPH_FEATURE_NAMES))


def cache_graph_stats_from_rows(rows: Sequence[Any], *, cache_dir: str | Path | None = None) -> int:
    """Put into the cache every graph that measured rows (``protran.Measurement``: run-store rows)
    recorded (``graph_node_count`` and ``graph_op_groups`` in the row's ``conditions``), keyed by the
    row's runtime, workload and library versions; returns how many entries were written. Rows measured
    before the graph was recorded, or with a runtime this edgetran does not know, are skipped."""
    from protran._runtimes import get_runtime

    cache, written = GraphCache(cache_dir), 0
    for row in rows:
        conditions = getattr(row, "conditions", None) or {}
        count, groups = conditions.get("graph_node_count"), conditions.get("graph_op_groups")
        if not isinstance(count, int) or not isinstance(groups, dict):
            continue
        try:
            engine = get_runtime(row.runtime)
        except ValueError:
            continue
        # The versions the runtime reports when it compiles (python, torch, its libraries), as measured.
        wanted = {"python", "torch", *engine.libraries}
        versions = ";".join(f"{name}={version}" for name, version in sorted((row.versions or {}).items())
                            if name in wanted)
        cache.put(CompiledGraphStats(row.arch_hash, row.runtime, int(row.batch_size), int(row.seq_len), count,
                                     {str(k): int(v) for k, v in groups.items()}, 0.0, versions))
        written += 1
    return written


def cache_graph_stats_from_store(path: str | Path, *, cache_dir: str | Path | None = None) -> int:
    """:func:`cache_graph_stats_from_rows` of every usable measurement of a run store."""
    from protran._store import RunStore
    from protran.vocabulary import USABLE_STATUSES

    with RunStore(path, readonly=True) as store:
        rows = store.measurements(status=USABLE_STATUSES, include_superseded=True)
    return cache_graph_stats_from_rows(rows, cache_dir=cache_dir)
