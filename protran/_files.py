"""What kind of file a path holds: the one place that tells run stores, ProTran ``dataset.json`` files
and accuracy files apart, by content rather than by name (users rename files).

- a run store starts with SQLite's 16-byte header;
- a JSON object keyed by model hash is a hardware profile when its rows carry ``performance`` and
  an accuracy file (the reference format) otherwise;
- a JSON list is NAS-Bench-BERT's upstream format (trained architectures with GLUE scores);
- a JSON object with the keys ``l`` and ``o`` is one architecture (a model_dict);
- anything else is read as an accuracy CSV, whose reader names what is wrong with it.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

SQLITE_MAGIC = b"SQLite format 3\x00"


class FileKind(enum.Enum):
    RUN_STORE = "run store"
    PROTRAN_JSON = "ProTran dataset.json"
    ACCURACY_JSON = "reference accuracy JSON"
    NASBENCH_BERT_JSON = "NAS-Bench-BERT JSON"
    ACCURACY_CSV = "accuracy CSV"
    MODEL_DICT = "model_dict JSON"


def is_run_store(path: str | Path) -> bool:
    """True when ``path`` is a SQLite file (a run store, or a SQLite file the store will refuse)."""
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def file_kind(path: str | Path) -> FileKind:
    """The kind of a data file; raises FileNotFoundError naming it when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if is_run_store(path):
        return FileKind.RUN_STORE
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip()
    if head[:1] == b"[":
        return FileKind.NASBENCH_BERT_JSON
    if head[:1] != b"{":
        return FileKind.ACCURACY_CSV
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        data = None  # left to the profile reader, whose errors name the row and field at fault
    if isinstance(data, dict) and "l" in data and "o" in data:
        return FileKind.MODEL_DICT
    return FileKind.PROTRAN_JSON if _first_row_has(data, "performance") else FileKind.ACCURACY_JSON


def _first_row_has(data: Any, key: str) -> bool:
    if not isinstance(data, dict) or not data:
        return True
    first = next(iter(data.values()))
    return not isinstance(first, dict) or key in first or "pretrain" not in first


def read_json(path: str | Path, error: type[ValueError] = ValueError) -> Any:
    """The content of a JSON data file; ``error`` names the file and what is wrong (missing, not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path}: not a JSON file ({problem})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply (more than about a thousand levels)") from None


def read_hash_keyed_json(path: str | Path, error: type[ValueError] = ValueError) -> dict:
    """The top-level object of a JSON file keyed by model hash (ProTran profiles, reference accuracy);
    ``error`` names the file and what is wrong: missing, not JSON, not an object."""
    data = read_json(path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object keyed by model hash, got {type(data).__name__}")
    return data
