"""Serving a masked-language model: fill in ``[MASK]`` tokens, over stdin/stdout or HTTP, and time it.

A request is a text with one or more mask tokens (the shipped tokenizer's ``[MASK]``). It is tokenised
with the shipped tokenizer (``[CLS] ... [SEP]``), padded with ``[PAD]`` or cut to the fixed sequence
length the model was compiled for (128 by default: the profiled workload, so that latencies compare
with profiles), and run in three steps:

1. the exported encoder in the chosen runtime (``Session.infer``): input ids to hidden states; the
   exported graph holds the encoder only, exactly the graph that profiles measure;
2. the masked-language-model head in torch, on the masked positions only (dense, GELU, LayerNorm and
   the vocabulary projection);
3. a softmax over the vocabulary and the top-k tokens of each mask.

``latency_s`` times step 1 (comparable with a profile's latency); ``request_s`` times the whole
request from its parsed JSON to the response (tokenising, the three steps, decoding the tokens).

The graph has no attention-mask input (the profiled workload is ``input_ids`` alone), so padding
positions take part in attention; pre-training packs full blocks, so a model has rarely seen
``[PAD]``, and predictions on short texts are somewhat worse than the checkpoint's MLM loss suggests.

Sessions are not thread-safe, so the HTTP server answers one request at a time; that is also what
keeps a measured latency free of competing requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from flexibert import clitools
from flexibert._data import CORPUS_DIR, SpecialTokens, load_tokenizer, read_documents
from flexibert._errors import EdgetranError
from flexibert._model import FlexiBertForMaskedLM, build_mlm_model
from flexibert._spec import DEFAULT_MAX_POSITIONS, ArchSpec

DEFAULT_TOP_K = 5
DEFAULT_WARMUP = 3
# Longest request body the HTTP server reads; a text of a few hundred tokens is a few KiB.
MAX_BODY_BYTES = 1 << 20
# Bench texts: a window of this many words of a corpus document, with 1 to 3 words masked.
_BENCH_WORDS = 60
_BENCH_MAX_MASKS = 3


class RequestError(EdgetranError, ValueError):
    """A request that cannot be answered (bad JSON, no mask, a mask cut off); served as ``{"error"}``."""


# -- the model --------------------------------------------------------------------------------------


@dataclass
class MaskedLM:
    """A masked-language model ready to serve: ``model`` (encoder + head), whether its weights are
    trained, and where it came from."""

    model: FlexiBertForMaskedLM
    trained: bool
    source: str

    @property
    def spec(self) -> ArchSpec:
        return self.model.encoder.spec


def is_checkpoint(path: Path) -> bool:
    """A pre-training checkpoint (``torch.save``'s zip file, or a folder holding ``checkpoint.pt``)
    rather than an architecture file."""
    import zipfile

    from flexibert._training import CHECKPOINT_NAME

    if path.is_dir():
        return (path / CHECKPOINT_NAME).is_file()
    return path.is_file() and zipfile.is_zipfile(path)


def load_checkpoint_model(path: Path, spec: ArchSpec | None) -> MaskedLM:
    """The MLM model of a pre-training checkpoint; its architecture is the one recorded in the
    checkpoint, or ``spec`` for checkpoints written before architectures were recorded."""
    from flexibert._training import load_mlm_checkpoint

    try:
        model = load_mlm_checkpoint(path, spec)
    except ValueError as error:
        if spec is None and "records no architecture" in str(error):
            raise ValueError(f"{error} with --arch FILE") from None
        raise
    return MaskedLM(model, trained=True, source=str(path))


def random_model(spec: ArchSpec, vocab_size: int, source: str, seed: int = 0) -> MaskedLM:
    """An MLM model of ``spec`` with random weights (seeded) and FlexiBERT's 512 positions: real
    latency, meaningless predictions."""
    model = build_mlm_model(spec, seed=seed, vocab_size=vocab_size, max_positions=DEFAULT_MAX_POSITIONS)
    return MaskedLM(model.eval(), trained=False, source=source)


# -- requests ---------------------------------------------------------------------------------------


class MaskFiller:
    """Answers requests with one prepared runtime session (batch 1, fixed ``seq_len``)."""

    def __init__(self, masked_lm: MaskedLM, session, tokenizer=None, top_k: int = DEFAULT_TOP_K) -> None:
        self.masked_lm = masked_lm
        self.session = session
        self.seq_len = session.seq_len
        self.top_k = top_k
        tokenizer = load_tokenizer() if tokenizer is None else tokenizer
        self.special = SpecialTokens.from_tokenizer(tokenizer)
        self.mask_token = tokenizer.id_to_token(self.special.mask)
        if tokenizer.get_vocab_size() > masked_lm.model.encoder.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
                             f"{masked_lm.model.encoder.vocab_size}; serve a model trained with the shipped tokenizer")
        self.tokenizer = _fixed_length(tokenizer, self.seq_len, self.special)
        self._plain = _fixed_length(tokenizer, None, self.special)
        self._head = masked_lm.model.mlm_head.eval()

    def describe(self) -> dict[str, Any]:
        """What /health reports: the model, the runtime and the workload."""
        return {"status": "ok", "model": self.masked_lm.source, "trained": self.masked_lm.trained,
                "runtime": self.session.runtime, "seq_len": self.seq_len, "top_k": self.top_k,
                "mask_token": self.mask_token, "mlm_head": "torch"}

    def encode(self, text: str) -> tuple[np.ndarray, list[int], bool]:
        """(ids ``[1, seq_len]``, mask positions, whether the text was cut to fit)."""
        encoding = self.tokenizer.encode(text)
        ids = np.asarray(encoding.ids, dtype=np.int64)[None]
        positions = [i for i, token in enumerate(encoding.ids) if token == self.special.mask]
        truncated = bool(encoding.overflowing)
        # Cut texts: compare with the masks of the whole text, so that none is dropped silently.
        all_masks = self._plain.encode(text).ids.count(self.special.mask) if truncated else len(positions)
        if all_masks > len(positions):
            raise RequestError(f"the text is longer than {self.seq_len} tokens and a {self.mask_token} lies "
                               "beyond them; shorten the text or serve with a larger --seq-len")
        if not positions:
            raise RequestError(f"the text has no {self.mask_token} token; put one or more {self.mask_token} "
                               "where words should be predicted")
        return ids, positions, truncated

    def predict(self, text: Any, started: float | None = None) -> dict[str, Any]:
        """``{"masks": [[{"token", "prob"}, ...] per mask], "latency_s", "request_s"}`` (plus
        ``"truncated": true`` where the text was cut to the sequence length). ``started``: when the
        request arrived (``time.perf_counter()``), default now."""
        started = time.perf_counter() if started is None else started
        if not isinstance(text, str):
            raise RequestError('a request is {"text": "..."} with a string text')
        ids, positions, truncated = self.encode(text)
        run_started = time.perf_counter()
        hidden = self.session.infer(ids)
        latency_s = time.perf_counter() - run_started
        masks = self._top_tokens(hidden[0, positions])
        result: dict[str, Any] = {"masks": masks, "latency_s": latency_s}
        if truncated:
            result["truncated"] = True
        result["request_s"] = time.perf_counter() - started
        return result

    def _top_tokens(self, hidden: np.ndarray) -> list[list[dict[str, Any]]]:
        with torch.inference_mode():
            logits = self._head(torch.from_numpy(np.ascontiguousarray(hidden, dtype=np.float32)))
            probs, ids = torch.softmax(logits.float(), dim=-1).topk(min(self.top_k, logits.shape[-1]), dim=-1)
        return [[{"token": self._token(int(i)), "prob": float(p)} for p, i in zip(row_p, row_i)]
                for row_p, row_i in zip(probs.tolist(), ids.tolist())]

    def _token(self, token_id: int) -> str:
        token = self.tokenizer.id_to_token(token_id)
        return token if token is not None else f"[{token_id}]"  # ids past the tokenizer (random models)

    def answer(self, body: str | bytes, started: float | None = None) -> dict[str, Any]:
        """The response to one JSON request body: a prediction, or ``{"error": ...}``."""
        started = time.perf_counter() if started is None else started
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            return {"error": f"not a JSON object ({error})"}
        if not isinstance(request, dict) or "text" not in request:
            return {"error": 'a request is a JSON object {"text": "..."}'}
        try:
            return self.predict(request["text"], started)
        except RequestError as error:
            return {"error": str(error)}


def _fixed_length(tokenizer, seq_len: int | None, special: SpecialTokens):
    """A copy of ``tokenizer`` that cuts (keeping ``[CLS]`` and ``[SEP]``) and pads to ``seq_len``;
    None: one that does neither."""
    from tokenizers import Tokenizer

    fixed = Tokenizer.from_str(tokenizer.to_str())
    fixed.no_truncation()
    fixed.no_padding()
    if seq_len is not None:
        fixed.enable_truncation(max_length=seq_len)
        fixed.enable_padding(length=seq_len, pad_id=special.pad, pad_token=tokenizer.id_to_token(special.pad))
    return fixed


# -- stdin/stdout and HTTP ----------------------------------------------------------------------------


def serve_lines(filler: MaskFiller, lines: TextIO, out: TextIO) -> int:
    """Answer JSON lines from ``lines`` on ``out``, one response line each, until the input ends; a
    malformed line gets ``{"error": ...}`` and serving goes on. Returns the number of requests."""
    count = 0
    for line in lines:
        started = time.perf_counter()
        if not line.strip():
            continue
        out.write(json.dumps(filler.answer(line, started)) + "\n")
        out.flush()
        count += 1
    return count


class MaskServer(HTTPServer):
    """An HTTP server of one :class:`MaskFiller`, set in ``filler`` once the model is ready: the port
    is bound first, so that a port in use fails before the slow work."""

    filler: MaskFiller | None = None


def make_http_server(host: str, port: int, filler: MaskFiller | None = None) -> MaskServer:
    """A bound HTTP server (port 0: a free one): ``POST /predict`` and ``GET /health``."""

    class Handler(BaseHTTPRequestHandler):
        server: MaskServer

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._send(HTTPStatus.OK, self._filler().describe())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; use GET /health or POST /predict"})

        def do_POST(self) -> None:  # noqa: N802
            started = time.perf_counter()
            if self.path != "/predict":
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; use POST /predict"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "send the body with a Content-Length"})
                return
            if not 0 <= length <= MAX_BODY_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"bodies over {MAX_BODY_BYTES} bytes"})
                return
            response = self._filler().answer(self.rfile.read(length), started)
            self._send(HTTPStatus.BAD_REQUEST if "error" in response else HTTPStatus.OK, response)

        def _filler(self) -> MaskFiller:
            filler = self.server.filler
            if filler is None:
                raise RuntimeError("the server was started before its model was ready")
            return filler

        def _send(self, status: HTTPStatus, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request on stderr would drown the server's own lines

    server = MaskServer((host, port), Handler)
    server.filler = filler
    return server


# -- benchmark ----------------------------------------------------------------------------------------


def bench_texts(seed: int = 0, mask_token: str = "[MASK]", seq_len: int = 128) -> Iterator[str]:
    """Endless seeded texts: windows of the shipped validation corpus with 1-3 words masked, among the
    first ``seq_len // 4`` words (so that they usually fit in ``seq_len`` tokens; the rest of the
    window fills the sequence)."""
    documents = [doc for doc in read_documents(CORPUS_DIR / "validation.txt") if len(doc.split()) >= 8]
    if not documents:
        raise ValueError(f"{CORPUS_DIR / 'validation.txt'}: no document long enough to draw texts from")
    rng = np.random.default_rng(seed)
    while True:
        words = documents[int(rng.integers(len(documents)))].split()
        start = int(rng.integers(max(1, len(words) - _BENCH_WORDS + 1)))
        window = words[start:start + _BENCH_WORDS]
        maskable = max(1, min(len(window), seq_len // 4))
        n_masks = min(maskable, int(rng.integers(1, _BENCH_MAX_MASKS + 1)))
        for index in rng.choice(maskable, size=n_masks, replace=False):
            window[int(index)] = mask_token
        yield " ".join(window)


def bench_bodies(filler: MaskFiller, n: int, seed: int = 0) -> list[str]:
    """``n`` JSON request bodies of :func:`bench_texts` whose masks all fit in the sequence."""
    bodies: list[str] = []
    for tries, text in enumerate(bench_texts(seed, filler.mask_token, filler.seq_len), start=1):
        if len(bodies) == n:
            return bodies
        if tries > 20 * n + 100:
            raise ValueError(f"--seq-len {filler.seq_len} is too short for the bench texts (a masked word does not "
                             "fit); bench with a longer sequence")
        try:
            filler.encode(text)
        except RequestError:
            continue
        bodies.append(json.dumps({"text": text}))
    raise AssertionError("bench_texts never ends")


def bench(filler: MaskFiller, n: int, seed: int = 0, warmup: int = DEFAULT_WARMUP,
          progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run ``warmup`` untimed then ``n`` timed requests; p50/p99 of ``latency_s`` and ``request_s``
    and the throughput (requests per second of the timed ones, back to back). Requests go in as JSON
    bodies, as a served one does (``request_s`` includes parsing it); only the transport is left out."""
    bodies = bench_bodies(filler, n + warmup, seed)
    for body in bodies[:warmup]:
        filler.answer(body)
    results = []
    started = time.perf_counter()
    for done, body in enumerate(bodies[warmup:], start=1):
        result = filler.answer(body)
        if "error" in result:  # bench_bodies keeps only texts that encode
            raise RuntimeError(f"a bench request failed: {result['error']}")
        results.append(result)
        if progress is not None:
            progress(done)
    wall_s = time.perf_counter() - started
    return {"latency_s": _percentiles([r["latency_s"] for r in results]),
            "request_s": _percentiles([r["request_s"] for r in results]),
            "throughput_rps": n / wall_s}


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


# -- conditions ---------------------------------------------------------------------------------------


def pin_to_cpus(cpus: Sequence[int]) -> list[int]:
    """Pin this process and every thread it has to ``cpus`` (before a runtime starts its threads,
    which inherit the mask); returns the affinity in effect."""
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pinning to CPUs is not available on this OS (no sched_setaffinity); leave out --cpus")
    available = os.sched_getaffinity(0)
    missing = sorted(set(cpus) - available)
    if missing:
        raise ValueError(f"CPU {', '.join(map(str, missing))} is not available to this process; "
                         f"choose among {','.join(map(str, sorted(available)))}")
    clitools.pin_process(cpus)
    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def head_threads(num_threads: int | None, runtime: str) -> Iterator[None]:
    """Threads of the MLM head, which runs in torch, inside the block (restored after it): the
    runtime's count where it is given; otherwise one (a few masked positions need no more, and torch's
    default pool of one thread per core spins against the runtime's own: requests took ten times as long
    here), except for the torch runtime, whose default is the encoder's too."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    elif runtime != "torch":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encoder_of(masked_lm: MaskedLM) -> nn.Module:
    """The module a runtime exports: the encoder alone (input ids to hidden states)."""
    return masked_lm.model.encoder


__all__ = [
    "DEFAULT_TOP_K", "DEFAULT_WARMUP", "MaskFiller", "MaskServer", "MaskedLM", "RequestError", "bench",
    "bench_bodies", "bench_texts", "encoder_of", "head_threads", "is_checkpoint", "load_checkpoint_model",
    "make_http_server", "pin_to_cpus", "random_model", "serve_lines",
]
