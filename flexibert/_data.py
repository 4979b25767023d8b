"""Text data for training: WordPiece tokenizers, plain-text corpora cut into fixed-length token
blocks, masked-language-model batches, and GLUE-format TSV tasks.

Conventions:

- Tokenizers are ``tokenizers.Tokenizer`` objects saved as one JSON file. The ones this project
  trains (:func:`train_tokenizer`) are lower-cased WordPiece with the special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0-4; any tokenizer that has these five tokens works.
- A plain-text corpus is one or more UTF-8 files; blank lines separate documents, and the lines of
  a document are joined by spaces. Documents are tokenised, each followed by ``[SEP]``, concatenated,
  and cut into blocks of ``seq_len`` tokens that each start with ``[CLS]`` (RoBERTa's packing of full
  sentences across document boundaries). The last block is padded with ``[PAD]``.
- Masking follows BERT: each non-special token is selected with probability ``mask_prob``; a selected
  token becomes ``[MASK]`` (80 %), a random non-special token (10 %) or stays (10 %). Labels hold the
  original id at selected positions and ``-100`` elsewhere.
"""

from __future__ import annotations

import heapq
import importlib.util
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from flexibert.lazy import optional_dependency


def _datasets_dir() -> Path:
    """Where the shipped data lies: in the installed distribution, else in the source tree.

    The repository keeps one copy of the data, in ``datasets/``; setuptools installs that folder as
    the data-only package ``edgetran_datasets``. Its search locations are read from the import system
    rather than through ``importlib.resources``, whose namespace reader fails on the path hooks of an
    editable install (Python 3.11). A source checkout that was never installed uses the folder itself.
    """
    try:
        spec = importlib.util.find_spec("edgetran_datasets")
    except (ImportError, ValueError):
        spec = None
    # pip unpacks wheels, so an installed package's folders are real paths (a zipped one is not used).
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "corpus").is_dir():
            return Path(location)
    return Path(__file__).resolve().parents[1] / "datasets"


DATASETS_DIR = _datasets_dir()
CORPUS_DIR = DATASETS_DIR / "corpus"
TOKENIZER_PATH = CORPUS_DIR / "tokenizer.json"
SAMPLE_GLUE_DIR = DATASETS_DIR / "glue_sample"
SAMPLE_GLUE_TASK = "cola"

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
IGNORE_INDEX = -100
DEFAULT_SEQ_LEN = 128
_MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT = 10


# -- tokenizers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the five special tokens in one tokenizer."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTokens:
        ids = {}
        for field, token in zip(fields(cls), SPECIAL_TOKENS):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise ValueError(
                    f"the tokenizer has no {token} token; masked-language modelling needs all of {SPECIAL_TOKENS}"
                )
            ids[field.name] = token_id
        return cls(**ids)

    @property
    def ids(self) -> tuple[int, ...]:
        return (self.pad, self.unk, self.cls, self.sep, self.mask)


DEFAULT_SPECIAL_TOKENS = SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)


def train_tokenizer(
    files: str | Path | Iterable[str | Path],
    vocab_size: int = 8000,
    out_path: str | Path | None = None,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
):
    """Train a BERT-style WordPiece tokenizer on plain-text ``files`` and save it to ``out_path``.

    The ``tokenizers`` pipeline (BERT normaliser and pre-tokenizer, WordPiece model) is learned with
    byte-pair merges on word counts, the method of the ``tokenizers`` WordPiece trainer, but with ties
    broken by the symbols themselves: the Rust trainer breaks them by hash order, so its vocabulary
    changes from run to run. The same files therefore always give the same tokenizer. Special
    tokens get ids 0-4 in the order of :data:`SPECIAL_TOKENS`; encoding adds ``[CLS] a [SEP]`` or
    ``[CLS] a [SEP] b [SEP]``. Returns the ``tokenizers.Tokenizer``.
    """
    with optional_dependency("training a tokenizer"):
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    paths = _as_paths(files)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer training file not found: {path}")
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: dict[str, int] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
                counts[word] = counts.get(word, 0) + 1
    vocab = _learn_wordpiece_vocab(counts, vocab_size, min_frequency)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=_MAX_WORD_CHARS))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix=_SUBWORD_PREFIX)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocabulary: keeps ids 0-4
    special = SpecialTokens.from_tokenizer(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", special.cls), ("[SEP]", special.sep)],
    )
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(out_path))
    return tokenizer


_SUBWORD_PREFIX = "##"
_MAX_WORD_CHARS = 100


def _learn_wordpiece_vocab(counts: dict[str, int], vocab_size: int, min_frequency: int) -> dict[str, int]:
    """Special tokens, the sorted alphabet, then merged pieces in merge order, up to ``vocab_size``.

    Pair counts are updated incrementally; a heap of ``(-count, left, right)`` with lazy deletion
    picks the most frequent pair, the smallest symbols first among equal counts.
    """
    kept = [word for word in sorted(counts) if len(word) <= _MAX_WORD_CHARS]
    words = [[word[0]] + [_SUBWORD_PREFIX + char for char in word[1:]] for word in kept]
    freqs = [counts[word] for word in kept]
    alphabet = sorted({symbol for word in words for symbol in word})
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in alphabet:
        vocab.setdefault(symbol, len(vocab))
    pair_counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}

    def update(index: int, sign: int) -> set[tuple[str, str]]:
        word, touched = words[index], set()
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + sign * freqs[index]
            (where.setdefault(pair, set()).add if sign > 0 else where[pair].discard)(index)
            touched.add(pair)
        return touched

    for index in range(len(words)):
        update(index, +1)
    heap = [(-count, *pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative_count, left, right = heapq.heappop(heap)
        if pair_counts.get((left, right)) != -negative_count:
            continue  # stale entry
        if -negative_count < min_frequency:
            break
        merged = left + right.removeprefix(_SUBWORD_PREFIX)
        vocab.setdefault(merged, len(vocab))
        touched: set[tuple[str, str]] = set()
        for index in sorted(where[(left, right)]):
            touched |= update(index, -1)
            words[index] = _merge_pair(words[index], left, right, merged)
            touched |= update(index, +1)
        for pair in touched:
            if pair_counts.get(pair, 0) > 0:
                heapq.heappush(heap, (-pair_counts[pair], *pair))
    return vocab


def _merge_pair(word: list[str], left: str, right: str, merged: str) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def load_tokenizer(path: str | Path | None = None):
    """Load a ``tokenizers.Tokenizer`` from a JSON file (default: the corpus tokenizer shipped in
    ``datasets/corpus/tokenizer.json``)."""
    with optional_dependency("loading a tokenizer"):
        from tokenizers import Tokenizer

    path = Path(path) if path is not None else TOKENIZER_PATH
    if not path.is_file():
        hint = (
            " The shipped tokenizer is part of the source tree (datasets/corpus/); regenerate it with"
            " `python datasets/corpus/make_corpus.py`, or train one with train_tokenizer()."
            if path == TOKENIZER_PATH
            else ""
        )
        raise FileNotFoundError(f"tokenizer file not found: {path}.{hint}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises a bare Exception
        raise ValueError(f"{path} is not a valid tokenizers JSON file: {error}") from error


def _plain_copy(tokenizer):
    """A copy without truncation or padding, so that corpus text is never cut silently."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


# -- plain-text corpora --------------------------------------------------------------------------------


def read_documents(path_or_files: str | Path | Iterable[str | Path]) -> list[str]:
    """Documents of UTF-8 text files (a file, a list of files, or every ``*.txt`` in a directory,
    sorted by name). Blank lines separate documents; lines within one are joined by spaces."""
    documents: list[str] = []
    for path in _text_files(path_or_files):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text: {error}") from error
        lines: list[str] = []
        for line in text.splitlines() + [""]:
            if line.strip():
                lines.append(line.strip())
            elif lines:
                documents.append(" ".join(lines))
                lines = []
    return documents


def _text_files(path_or_files) -> list[Path]:
    paths = _as_paths(path_or_files)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.txt"))
            if not found:
                raise FileNotFoundError(f"no *.txt files in directory {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"corpus file not found: {path}")
    if not files:
        raise ValueError("no corpus files given")
    return files


def _as_paths(path_or_files) -> list[Path]:
    if isinstance(path_or_files, (str, Path)):
        return [Path(path_or_files)]
    return [Path(item) for item in path_or_files]


def pack_blocks(
    token_lists: Sequence[Sequence[int]], seq_len: int, special: SpecialTokens = DEFAULT_SPECIAL_TOKENS
) -> torch.Tensor:
    """Pack tokenised documents into ``[n, seq_len]`` int64 blocks: each block is ``[CLS]`` followed
    by ``seq_len - 1`` tokens of the stream ``doc_0 [SEP] doc_1 [SEP] ...``; the last block is padded."""
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
    pieces = [np.append(np.asarray(ids, dtype=np.int64), special.sep) for ids in token_lists if len(ids)]
    if not pieces:
        return torch.empty((0, seq_len), dtype=torch.int64)
    stream = np.concatenate(pieces)
    body = seq_len - 1
    n_blocks = math.ceil(len(stream) / body)
    padded = np.full(n_blocks * body, special.pad, dtype=np.int64)
    padded[: len(stream)] = stream
    cls_column = np.full((n_blocks, 1), special.cls, dtype=np.int64)
    return torch.from_numpy(np.concatenate([cls_column, padded.reshape(n_blocks, body)], axis=1))


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """Token blocks of a corpus: ``train`` and ``validation`` are int64 tensors ``[n, seq_len]``."""

    train: torch.Tensor
    validation: torch.Tensor
    seq_len: int
    vocab_size: int
    special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS

    @classmethod
    def from_dir(
        cls,
        path_or_files: str | Path | Iterable[str | Path] | None = None,
        tokenizer=None,
        seq_len: int = DEFAULT_SEQ_LEN,
        *,
        validation_fraction: float = 0.05,
        seed: int = 0,
    ) -> TextCorpus:
        """Tokenise a corpus into blocks (default: the shipped corpus with the shipped tokenizer).

        A directory with ``train.txt`` uses it for training and ``validation.txt`` (if present) for
        validation. Otherwise the documents of all given files are split: ``validation_fraction`` of
        the documents, chosen with ``seed``, go to validation (with fewer than 10 documents the
        blocks are split instead).
        """
        tokenizer = load_tokenizer() if tokenizer is None else tokenizer
        special = SpecialTokens.from_tokenizer(tokenizer)
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction!r}")
        path_or_files = CORPUS_DIR if path_or_files is None else path_or_files
        train_docs, validation_docs = _split_sources(path_or_files)
        encoder = _plain_copy(tokenizer)

        def blocks(documents: list[str]) -> torch.Tensor:
            encodings = encoder.encode_batch(documents, add_special_tokens=False)
            return pack_blocks([encoding.ids for encoding in encodings], seq_len, special)

        rng = np.random.default_rng(seed)
        if validation_docs is None and len(train_docs) >= _MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT:
            order = rng.permutation(len(train_docs))
            n_validation = _split_count(len(train_docs), validation_fraction)
            chosen = set(order[:n_validation].tolist())
            validation_docs = [doc for i, doc in enumerate(train_docs) if i in chosen]
            train_docs = [doc for i, doc in enumerate(train_docs) if i not in chosen]
        train = blocks(train_docs)
        if validation_docs is not None:
            validation = blocks(validation_docs)
        else:
            order = torch.from_numpy(rng.permutation(len(train)))
            n_validation = _split_count(len(train), validation_fraction)
            validation, train = train[order[:n_validation].sort().values], train[order[n_validation:].sort().values]
        if len(train) == 0:
            raise ValueError(f"the corpus {path_or_files} has no text for training")
        return cls(train, validation, seq_len, tokenizer.get_vocab_size(), special)


def _split_sources(path_or_files) -> tuple[list[str], list[str] | None]:
    """(train documents, validation documents or None when the caller must split)."""
    if isinstance(path_or_files, (str, Path)) and Path(path_or_files).is_dir():
        directory = Path(path_or_files)
        if (directory / "train.txt").is_file():
            validation_file = directory / "validation.txt"
            validation = read_documents(validation_file) if validation_file.is_file() else None
            return read_documents(directory / "train.txt"), validation
    return read_documents(path_or_files), None


def _split_count(n: int, fraction: float) -> int:
    if fraction == 0.0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def load_corpus(
    path: str | Path | Iterable[str | Path] | None = None,
    tokenizer=None,
    seq_len: int = DEFAULT_SEQ_LEN,
    **kwargs,
) -> TextCorpus:
    """Same as :meth:`TextCorpus.from_dir`."""
    return TextCorpus.from_dir(path, tokenizer, seq_len, **kwargs)


# -- masked-language-model batches ----------------------------------------------------------------------


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. ``(seed, step, stream)``)."""
    state = np.random.SeedSequence([int(key) for key in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def mask_tokens(
    input_ids: torch.Tensor,
    vocab_size: int,
    mask_prob: float = 0.15,
    *,
    generator: torch.Generator,
    special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking of a CPU int64 tensor. Returns ``(masked_ids, labels)``."""
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob!r}")
    special_ids = torch.tensor(special_tokens.ids)
    if input_ids.numel() and int(input_ids.max()) >= vocab_size:
        raise ValueError(f"token id {int(input_ids.max())} is outside the vocabulary of size {vocab_size}")
    maskable = ~torch.isin(input_ids, special_ids)
    selected = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & maskable
    action = torch.rand(input_ids.shape, generator=generator)
    ordinary = torch.ones(vocab_size, dtype=torch.bool)
    ordinary[special_ids[special_ids < vocab_size]] = False
    ordinary_ids = ordinary.nonzero().squeeze(1)
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator)]
    masked = input_ids.clone()
    masked[selected & (action < 0.8)] = special_tokens.mask
    swap = selected & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_ids[swap]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels


def mlm_batches(
    blocks: torch.Tensor,
    batch_size: int,
    mask_prob: float = 0.15,
    seed: int = 0,
    *,
    vocab_size: int,
    special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``blocks`` in batches of ``(masked_ids, labels)``.

    The order (if ``shuffle``) and the masks come from ``generator``, or from a fresh one seeded by
    ``seed``. Masks are drawn for fixed chunks of blocks, so they do not depend on ``batch_size``:
    the same blocks and seed give the same masked tokens at any batch size.
    """
    blocks = _check_blocks(blocks)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator().manual_seed(int(seed)) if generator is None else generator
    order = torch.randperm(len(blocks), generator=generator) if shuffle else torch.arange(len(blocks))
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    n_pending = 0
    for start in range(0, len(blocks), _MASK_CHUNK):
        rows = blocks[order[start : start + _MASK_CHUNK]]
        chunk = mask_tokens(rows, vocab_size, mask_prob, generator=generator, special_tokens=special_tokens)
        pending.append(chunk)
        n_pending += len(chunk[0])
        while n_pending >= batch_size or (n_pending and start + _MASK_CHUNK >= len(blocks)):
            ids, labels = (torch.cat(parts) for parts in zip(*pending))
            yield ids[:batch_size], labels[:batch_size]
            pending = [(ids[batch_size:], labels[batch_size:])]
            n_pending = len(pending[0][0])


_MASK_CHUNK = 256


def _check_blocks(blocks) -> torch.Tensor:
    if isinstance(blocks, TextCorpus):
        raise TypeError("pass corpus.train or corpus.validation, not the TextCorpus itself")
    if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2 or blocks.dtype != torch.int64:
        raise TypeError("blocks must be an int64 tensor [n_blocks, seq_len]")
    return blocks


# -- GLUE-format TSV files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    """Column conventions of one GLUE task's TSV files."""

    name: str
    text_a: tuple[str, ...]  # accepted header names, first match wins
    text_b: tuple[str, ...] | None
    label: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression
    headerless: tuple[int, int, int | None] | None = None  # (text_a, label, text_b) column positions

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        # CoLA's train/dev files have no header: source, label, original annotation, sentence.
        GlueTask("cola", ("sentence",), None, ("label",), ("0", "1"), headerless=(3, 1, None)),
        GlueTask("sst2", ("sentence",), None, ("label",), ("0", "1")),
        GlueTask("mrpc", ("#1 String",), ("#2 String",), ("Quality",), ("0", "1")),
        GlueTask("qqp", ("question1",), ("question2",), ("is_duplicate",), ("0", "1")),
        GlueTask("stsb", ("sentence1",), ("sentence2",), ("score",), None),
        GlueTask("mnli", ("sentence1",), ("sentence2",), ("gold_label",), ("entailment", "neutral", "contradiction")),
        GlueTask("qnli", ("question",), ("sentence",), ("label",), ("entailment", "not_entailment")),
        GlueTask("rte", ("sentence1",), ("sentence2",), ("label",), ("entailment", "not_entailment")),
        GlueTask("wnli", ("sentence1",), ("sentence2",), ("label",), ("0", "1")),
    )
}


def glue_task(name: str | GlueTask) -> GlueTask:
    """The :class:`GlueTask` for a name such as ``"SST-2"``, ``"sst2"`` or ``"STS-B"``."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; expected one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


@dataclass(frozen=True)
class GlueExamples:
    """Examples of one split: ``labels`` are class ids (floats for STS-B), or None for test files."""

    task: GlueTask
    text_a: list[str]
    text_b: list[str] | None
    labels: list[int] | list[float] | None
    source: str = ""

    def __len__(self) -> int:
        return len(self.text_a)


@dataclass(frozen=True)
class GlueTaskData:
    """A task's training and validation splits."""

    task: GlueTask
    train: GlueExamples
    validation: GlueExamples


def load_glue_tsv(path: str | Path, task: str | GlueTask, *, skip_malformed: bool = False) -> GlueExamples:
    """Read a GLUE-format TSV file (as in the official GLUE archives: tab-separated, no quoting).

    Columns are found by the task's header names (CoLA's headerless train/dev layout is recognised
    by its four columns). A file without the label column (a test file) gives ``labels=None``. A line
    with the wrong number of fields or an unknown label raises ``ValueError`` naming the file and
    line, unless ``skip_malformed`` is set.
    """
    task = glue_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file not found: {path}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [line.rstrip("\r\n").split("\t") for line in handle]
    if not rows or rows == [[""]]:
        raise ValueError(f"{path}: the file is empty")
    columns, first_row = _glue_columns(path, task, rows[0])
    text_a: list[str] = []
    text_b: list[str] | None = [] if columns[2] is not None else None
    labels: list | None = [] if columns[1] is not None else None
    width = len(rows[0])
    for line_number, fields_ in enumerate(rows[first_row:], start=first_row + 1):
        if fields_ == [""]:
            continue  # a trailing empty line
        try:
            if len(fields_) != width:
                raise ValueError(f"expected {width} tab-separated fields, found {len(fields_)}")
            label = None if labels is None else _parse_label(task, fields_[columns[1]])
        except ValueError as error:
            if skip_malformed:
                continue
            raise ValueError(f"{path}, line {line_number}: {error}") from None
        text_a.append(fields_[columns[0]])
        if text_b is not None:
            text_b.append(fields_[columns[2]])
        if labels is not None:
            labels.append(label)
    if not text_a:
        raise ValueError(f"{path}: no examples")
    return GlueExamples(task, text_a, text_b, labels, str(path))


def _glue_columns(path: Path, task: GlueTask, header: list[str]) -> tuple[tuple[int, int | None, int | None], int]:
    """((text_a, label, text_b) column indices, index of the first data row)."""
    names = [name.strip() for name in header]

    def find(candidates: tuple[str, ...] | None) -> int | None:
        if candidates is None:
            return None
        return next((names.index(name) for name in candidates if name in names), None)

    text_a = find(task.text_a)
    if text_a is None:
        if task.headerless is not None and len(header) == 4:
            a, label, b = task.headerless
            return (a, label, b), 0
        raise ValueError(
            f"{path}: the header has no {' or '.join(map(repr, task.text_a))} column required for"
            f" {task.name.upper()} (found {names})"
        )
    text_b = find(task.text_b)
    if task.text_b is not None and text_b is None:
        raise ValueError(
            f"{path}: the header has no {task.text_b[0]!r} column required for {task.name.upper()} (found {names})"
        )
    return (text_a, find(task.label), text_b), 1


def _parse_label(task: GlueTask, value: str) -> int | float:
    value = value.strip()
    if task.label_names is None:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"label {value!r} is not a number") from None
    if value not in task.label_names:
        raise ValueError(f"label {value!r} is not one of {list(task.label_names)}")
    return task.label_names.index(value)


_VALIDATION_FILES = {"mnli": ("dev_matched.tsv",)}


def load_glue_task(directory: str | Path | None = None, task: str | GlueTask | None = None) -> GlueTaskData:
    """A task directory in GLUE's layout (``train.tsv`` and ``dev.tsv``; MNLI: ``dev_matched.tsv``).

    Without arguments, the synthetic sample task shipped in ``datasets/glue_sample`` (CoLA format).
    """
    if directory is None:
        directory, task = SAMPLE_GLUE_DIR, SAMPLE_GLUE_TASK if task is None else task
    if task is None:
        raise ValueError("task is required with a directory (e.g. task='sst2')")
    task = glue_task(task)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"GLUE task directory not found: {directory}")
    candidates = _VALIDATION_FILES.get(task.name, ()) + ("dev.tsv",)
    validation = next((directory / name for name in candidates if (directory / name).is_file()), None)
    if validation is None:
        raise FileNotFoundError(f"{directory} has no validation file (looked for {list(candidates)})")
    return GlueTaskData(task, load_glue_tsv(directory / "train.tsv", task), load_glue_tsv(validation, task))


__all__ = [
    "CORPUS_DIR",
    "DEFAULT_SPECIAL_TOKENS",
    "GLUE_TASKS",
    "IGNORE_INDEX",
    "SAMPLE_GLUE_DIR",
    "SPECIAL_TOKENS",
    "TOKENIZER_PATH",
    "GlueExamples",
    "GlueTask",
    "GlueTaskData",
    "SpecialTokens",
    "TextCorpus",
    "derive_seed",
    "glue_task",
    "load_corpus",
    "load_glue_task",
    "load_glue_tsv",
    "load_tokenizer",
    "mask_tokens",
    "mlm_batches",
    "pack_blocks",
    "read_documents",
    "train_tokenizer",
]
