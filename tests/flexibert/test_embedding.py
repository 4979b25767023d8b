"""Embedding and hash: bit-exact with the reference vectors and every row of the public data."""

import ast
import json

import pytest

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError, decode, embed, model_hash

BERT_TINY = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
BERT_MINI = {"l": 4, "o": [["sa_sdp_64"] * 4] * 4, "h": [256] * 4, "f": [[1024]] * 4}
BERT_BASE = {"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12}


def test_space_size_and_lists():
    space = DesignSpace.default()
    assert len(space.feed_forward_ops) == 258
    assert len(space.attention_ops) == 21805
    assert space.embedding_length == 37
    assert f"{float(space.size):.3g}" == "1.69e+88"


@pytest.mark.parametrize(
    "model_dict, prefix",
    [(BERT_TINY, [0, 0, 1, 0, 0, 1, 0]), (BERT_MINI, [1, 1, 2, 28]), (BERT_BASE, [5, 3, 4, 3241])],
)
def test_reference_embedding_vectors(model_dict, prefix):
    embedding = embed(ArchSpec.from_model_dict(model_dict))
    assert len(embedding) == 37
    assert embedding[: len(prefix)] == prefix


@pytest.mark.parametrize(
    "model_dict, expected",
    [(BERT_BASE, "8b20da51c159887b310cabce176da7fb"), (BERT_MINI, "40f62e468f3458f8d4a5b49ba1413ce6")],
)
def test_reference_hashes(model_dict, expected):
    assert model_hash(ArchSpec.from_model_dict(model_dict)) == expected


def test_every_public_row_embeds_hashes_and_decodes(shared_data):
    files = sorted(shared_data.glob("*/*.json"))
    assert files, "no dataset files found"
    rows = 0
    for path in files:
        for key, row in json.loads(path.read_text()).items():
            spec = ArchSpec.from_model_dict(row["model_dict"])
            embedding = embed(spec)
            assert embedding == ast.literal_eval(row["embedding"]), f"{path.name}:{key}"
            assert model_hash(spec) == key, f"{path.name}:{key}"
            assert decode(embedding) == spec
            assert spec.to_model_dict() == row["model_dict"]
            rows += 1
    assert rows >= 663


def test_decode_rejects_invalid_embeddings():
    good = embed(ArchSpec.from_model_dict(BERT_TINY))
    with pytest.raises(InvalidArchitectureError, match="37"):
        decode(good[:-1])
    tail = list(good)
    tail[30] = 5
    with pytest.raises(InvalidArchitectureError, match="past layer 2"):
        decode(tail)
    out_of_range = list(good)
    out_of_range[3] = 21805
    with pytest.raises(InvalidArchitectureError, match=r"layer 0: embedding\[3\]"):
        decode(out_of_range)


def test_hash_ignores_head_order_but_not_widths():
    a = ArchSpec.from_model_dict({"l": 2, "o": [["c_5_64", "sa_sdp_64"]] * 2, "h": [128, 128], "f": [[512]] * 2})
    b = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[512]] * 2})
    c = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[1024]] * 2})
    assert a == b and model_hash(a) == model_hash(b)
    assert model_hash(a) != model_hash(c)


def test_narrowed_space_changes_embedding(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text(
        "encoder_layers: [2, 4]\nhidden_size: [128, 256]\nattention_heads: [2, 4]\n"
        "operation_types: [sa_sdp, l_dft, c_5]\nfeed_forward_depth: [1]\nfeed_forward_dims: [512, 1024]\n"
    )
    space = DesignSpace.from_yaml(path)
    assert space.embedding_length == 13
    assert space.size == sum((2 * 2 * (6 + 15)) ** n for n in (2, 4))
    spec = ArchSpec.from_model_dict(BERT_TINY, space=space)
    assert decode(embed(spec, space), space) == spec
    with pytest.raises(InvalidArchitectureError, match="layer 0, field 'h'"):
        ArchSpec.from_model_dict({**BERT_TINY, "h": [768, 768], "o": [["sa_sdp_384"] * 2] * 2}, space=space)
