"""Class lists, templates, and the FAISS-backed text index with its on-disk cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import oodfilter
from oodfilter.errors import ClassListError, InputError, ModelMismatchError, UnknownNameError
from oodfilter.text import TextCache, build_class_vectors, encode_captions, resolve_templates
from oodfilter.text.classes import clean_class_names

NAMES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


class EncodeCounter:
    """Counts captions sent through the model's text encoders."""

    def __init__(self, model, monkeypatch):
        self.captions = 0
        original_yes, original_no = model.encode_text, model.encode_text_no

        def yes(tokens):
            self.captions += tokens.shape[0]
            return original_yes(tokens)

        def no(tokens, choice=None):
            self.captions += tokens.shape[0]
            return original_no(tokens, choice)

        monkeypatch.setattr(model, "encode_text", yes)
        monkeypatch.setattr(model, "encode_text_no", no)


# ---- class lists -------------------------------------------------------------------------------------

def test_class_file_strips_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\ufeff# my classes\n  tench  \n\n goldfish\n# comment\nhen\n", encoding="utf-8")
    assert oodfilter.read_class_names(path) == ["tench", "goldfish", "hen"]


@pytest.mark.parametrize("content", ["", "\n\n  \n", "# only a comment\n"])
def test_empty_class_file_is_refused(tmp_path, content):
    path = tmp_path / "classes.txt"
    path.write_text(content)
    with pytest.raises(ClassListError, match="has no class names"):
        oodfilter.read_class_names(path)


def test_missing_and_binary_class_files_are_named(tmp_path):
    with pytest.raises(ClassListError, match=r"nope\.txt does not exist"):
        oodfilter.read_class_names(tmp_path / "nope.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\xfa\x00tench")
    with pytest.raises(ClassListError, match="not UTF-8"):
        oodfilter.read_class_names(binary)


def test_duplicates_are_kept_with_one_warning(cache_dir, tiny_model):
    with pytest.warns(UserWarning, match="repeats 1 class name") as record:
        names = clean_class_names(["crane", "hen", "crane"])
        index = build_class_vectors(tiny_model, names, cache_dir=cache_dir)
    assert len(record) == 1
    assert index.class_names == ["crane", "hen", "crane"]
    assert torch.equal(index.yes[0], index.yes[2])


def test_templates_are_validated():
    assert resolve_templates("photo") == ("a photo of a {}.",)
    assert len(resolve_templates("ensemble")) == 7
    with pytest.raises(UnknownNameError, match="unknown template set"):
        resolve_templates("fancy")
    with pytest.raises(InputError, match=r"exactly one '\{\}'"):
        resolve_templates(["a photo"])
    with pytest.raises(InputError, match="empty"):
        resolve_templates([])


# ---- the index ---------------------------------------------------------------------------------------

def test_class_vectors_are_normalised_template_means(tiny_model, cache_dir):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    index = build_class_vectors(tiny_model, NAMES, templates=templates, cache_dir=cache_dir)
    for tower, matrix in (("yes", index.yes), ("no", index.no)):
        per_template = [
            torch.from_numpy(encode_captions(tiny_model, tower, [t.format(n) for n in NAMES])) for t in templates
        ]
        expected = F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)
        torch.testing.assert_close(matrix, expected, rtol=0, atol=1e-6)
    assert index.yes.shape == (5, tiny_model.embed_dim)


def test_second_build_encodes_nothing(tiny_model, cache_dir, monkeypatch):
    counter = EncodeCounter(tiny_model, monkeypatch)
    first = build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir)
    assert counter.captions == 2 * 7 * len(NAMES)  # yes + no towers, 7 templates
    counter.captions = 0
    second = build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir)
    assert counter.captions == 0
    assert torch.equal(first.yes, second.yes) and torch.equal(first.no, second.no)
    # A larger vocabulary encodes only the new names.
    build_class_vectors(tiny_model, [*NAMES, "axolotl"], templates="ensemble", cache_dir=cache_dir)
    assert counter.captions == 2 * 7


def test_cache_disabled_writes_nothing(tiny_model, cache_dir):
    build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir, use_cache=False)
    assert list(cache_dir.iterdir()) == []


def test_different_models_never_share_vectors(tiny_model, fresh_tiny_model, cache_dir, monkeypatch):
    build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)
    counter = EncodeCounter(fresh_tiny_model, monkeypatch)
    other = build_class_vectors(fresh_tiny_model, NAMES, cache_dir=cache_dir, include_no=True)
    assert counter.captions == 2 * len(NAMES)
    expected = torch.from_numpy(encode_captions(fresh_tiny_model, "yes", [f"a photo of a {n}." for n in NAMES]))
    torch.testing.assert_close(other.yes, expected, rtol=0, atol=1e-6)


def test_store_refuses_another_fingerprint_or_dimension(tiny_model, cache_dir):
    build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)
    folder = next((cache_dir / "text").iterdir())
    fingerprint = tiny_model.text_fingerprint("yes")
    # a folder is named by its tower's fingerprint (and the precision, when not fp32)
    owner = fingerprint if folder.name.startswith(fingerprint[:40]) else tiny_model.text_fingerprint("no")
    with pytest.raises(ModelMismatchError, match="not be mixed"):
        TextCache(folder, "0" * 64, tiny_model.embed_dim)
    with pytest.raises(ModelMismatchError, match="64-d"):
        TextCache(folder, owner, 64)


def test_cache_writes_leave_no_temporary_files(tiny_model, cache_dir):
    build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)
    build_class_vectors(tiny_model, [*NAMES, "hen harrier"], cache_dir=cache_dir)
    files = sorted(p.name for p in (cache_dir / "text").rglob("*") if p.is_file())
    assert files == ["meta.json", "meta.json", "vectors.faiss", "vectors.faiss"]


def test_corrupt_cache_is_a_clear_error(tiny_model, cache_dir):
    build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)
    for path in (cache_dir / "text").rglob("vectors.faiss"):
        path.write_bytes(b"broken")
    with pytest.raises(oodfilter.CheckpointError, match="corrupt"):
        build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)


def test_untrained_no_branch_skips_no_vectors(fresh_tiny_model, cache_dir):
    index = build_class_vectors(fresh_tiny_model, NAMES, cache_dir=cache_dir)
    assert index.no is None and set(index.fingerprints) == {"yes"}


def test_nearest_classes_is_a_faiss_query_matching_brute_force(tiny_model, cache_dir):
    names = [f"thing number {i}" for i in range(300)]
    index = build_class_vectors(tiny_model, names, templates="photo", cache_dir=cache_dir, include_no=False)
    features = F.normalize(torch.randn(50, tiny_model.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    cosines, indices = index.nearest_classes(features, k=5)
    brute = (features @ index.yes.T).topk(5, dim=1)
    np.testing.assert_allclose(cosines, brute.values.numpy(), atol=1e-5)
    assert (indices == brute.indices.numpy()).mean() > 0.99  # ties may order differently
    with pytest.raises(InputError, match=r"must be \(B, 32\)"):
        index.nearest_classes(torch.zeros(2, 7))


@pytest.mark.slow
def test_fifty_thousand_names(tiny_model, cache_dir, shared_data):
    lines = (shared_data / "wordnet" / "synsets.tsv").read_text().splitlines()
    vocabulary = list(dict.fromkeys(line.split("\t")[1].split(",")[0].strip() for line in lines[1:]))[:50_000]
    assert len(vocabulary) == 50_000
    index = build_class_vectors(tiny_model, vocabulary, templates="photo", cache_dir=cache_dir, include_no=False,
                                batch_size=1024)
    assert index.yes.shape == (50_000, tiny_model.embed_dim)
    cosines, _ = index.nearest_classes(index.yes[:64], k=3)
    assert (cosines[:, 0] > 0.999).all()  # each name is (one of) its own nearest names


def test_a_long_cold_encode_on_the_cpu_warns_with_the_remedy(tiny_model, cache_dir, monkeypatch):
    from oodfilter.text import class_vectors

    monkeypatch.setattr(class_vectors, "LONG_ENCODE_CAPTIONS", 10)
    with pytest.warns(UserWarning, match="--templates photo"):
        build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir, include_no=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_class_vectors(tiny_model, NAMES, templates="ensemble", cache_dir=cache_dir, include_no=False)  # cached
