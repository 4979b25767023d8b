import json

import pytest
import torch

from flexibert._data import (
    CORPUS_DIR,
    DEFAULT_SPECIAL_TOKENS,
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    GlueTaskData,
    SpecialTokens,
    TextCorpus,
    glue_task,
    load_corpus,
    load_glue_task,
    load_glue_tsv,
    load_tokenizer,
    mask_tokens,
    mlm_batches,
    pack_blocks,
    read_documents,
    train_tokenizer,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


# -- tokenizer ---------------------------------------------------------------------------------------


def test_shipped_tokenizer_round_trips(tokenizer):
    assert tokenizer.get_vocab_size() == 8000
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert SpecialTokens.from_tokenizer(tokenizer) == DEFAULT_SPECIAL_TOKENS
    text = "Return a new list containing all items from the iterable in ascending order."
    encoding = tokenizer.encode(text)
    assert encoding.ids[0] == 2 and encoding.ids[-1] == 3
    assert 1 not in encoding.ids  # no [UNK] for ordinary English
    assert tokenizer.decode(encoding.ids) == text.lower()


def test_pair_encoding_marks_segments(tokenizer):
    encoding = tokenizer.encode("first part", "second part")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens.count("[SEP]") == 2
    assert encoding.type_ids[-1] == 1 and encoding.type_ids[0] == 0


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizers JSON"):
        load_tokenizer(bad)


def test_train_tokenizer_is_deterministic_and_saves(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(["the cat sat on the mat", "the dog sat on the log", "cats and dogs"] * 20))
    first = train_tokenizer([text], 60, tmp_path / "a.json")
    train_tokenizer(text, 60, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    vocab = json.loads((tmp_path / "a.json").read_text())["model"]["vocab"]
    assert len(vocab) == first.get_vocab_size() <= 60
    assert load_tokenizer(tmp_path / "a.json").encode("the cat").tokens == ["[CLS]", "the", "cat", "[SEP]"]


def test_train_tokenizer_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        train_tokenizer([tmp_path / "missing.txt"], 100)
    (tmp_path / "t.txt").write_text("words")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer([tmp_path / "t.txt"], 3)


# -- corpus --------------------------------------------------------------------------------------------


def test_shipped_corpus_splits_into_blocks(tokenizer):
    corpus = TextCorpus.from_dir(CORPUS_DIR, tokenizer, seq_len=64)
    assert corpus.train.dtype == torch.int64 and corpus.train.shape[1] == 64
    assert len(corpus.train) > 10 * len(corpus.validation) > 0
    assert (corpus.train[:, 0] == 2).all() and (corpus.validation[:, 0] == 2).all()
    assert corpus.vocab_size == 8000 and int(corpus.train.max()) < 8000
    # Only the very last block may hold padding.
    assert not (corpus.train[:-1] == 0).any()


def test_pack_blocks_streams_documents_with_separators():
    blocks = pack_blocks([[10, 11, 12], [20, 21], [30]], seq_len=4)
    assert blocks.tolist() == [[2, 10, 11, 12], [2, 3, 20, 21], [2, 3, 30, 3]]
    padded = pack_blocks([[10, 11, 12, 13]], seq_len=4)
    assert padded.tolist() == [[2, 10, 11, 12], [2, 13, 3, 0]]
    with pytest.raises(ValueError, match="seq_len"):
        pack_blocks([[1]], seq_len=1)


def test_user_corpus_is_split_by_documents_deterministically(tmp_path, tokenizer):
    docs = [f"document number {i} talks about module {i} and its functions." for i in range(40)]
    (tmp_path / "a.txt").write_text("\n\n".join(docs[:20]))
    (tmp_path / "b.txt").write_text("\n\n".join(docs[20:]) + "\n")
    assert read_documents(tmp_path) == docs
    first = load_corpus(tmp_path, tokenizer, seq_len=16, validation_fraction=0.1, seed=3)
    again = load_corpus(tmp_path, tokenizer, seq_len=16, validation_fraction=0.1, seed=3)
    other = load_corpus(tmp_path, tokenizer, seq_len=16, validation_fraction=0.1, seed=4)
    assert torch.equal(first.train, again.train) and torch.equal(first.validation, again.validation)
    assert not torch.equal(first.validation, other.validation)
    assert len(first.validation) > 0 and len(first.train) > len(first.validation)


def test_lines_of_a_document_are_joined(tmp_path):
    (tmp_path / "c.txt").write_text("one line\nsame doc\n\n\nnext doc\n")
    assert read_documents(tmp_path / "c.txt") == ["one line same doc", "next doc"]


def test_small_corpus_splits_blocks(tmp_path, tokenizer):
    (tmp_path / "one.txt").write_text(" ".join(["the function returns a value"] * 200))
    corpus = TextCorpus.from_dir(tmp_path / "one.txt", tokenizer, seq_len=32, validation_fraction=0.2)
    assert len(corpus.validation) >= 1 and len(corpus.train) >= 4 * len(corpus.validation) - 4


def test_corpus_errors_name_the_problem(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_corpus(tmp_path / "missing.txt", tokenizer)
    with pytest.raises(FileNotFoundError, match="no \\*.txt"):
        load_corpus(tmp_path, tokenizer)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        load_corpus(tmp_path / "latin1.txt", tokenizer)


# -- masking ---------------------------------------------------------------------------------------------


def test_masking_statistics():
    vocab = 1000
    ids = torch.randint(5, vocab, (400, 128), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    masked, labels = mask_tokens(ids, vocab, 0.15, generator=torch.Generator().manual_seed(1))
    selected = labels != IGNORE_INDEX
    assert torch.equal(labels[selected], ids[selected])
    assert not selected[:, 0].any() and not selected[:, -1].any()
    rate = selected[:, 1:-1].float().mean().item()
    assert abs(rate - 0.15) < 0.005
    n = selected.sum().item()
    as_mask = (masked[selected] == 4).sum().item() / n
    unchanged = (masked[selected] == ids[selected]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.01
    assert abs(unchanged - 0.1) < 0.01  # random replacements rarely hit the original id
    replaced = masked[selected & (masked != 4) & (masked != ids)]
    assert replaced.min() >= 5 and replaced.max() < vocab
    assert torch.equal(masked[~selected], ids[~selected])


def test_padding_and_special_tokens_are_never_masked():
    ids = torch.tensor([[2, 0, 0, 0, 1, 4, 3]] * 500)
    _, labels = mask_tokens(ids, 10, 0.5, generator=torch.Generator().manual_seed(0))
    assert (labels == IGNORE_INDEX).all()


def test_mlm_batches_repeat_for_a_seed_and_cover_blocks():
    blocks = torch.randint(5, 100, (10, 16), generator=torch.Generator().manual_seed(0))
    first = list(mlm_batches(blocks, 4, seed=7, vocab_size=100))
    again = list(mlm_batches(blocks, 4, seed=7, vocab_size=100))
    other = list(mlm_batches(blocks, 4, seed=8, vocab_size=100))
    assert [len(x) for x, _ in first] == [4, 4, 2]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(first, other))
    by_three = list(mlm_batches(blocks, 3, seed=7, vocab_size=100))
    assert [len(x) for x, _ in by_three] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([y for _, y in by_three]), torch.cat([y for _, y in first]))  # masks ignore batch size
    restored = torch.cat([torch.where(y != IGNORE_INDEX, y, x) for x, y in first])
    assert torch.equal(restored, blocks)  # unshuffled, and labels restore every masked token
    batches = mlm_batches(blocks, 4, shuffle=True, vocab_size=100)
    shuffled = torch.cat([torch.where(y != IGNORE_INDEX, y, x) for x, y in batches])
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, blocks.tolist()))


def test_masking_rejects_out_of_vocabulary_ids():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mask_tokens(torch.tensor([[2, 50, 3]]), 20, generator=torch.Generator())
    with pytest.raises(TypeError, match="corpus.train"):
        corpus = TextCorpus(torch.zeros(1, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), 2, 10)
        next(mlm_batches(corpus, 1, vocab_size=10))


# -- GLUE TSV --------------------------------------------------------------------------------------------


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_glue_task_names_are_normalised():
    assert glue_task("SST-2").name == "sst2" and glue_task("STS-B").is_regression
    assert glue_task("MNLI").num_labels == 3
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_task("squad")


def test_sst2_and_mrpc_layouts(tmp_path):
    sst = load_glue_tsv(_write(tmp_path / "sst.tsv", ["sentence\tlabel", "a fine film \t1", "dull\t0"]), "SST-2")
    assert sst.text_a == ["a fine film ", "dull"] and sst.labels == [1, 0] and sst.text_b is None
    mrpc = load_glue_tsv(
        _write(
            tmp_path / "mrpc.tsv",
            ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", '1\t1\t2\tHe said "hi".\tHe greeted.'],
        ),
        "mrpc",
    )
    assert mrpc.text_a == ['He said "hi".'] and mrpc.text_b == ["He greeted."] and mrpc.labels == [1]


def test_pair_and_regression_layouts(tmp_path):
    sts = load_glue_tsv(
        _write(tmp_path / "sts.tsv", [
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off."
            "\tAn air plane is taking off.\t5.000",
        ]),
        "stsb",
    )
    assert sts.labels == [5.0] and sts.text_b == ["An air plane is taking off."]
    mnli = load_glue_tsv(
        _write(tmp_path / "mnli.tsv", [
            "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label",
            "0\t1\t1e\tgov\tA man sleeps.\tA person rests.\tentailment\tentailment",
            "1\t2\t2c\tgov\tA man sleeps.\tA man runs.\tcontradiction\tcontradiction",
        ]),
        "mnli",
    )
    assert mnli.labels == [0, 2]
    for task, header in (("qnli", "index\tquestion\tsentence\tlabel"), ("rte", "index\tsentence1\tsentence2\tlabel")):
        rows = load_glue_tsv(_write(tmp_path / f"{task}.tsv", [header, "0\tWho?\tHim.\tnot_entailment"]), task)
        assert rows.labels == [1] and rows.text_a == ["Who?"]
    qqp = load_glue_tsv(
        _write(tmp_path / "qqp.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "0\t1\t2\tWhy?\tHow?\t1"]),
        "qqp",
    )
    assert qqp.labels == [1]
    wnli_file = _write(tmp_path / "wnli.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tx y.\ty x.\t0"])
    wnli = load_glue_tsv(wnli_file, "wnli")
    assert wnli.labels == [0]


def test_cola_headerless_and_test_files(tmp_path):
    cola_file = _write(tmp_path / "cola.tsv", ["gj04\t1\t\tThe sailors rode the breeze.", "gj04\t0\t*\tRode the."])
    cola = load_glue_tsv(cola_file, "cola")
    assert cola.text_a == ["The sailors rode the breeze.", "Rode the."] and cola.labels == [1, 0]
    test = load_glue_tsv(_write(tmp_path / "test.tsv", ["index\tsentence", "0\tBill left."]), "cola")
    assert test.labels is None and test.text_a == ["Bill left."]


def test_malformed_files_name_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.tsv", ["sentence\tlabel", "good\t1", "no label here", "also good\t0"])
    with pytest.raises(ValueError, match=r"bad.tsv, line 3: expected 2 tab-separated fields, found 1"):
        load_glue_tsv(path, "sst2")
    assert load_glue_tsv(path, "sst2", skip_malformed=True).labels == [1, 0]
    with pytest.raises(ValueError, match=r"line 2: label 'positive' is not one of"):
        load_glue_tsv(_write(tmp_path / "lab.tsv", ["sentence\tlabel", "fine\tpositive"]), "sst2")
    with pytest.raises(ValueError, match="line 2: label 'high' is not a number"):
        load_glue_tsv(_write(tmp_path / "sts.tsv", ["sentence1\tsentence2\tscore", "a\tb\thigh"]), "stsb")
    with pytest.raises(ValueError, match="header has no '#1 String'"):
        load_glue_tsv(_write(tmp_path / "hdr.tsv", ["sentence\tlabel", "a\t1"]), "mrpc")
    with pytest.raises(ValueError, match="empty"):
        load_glue_tsv(_write(tmp_path / "empty.tsv", []), "sst2")
    with pytest.raises(FileNotFoundError):
        load_glue_tsv(tmp_path / "none.tsv", "sst2")


def test_shipped_sample_task_loads():
    data = load_glue_task()
    assert isinstance(data, GlueTaskData) and data.task.name == "cola"
    assert len(data.train) == 1000 and len(data.validation) == 250
    assert set(data.train.labels) == {0, 1} and abs(sum(data.train.labels) / len(data.train) - 0.5) < 0.05
    assert not set(data.train.text_a) & set(data.validation.text_a)


def test_task_directory_layout(tmp_path):
    _write(tmp_path / "train.tsv", ["sentence\tlabel", "a\t1"])
    with pytest.raises(FileNotFoundError, match="no validation file"):
        load_glue_task(tmp_path, "sst2")
    _write(tmp_path / "dev.tsv", ["sentence\tlabel", "b\t0"])
    data = load_glue_task(tmp_path, "sst2")
    assert data.train.text_a == ["a"] and data.validation.labels == [0]
    with pytest.raises(ValueError, match="task is required"):
        load_glue_task(tmp_path)
