import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from flexibert._data import GlueExamples, GlueTaskData, TextCorpus, load_glue_task, load_tokenizer
from flexibert._model import build_classifier, build_mlm_model
from flexibert._training import (
    FinetuneConfig,
    PretrainConfig,
    evaluate_mlm,
    finetune,
    glue_metrics,
    load_checkpoint,
    pretrain,
    resolve_device,
    tune_finetuning,
)

torch.set_num_threads(1)

TINY = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
SEQ_LEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def corpus(tokenizer):
    return TextCorpus.from_dir(None, tokenizer, seq_len=SEQ_LEN)


@pytest.fixture(scope="module")
def sample_task():
    data = load_glue_task()

    def head(examples, n):
        return GlueExamples(examples.task, examples.text_a[:n], None, examples.labels[:n], examples.source)

    return GlueTaskData(data.task, head(data.train, 96), head(data.validation, 48))


def _mlm(seed=0):
    return build_mlm_model(TINY, seed=seed, vocab_size=8000, max_positions=SEQ_LEN)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- pre-training -----------------------------------------------------------------------------------------


def test_pretraining_reduces_loss(corpus):
    model = _mlm()
    config = PretrainConfig(max_steps=30, batch_size=8, lr=2e-3, warmup_steps=3, log_every=5, device="cpu")
    eval_blocks = corpus.validation[:64]
    before = evaluate_mlm(model, eval_blocks, batch_size=32, seed=0)
    result = pretrain(model, corpus, config, corpus_eval=eval_blocks)
    assert before == pytest.approx(np.log(8000), abs=0.2)  # a fresh model is near uniform
    assert [step for step, _ in result.loss_history] == list(range(5, 31, 5))
    assert result.loss_history[-1][1] < result.loss_history[0][1] - 1.0
    assert result.final_eval_loss < before - 1.0
    assert result.final_eval_loss == pytest.approx(evaluate_mlm(model, eval_blocks, batch_size=32, seed=0))
    assert result.recent_loss(2) == pytest.approx(np.mean([loss for _, loss in result.loss_history[-2:]]))
    assert not model.training


def test_evaluation_uses_identical_masks_for_a_seed(corpus):
    model, blocks = _mlm(), corpus.validation[:40]
    assert evaluate_mlm(model, blocks, 16, seed=1) == evaluate_mlm(model, blocks, 16, seed=1)
    assert evaluate_mlm(model, blocks, 16, seed=1) != evaluate_mlm(model, blocks, 16, seed=2)


def test_training_is_deterministic_and_leaves_global_rng_alone(corpus):
    config = PretrainConfig(max_steps=3, batch_size=4, warmup_steps=1, log_every=1, device="cpu", seed=5)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, second = _mlm(), _mlm()
    losses = pretrain(first, corpus.train[:50], config).loss_history
    assert torch.equal(torch.rand(1), expected_next)
    assert pretrain(second, corpus.train[:50], config).loss_history == losses
    assert _same_weights(first, second)


def test_resume_is_exact(corpus, tmp_path):
    config = PretrainConfig(max_steps=10, batch_size=4, lr=1e-3, warmup_steps=2, log_every=3, device="cpu")
    blocks = corpus.train[:30]  # several epochs, so that shuffling across epochs is covered
    straight = _mlm()
    expected = pretrain(straight, blocks, config)

    first = _mlm()
    partial = pretrain(first, blocks, config, checkpoint_dir=tmp_path, run_steps=5)
    assert partial.steps == 5 and partial.loss_history == expected.loss_history[:1]
    resumed_model = _mlm(seed=99)  # the checkpoint overrides the initial weights
    resumed = pretrain(resumed_model, blocks, config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.start_step == 5 and resumed.steps == 10
    assert resumed.loss_history == expected.loss_history
    assert _same_weights(resumed_model, straight)

    state = load_checkpoint(tmp_path)
    assert int(state["step"]) == 10 and set(state) >= {"model", "optimizer", "scheduler"}


def test_interrupted_run_saves_and_resumes_exactly(corpus, tmp_path):
    config = PretrainConfig(max_steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, device="cpu")
    blocks = corpus.train[:20]
    straight = _mlm()
    expected = pretrain(straight, blocks, config)

    def interrupt(step, total, loss):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(_mlm(), blocks, config, checkpoint_dir=tmp_path, progress=interrupt)
    assert int(load_checkpoint(tmp_path)["step"]) == 4
    resumed_model = _mlm()
    resumed = pretrain(resumed_model, blocks, config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.loss_history == expected.loss_history
    assert _same_weights(resumed_model, straight)


def test_checkpoint_guards(corpus, tmp_path):
    config = PretrainConfig(max_steps=2, batch_size=2, warmup_steps=1, device="cpu")
    pretrain(_mlm(), corpus.train[:8], config, checkpoint_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        pretrain(_mlm(), corpus.train[:8], config, checkpoint_dir=tmp_path)
    changed = PretrainConfig(max_steps=2, batch_size=2, warmup_steps=1, device="cpu", lr=5e-4)
    with pytest.raises(ValueError, match="lr: 0.0001 -> 0.0005"):
        pretrain(_mlm(), corpus.train[:8], changed, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "elsewhere.pt")


def test_bad_configurations_and_inputs_are_rejected(corpus):
    with pytest.raises(ValueError, match="warmup_steps"):
        PretrainConfig(max_steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="device"):
        PretrainConfig(device="tpu")
    with pytest.raises(ValueError, match="select_by"):
        FinetuneConfig(select_by="accuracy")
    small = build_mlm_model(TINY, vocab_size=100, max_positions=SEQ_LEN)
    with pytest.raises(ValueError, match="vocab_size=tokenizer.get_vocab_size"):
        pretrain(small, corpus.train[:4], PretrainConfig(max_steps=1, warmup_steps=0, device="cpu"))
    with pytest.raises(TypeError, match="TextCorpus or an int64 tensor"):
        pretrain(_mlm(), [[1, 2, 3]], PretrainConfig(max_steps=1, warmup_steps=0, device="cpu"))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


# -- GLUE metrics -----------------------------------------------------------------------------------------

LABELS = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
PREDICTIONS = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 0])


def test_classification_metrics_match_sklearn():
    cola = glue_metrics("CoLA", PREDICTIONS, LABELS)
    assert cola["matthews_corr"] == pytest.approx(matthews_corrcoef(LABELS, PREDICTIONS))
    assert cola["score"] == cola["matthews_corr"] and cola["accuracy"] == pytest.approx(0.7)
    mrpc = glue_metrics("mrpc", PREDICTIONS, LABELS)
    assert mrpc["f1"] == pytest.approx(f1_score(LABELS, PREDICTIONS))
    assert mrpc["score"] == pytest.approx((mrpc["f1"] + 0.7) / 2)
    assert glue_metrics("qqp", PREDICTIONS, LABELS, combine="max")["score"] == pytest.approx(max(mrpc["f1"], 0.7))
    assert glue_metrics("sst2", PREDICTIONS, LABELS) == {"accuracy": pytest.approx(0.7), "score": pytest.approx(0.7)}


def test_logits_and_three_classes():
    labels = np.array([0, 1, 2, 2, 1, 0, 0])
    logits = np.eye(3)[[0, 1, 1, 2, 1, 2, 0]]
    assert glue_metrics("mnli", logits, labels)["accuracy"] == pytest.approx(5 / 7)
    from flexibert._training import _matthews

    assert _matthews(logits.argmax(1), labels) == pytest.approx(matthews_corrcoef(labels, logits.argmax(1)))


def test_stsb_metrics_match_scipy():
    labels = np.array([0.0, 1.2, 2.5, 2.5, 3.1, 4.8, 5.0])
    predictions = np.array([0.3, 1.0, 2.0, 3.5, 3.5, 4.0, 4.4])
    metrics = glue_metrics("STS-B", predictions, labels)
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0])
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0])
    assert metrics["score"] == pytest.approx((metrics["pearson"] + metrics["spearman"]) / 2)
    assert glue_metrics("stsb", predictions[:, None], labels)["pearson"] == metrics["pearson"]


def test_degenerate_metrics_are_zero_not_nan():
    constant = np.zeros(6, dtype=int)
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert glue_metrics("cola", constant, labels)["matthews_corr"] == 0.0
    assert glue_metrics("mrpc", constant, labels)["f1"] == 0.0
    assert glue_metrics("stsb", np.ones(6), labels.astype(float))["pearson"] == 0.0
    with pytest.raises(ValueError, match="equal non-zero length"):
        glue_metrics("sst2", [1, 0], [1])
    with pytest.raises(ValueError, match="combine"):
        glue_metrics("mrpc", [1], [1], combine="median")


# -- fine-tuning and tuning -------------------------------------------------------------------------------


def test_finetune_from_spec_returns_metrics(sample_task):
    config = FinetuneConfig(epochs=2, batch_size=16, lr=1e-4, max_seq_len=SEQ_LEN, device="cpu")
    epochs = []
    metrics = finetune(TINY, sample_task, config, progress=lambda epoch, total, m: epochs.append((epoch, total)))
    assert set(metrics) == {"accuracy", "matthews_corr", "score", "eval_loss", "epoch"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and -1.0 <= metrics["score"] <= 1.0
    assert epochs == [(1, 2), (2, 2)] and metrics["epoch"] in (1.0, 2.0)
    assert finetune(TINY, sample_task, config) == metrics  # deterministic for a seed


def test_finetune_starts_from_a_pretrained_encoder(sample_task):
    mlm = _mlm(seed=3)
    config = FinetuneConfig(epochs=1, batch_size=16, max_seq_len=SEQ_LEN, device="cpu")
    before = {name: value.clone() for name, value in mlm.state_dict().items()}
    assert "eval_loss" in finetune(mlm, sample_task, config)
    assert all(torch.equal(before[name], value) for name, value in mlm.state_dict().items())  # not modified

    classifier = build_classifier(TINY, 2, seed=0, vocab_size=8000, max_positions=SEQ_LEN)
    start = classifier.classifier.weight.clone()
    finetune(classifier, sample_task, config)
    assert not torch.equal(start, classifier.classifier.weight)  # fine-tuned in place
    with pytest.raises(ValueError, match="3 labels"):
        finetune(build_classifier(TINY, 3, vocab_size=8000, max_positions=SEQ_LEN), sample_task, config)


def test_regression_task_finetunes(tmp_path):
    rows = ["sentence1\tsentence2\tscore"] + [f"a value {i}\tthe value {i % 3}\t{i % 5}.0" for i in range(24)]
    (tmp_path / "train.tsv").write_text("\n".join(rows))
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:9]))
    config = FinetuneConfig(epochs=1, batch_size=8, max_seq_len=SEQ_LEN, device="cpu")
    metrics = finetune(TINY, load_glue_task(tmp_path, "stsb"), config)
    assert set(metrics) == {"pearson", "spearman", "score", "eval_loss", "epoch"}


def test_tuning_runs_trials_in_the_paper_ranges(sample_task):
    config = FinetuneConfig(epochs=1, max_seq_len=SEQ_LEN, device="cpu")
    result = tune_finetuning(TINY, sample_task, n_trials=2, seed=0, config=config)
    assert len(result.trials) == 2
    for trial in result.trials:
        assert 2e-5 <= trial["params"]["lr"] <= 5e-4 and trial["params"]["batch_size"] in (8, 16, 32)
    assert result.best_metrics["score"] == max(trial["metrics"]["score"] for trial in result.trials)
    assert result.best_params in [trial["params"] for trial in result.trials]
    again = tune_finetuning(TINY, sample_task, n_trials=2, seed=0, config=config)
    assert [t["params"] for t in again.trials] == [t["params"] for t in result.trials]


def test_tuning_in_rounds_through_an_executor_gives_the_local_trials_and_a_stored_study_continues(
        sample_task, tmp_path):
    import pickle

    import optuna

    config = FinetuneConfig(epochs=1, max_seq_len=SEQ_LEN, device="cpu")
    rounds = []

    def elsewhere(fn, argument_tuples):
        """A round's trials shipped (pickled) as to other processes, run in reverse order; results in order."""
        rounds.append(len(argument_tuples))
        shipped = pickle.loads(pickle.dumps(argument_tuples))
        return [fn(*arguments) for arguments in reversed(shipped)][::-1]

    here = tune_finetuning(TINY, sample_task, n_trials=3, seed=0, config=config, parallel=2)
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    there = tune_finetuning(TINY, sample_task, n_trials=3, seed=0, config=config, parallel=2, executor=elsewhere,
                            storage=storage, study_name="tiny")
    assert rounds == [2, 1]
    assert there.trials == here.trials and (there.best_params, there.best_metrics) == (here.best_params,
                                                                                       here.best_metrics)
    # the study lives in the RDB storage: another process loads it; a second call continues it
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 3
    more = tune_finetuning(TINY, sample_task, n_trials=1, seed=0, config=config, storage=storage, study_name="tiny")
    assert [trial["number"] for trial in more.trials] == [0, 1, 2, 3] and more.trials[:3] == there.trials
    with pytest.raises(ValueError, match="parallel"):
        tune_finetuning(TINY, sample_task, n_trials=1, config=config, parallel=0)
