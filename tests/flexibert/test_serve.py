"""``flexibert serve``: masked-token predictions over stdin/stdout and HTTP, the benchmark's report, and
one-line errors. Most tests use the torch runtime (no export step); one goes through ONNX Runtime."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("protran")

from flexibert import PretrainConfig, build_mlm_model, load_checkpoint, load_tokenizer, pretrain  # noqa: E402
from flexibert.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = {"l": 2, "o": [["sa_sdp_64", "l_dft_64"], ["sa_wma_64", "c_5_64"]], "h": [128, 128], "f": [[256], [256]]}


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model pre-trained for two steps on random blocks: a real checkpoint of the stack."""
    vocab_size = load_tokenizer().get_vocab_size()
    model = build_mlm_model(TINY, vocab_size=vocab_size, max_positions=128)
    blocks = torch.randint(5, vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    blocks[:, 0] = 2  # [CLS]
    folder = tmp_path_factory.mktemp("checkpoint")
    config = PretrainConfig(max_steps=2, batch_size=4, warmup_steps=0, device="cpu", log_every=1)
    pretrain(model, blocks, config, checkpoint_dir=folder)
    return folder


def serve_lines(capsys, monkeypatch, lines, *argv):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    status = main(["serve", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def check_masks(masks, n_masks, top_k):
    assert len(masks) == n_masks
    for candidates in masks:
        assert len(candidates) == top_k
        probs = [candidate["prob"] for candidate in candidates]
        assert all(isinstance(candidate["token"], str) and candidate["token"] for candidate in candidates)
        assert all(0.0 < p <= 1.0 for p in probs)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-6


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flexibert: error: ")
    assert "Traceback" not in err
    return lines[0]


# -- checkpoints --------------------------------------------------------------------------------------


def test_a_checkpoint_records_its_architecture(checkpoint):
    assert load_checkpoint(checkpoint)["architecture"]["model_dict"] == TINY


def test_stdin_mode_gives_top_k_tokens_per_mask_and_keeps_serving(capsys, monkeypatch, checkpoint):
    lines = ['{"text": "the [MASK] sat on the [MASK] ."}', "not json", '{"text": "no mask here"}', '["text"]',
             '{"text": "one [MASK] more"}']
    status, responses, err = serve_lines(capsys, monkeypatch, lines, checkpoint, "--runtime", "torch", "--top-k", 3)
    assert status == 0, err
    assert "random weights" not in err
    first, malformed, no_mask, not_object, last = responses
    check_masks(first["masks"], 2, 3)
    assert 0 < first["latency_s"] <= first["request_s"]
    assert "not a JSON object" in malformed["error"]
    assert "[MASK]" in no_mask["error"] and "masks" not in no_mask
    assert "text" in not_object["error"]
    check_masks(last["masks"], 1, 3)


def test_a_mask_cut_off_by_the_sequence_length_is_an_error_line(capsys, monkeypatch, checkpoint):
    text = "[MASK] " + "word " * 40 + "[MASK]"
    status, responses, _ = serve_lines(capsys, monkeypatch, [json.dumps({"text": text})],
                                       checkpoint, "--runtime", "torch", "--seq-len", 16)
    assert status == 0
    assert "longer than 16 tokens" in responses[0]["error"]


def test_a_checkpoint_without_architecture_needs_arch(capsys, tmp_path, checkpoint, arch_file):
    state = load_checkpoint(checkpoint)
    del state["architecture"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    status, err = main(["serve", str(old), "--runtime", "torch", "--bench", "1", "--warmup", "0"]), \
        capsys.readouterr().err
    assert status == 2
    assert "--arch" in one_error_line(err)
    status = main(["serve", str(old), "--arch", str(arch_file), "--runtime", "torch", "--bench", "1", "--json"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["trained"] is True


# -- architectures with random weights, the exported path ---------------------------------------------


def test_an_architecture_file_serves_random_weights_with_a_warning(capsys, monkeypatch, arch_file):
    status, responses, err = serve_lines(capsys, monkeypatch, ['{"text": "a [MASK] b"}'],
                                         arch_file, "--runtime", "onnxruntime", "--threads", 1)
    assert status == 0, err
    assert "flexibert: warning:" in err and "random weights" in err
    check_masks(responses[0]["masks"], 1, 5)


def test_bench_json_has_the_documented_shape(capsys, arch_file):
    status = main(["serve", str(arch_file), "--runtime", "torch", "--bench", "4", "--warmup", "1", "--threads", "1",
                   "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    assert {"runtime": "torch", "requests": 4, "seq_len": 128, "threads": 1}.items() <= report.items()
    for key in ("latency_s", "request_s"):
        assert set(report[key]) == {"p50", "p99"}
        assert 0 < report[key]["p50"] <= report[key]["p99"]
    assert report["latency_s"]["p50"] <= report["request_s"]["p99"]
    assert report["throughput_rps"] > 0
    assert report["trained"] is False and report["mlm_head"] == "torch"


def test_bench_texts_are_seeded_and_fit_a_short_sequence(capsys, arch_file):
    from itertools import islice

    from flexibert._serve import bench_texts

    assert list(islice(bench_texts(seed=3), 5)) == list(islice(bench_texts(seed=3), 5))
    assert list(islice(bench_texts(seed=3), 5)) != list(islice(bench_texts(seed=4), 5))
    assert all("[MASK]" in text for text in islice(bench_texts(seed=3), 20))
    status = main(["serve", str(arch_file), "--runtime", "torch", "--bench", "5", "--seq-len", "8", "--json"])
    assert status == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["seq_len"] == 8


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "not_json", "zip_not_checkpoint"])
def test_a_bad_model_is_one_error_line(capsys, tmp_path, kind):
    path = tmp_path / ("model.pt" if kind != "not_json" else "model.json")
    if kind == "not_json":
        path.write_text("{ not json")
    elif kind == "zip_not_checkpoint":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data.txt", "hello")
    status = main(["serve", str(path), "--runtime", "torch"])
    assert status == 2
    assert str(path) in one_error_line(capsys.readouterr().err)


def test_an_unknown_runtime_is_one_error_line(capsys, arch_file):
    status = main(["serve", str(arch_file), "--runtime", "no-such-runtime"])
    assert status == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no-such-runtime" in line and "onnxruntime" in line


def test_an_unavailable_runtime_is_one_error_line(capsys, monkeypatch, arch_file):
    from protran import OpenVinoRuntime

    monkeypatch.setattr(OpenVinoRuntime, "is_available", lambda self: False)
    status = main(["serve", str(arch_file), "--runtime", "openvino"])
    assert status == 2
    assert "not available" in one_error_line(capsys.readouterr().err)


def test_more_threads_than_pinned_cpus_is_an_error(capsys, arch_file):
    cpu = min(os.sched_getaffinity(0))
    status = main(["serve", str(arch_file), "--runtime", "torch", "--cpus", str(cpu), "--threads", "2"])
    assert status == 2
    assert "--threads 2" in one_error_line(capsys.readouterr().err)


def test_a_port_in_use_is_one_error_line(capsys, arch_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["serve", str(arch_file), "--runtime", "torch", "--http", str(port)])
    assert status == 2
    assert "in use" in one_error_line(capsys.readouterr().err)


# -- HTTP ---------------------------------------------------------------------------------------------


def _request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_mode_answers_health_and_predict_and_stops_on_ctrl_c(checkpoint):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A pytest-xdist worker ignores SIGINT, and a child inherits that; Python then installs no Ctrl-C handler.
    # The server is started as from a terminal: SIGINT at its default.
    server = subprocess.Popen([sys.executable, "-m", "flexibert.cli", "serve", str(checkpoint), "--runtime", "torch",
                               "--http", "0", "--top-k", "2"], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = server.stderr.readline()
        assert "http://127.0.0.1:" in line, line + server.stderr.read()
        base = line.split("http://", 1)[1].split()[0]
        status, health = _request(f"http://{base}/health")
        assert status == 200
        assert health["status"] == "ok" and health["trained"] is True and health["seq_len"] == 128
        status, answer = _request(f"http://{base}/predict", {"text": "the [MASK] ."})
        assert status == 200
        check_masks(answer["masks"], 1, 2)
        status, answer = _request(f"http://{base}/predict", {"text": "no mask"})
        assert status == 400 and "[MASK]" in answer["error"]
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 130
        rest = server.stderr.read()
        assert "interrupted" in rest and "Traceback" not in rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_help_shows_a_working_example(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example:\n  flexibert sample" in out and "--bench" in out and "--http" in out
