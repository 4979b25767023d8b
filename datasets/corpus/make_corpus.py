"""Regenerate the shipped text corpus, its WordPiece tokenizer and the synthetic GLUE sample task.

    python datasets/corpus/make_corpus.py            # writes datasets/corpus/* and datasets/glue_sample/*

The text is the English prose of the CPython 3.11 standard library: the Language Reference topics
that ship with every Python (``pydoc_data/topics.py``) and the docstrings of the library's modules,
classes and functions (tests, IDLE, tkinter, lib2to3 and turtledemo left out). Code examples,
grammar, tables and doctests are dropped; paragraphs are unwrapped to one line and light reST markup
is removed. Everything is deterministic: the same Python version gives byte-identical files (other
versions give similar text with a different checksum).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import random
import re
import shutil
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GLUE_DIR = REPO / "datasets" / "glue_sample"
BUILT_WITH = "3.11.7"

SKIPPED_DIRS = {
    "test", "tests", "idlelib", "idle_test", "tkinter", "lib2to3", "turtledemo", "site-packages", "ensurepip",
    "__pycache__",
}
VALIDATION_BUCKETS = 16  # one source unit (module file or topic) in 16 goes to validation
VOCAB_SIZE = 8000
GLUE_TRAIN, GLUE_DEV = 1000, 250
GLUE_SEED = 2024

_WORD = re.compile(r"^[(\"'“‘]*[A-Za-z][A-Za-z'’\-]*[)\"'”’.,;:!?]*$")
_BULLET = re.compile(r"^(\*|-|\d+\.|\(\d+\))\s+")
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`([^`]*)`")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])")


# -- extraction -------------------------------------------------------------------------------------


def stdlib_documents(stdlib: Path) -> list[tuple[str, list[str]]]:
    """(source unit, prose paragraphs) per docstring or Language Reference topic, in a fixed order."""
    from pydoc_data.topics import topics

    documents = [(f"topics/{name}", prose_paragraphs(topics[name])) for name in sorted(topics)]
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if any(part in SKIPPED_DIRS for part in relative.parts[:-1]) or relative.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in _in_source_order(tree):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                documents.append((relative.as_posix(), prose_paragraphs(docstring)))
    documents += extension_documents(stdlib)
    return [(unit, paragraphs) for unit, paragraphs in documents if paragraphs]


def extension_documents(stdlib: Path) -> list[tuple[str, list[str]]]:
    """Docstrings of the modules written in C (built in, or in ``lib-dynload``) and their members."""
    names = set(sys.builtin_module_names)
    names.update(path.name.split(".")[0] for path in (stdlib / "lib-dynload").glob("*.so"))
    documents = []
    for name in sorted(names):
        if name.startswith(("_test", "_xx", "xx", "_tkinter", "_ctypes_test")):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in [module] + _members(module):
            docstring = getattr(obj, "__doc__", None)
            if isinstance(docstring, str):
                documents.append((f"extension/{name}", prose_paragraphs(inspect.cleandoc(docstring))))
    return documents


def _members(module) -> list:
    """Classes and routines of a module, and the routines of those classes, sorted by name."""
    found = []
    for _, obj in sorted(vars(module).items()):
        if inspect.isclass(obj) and getattr(obj, "__module__", None) == module.__name__:
            found.append(obj)
            found.extend(
                member
                for _, member in sorted(vars(obj).items())
                if inspect.isroutine(member) or inspect.isdatadescriptor(member)
            )
        elif inspect.isroutine(obj):
            found.append(obj)
    return found


def _in_source_order(tree: ast.AST):
    yield tree
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _in_source_order(node)


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text`` that read as English prose, each unwrapped to one line."""
    paragraphs: list[str] = []
    previous = ""
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        after_literal_marker = previous.rstrip().endswith("::")
        previous = block
        if after_literal_marker or _looks_like_code(lines):
            continue
        paragraph = _clean(" ".join(line.strip() for line in lines))
        words = paragraph.split()
        if len(words) >= 6 and sum(bool(_WORD.match(word)) for word in words) >= 0.8 * len(words):
            paragraphs.append(paragraph)
    return paragraphs


def _looks_like_code(lines: list[str]) -> bool:
    first = lines[0]
    indent = len(first) - len(first.lstrip())
    if any(line.lstrip().startswith((">>>", "...", "$ ", "%")) for line in lines):
        return True
    if any(set(line.strip()) <= set("=-*+~^|") for line in lines):
        return True  # headings underlined, table rules
    return indent >= 3 and not _BULLET.match(first.lstrip())


def _clean(paragraph: str) -> str:
    paragraph = _BULLET.sub("", paragraph)
    paragraph = _ROLE.sub(r"\1", paragraph).replace("``", "").replace("`", "")
    paragraph = _EMPHASIS.sub(r"\1", paragraph)
    return re.sub(r"\s+", " ", paragraph).strip()


def split_documents(documents: list[tuple[str, list[str]]]) -> tuple[list[list[str]], list[list[str]]]:
    """Deduplicate paragraphs and send whole source units to train or validation by their md5."""
    seen: set[str] = set()
    train: list[list[str]] = []
    validation: list[list[str]] = []
    for unit, paragraphs in documents:
        fresh = [p for p in paragraphs if p not in seen]
        seen.update(fresh)
        if not fresh:
            continue
        bucket = int(hashlib.md5(unit.encode()).hexdigest(), 16) % VALIDATION_BUCKETS
        (validation if bucket == 0 else train).append(fresh)
    return train, validation


def write_documents(path: Path, documents: list[list[str]]) -> None:
    """One paragraph per line, a blank line between documents."""
    path.write_text("\n\n".join("\n".join(paragraphs) for paragraphs in documents) + "\n", encoding="utf-8")


# -- synthetic GLUE task --------------------------------------------------------------------------


def glue_sentences(documents: list[list[str]]) -> list[str]:
    """Plain sentences of 8-25 words made only of letters, commas, hyphens and apostrophes."""
    sentences: list[str] = []
    for paragraphs in documents:
        for paragraph in paragraphs:
            for sentence in re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph):
                if re.fullmatch(r"[A-Z][A-Za-z ,'\-]+\.", sentence) and 8 <= len(sentence.split()) <= 25:
                    sentences.append(sentence)
    return list(dict.fromkeys(sentences))


def scramble(sentence: str, rng: random.Random) -> str:
    """The sentence with its words in a new random order, keeping the capital and the full stop."""
    words = sentence[:-1].split()
    words[0] = words[0][0].lower() + words[0][1:]
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    text = " ".join(shuffled)
    return text[0].upper() + text[1:] + "."


def write_glue_sample(train_docs: list[list[str]], validation_docs: list[list[str]]) -> tuple[int, int]:
    """CoLA-format acceptability task: label 1 = a corpus sentence, 0 = the same words scrambled.
    Training rows come from the training documents, dev rows from the validation documents."""
    rng = random.Random(GLUE_SEED)
    for name, documents, count in (("train.tsv", train_docs, GLUE_TRAIN), ("dev.tsv", validation_docs, GLUE_DEV)):
        sentences = glue_sentences(documents)
        if len(sentences) < count:
            raise SystemExit(f"only {len(sentences)} sentences for the GLUE sample's {name}, need {count}")
        rows = []
        for index, sentence in enumerate(rng.sample(sentences, count)):
            acceptable = index % 2 == 0
            text = sentence if acceptable else scramble(sentence, rng)
            rows.append(f"stdlib\t{int(acceptable)}\t{'' if acceptable else '*'}\t{text}")
        GLUE_DIR.mkdir(parents=True, exist_ok=True)
        (GLUE_DIR / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return GLUE_TRAIN, GLUE_DEV


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]), help="standard library directory"
    )
    args = parser.parse_args(argv)
    version = ".".join(map(str, sys.version_info[:3]))
    if version != BUILT_WITH:
        print(f"note: the shipped files come from Python {BUILT_WITH}; this is {version}, so the text will differ")

    train, validation = split_documents(stdlib_documents(args.stdlib))
    write_documents(HERE / "train.txt", train)
    write_documents(HERE / "validation.txt", validation)
    shutil.copyfile(args.stdlib / "LICENSE.txt", HERE / "LICENSE-Python.txt")

    sys.path.insert(0, str(REPO))
    from flexibert._data import train_tokenizer

    tokenizer = train_tokenizer([HERE / "train.txt"], VOCAB_SIZE, HERE / "tokenizer.json")
    n_train, n_dev = write_glue_sample(train, validation)

    for name in ("train.txt", "validation.txt", "tokenizer.json"):
        data = (HERE / name).read_bytes()
        print(f"{name}: {len(data):,} bytes, md5 {hashlib.md5(data).hexdigest()}")
    print(f"documents: train {len(train)}, validation {len(validation)}; vocab {tokenizer.get_vocab_size()}")
    print(f"glue_sample: train {n_train}, dev {n_dev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
