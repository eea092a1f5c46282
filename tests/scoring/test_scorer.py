"""The Scorer: batched image scoring that agrees with the pure functions, and refuses misuse."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import oodfilter
from oodfilter.errors import InputError, ModelMismatchError
from oodfilter.scoring import functional as fn


def _rows(scorer, paths):
    """Every row of ``paths``, in order (score_files yields them batch by batch)."""
    return [row for rows in oodfilter.score_files(scorer, paths) for row in rows]


NAMES = ["tench", "goldfish", "great white shark", "hen", "ostrich", "brick wall"]


@pytest.fixture
def index(tiny_model, cache_dir):
    return oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)


def _images(n, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["atd", "ctw", "msp", "maxlogit", "energy", "mcm"])
def test_scorer_equals_functional_math(tiny_model, index, method):
    images = _images(9)
    result = oodfilter.Scorer(tiny_model, index, method, batch_size=4, precision="fp32").score_images(images)
    with torch.no_grad():  # the math in fp32 (the default, auto, is bf16 on CPUs that have it)
        f = tiny_model.encode_image(images)
    s = tiny_model.logit_scale
    ly, ln = fn.class_logits(f, index.yes, s), fn.class_logits(f, index.no, s)
    expected = {
        "atd": fn.atd(ly, ln), "ctw": fn.ctw(ly, ln), "msp": fn.msp(ly),
        "maxlogit": fn.max_logit(ly), "energy": fn.energy(ly), "mcm": fn.mcm(f @ index.yes.T),
    }[method]
    torch.testing.assert_close(result.ood_score, expected.ood_score, rtol=1e-5, atol=1e-5)
    if expected.is_ood is None:
        assert result.is_ood is None
    else:
        assert torch.equal(result.is_ood, expected.is_ood)
    assert result.top_class.tolist() == ly.argmax(dim=1).tolist()
    assert len(result.top_class_names) == 9 and set(result.top_class_names) <= set(NAMES)


def test_batch_size_and_order_do_not_change_scores(tiny_model, index):
    images = _images(13, seed=1)
    one = oodfilter.Scorer(tiny_model, index, "atd", batch_size=1).score_images(images)
    many = oodfilter.Scorer(tiny_model, index, "atd", batch_size=64).score_images(images)
    torch.testing.assert_close(one.ood_score, many.ood_score, rtol=1e-5, atol=1e-6)
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(2))
    shuffled = oodfilter.Scorer(tiny_model, index, "atd", batch_size=5).score_images(images[perm])
    torch.testing.assert_close(shuffled.ood_score, many.ood_score[perm], rtol=1e-5, atol=1e-6)


def test_threshold_replaces_the_threshold_free_rule(tiny_model, index):
    images = _images(8, seed=3)
    plain = oodfilter.Scorer(tiny_model, index, "msp").score_images(images)
    assert plain.is_ood is None
    cut = float(plain.ood_score.median())
    decided = oodfilter.Scorer(tiny_model, index, "msp", threshold=cut).score_images(images)
    assert torch.equal(decided.is_ood, plain.ood_score > cut)


def test_clipn_methods_need_a_trained_no_branch(fresh_tiny_model, cache_dir):
    index = oodfilter.build_class_vectors(fresh_tiny_model, NAMES, cache_dir=cache_dir)
    with pytest.raises(InputError, match=r"needs a trained CLIPN no-branch.*energy, maxlogit, mcm, msp"):
        oodfilter.Scorer(fresh_tiny_model, index, "atd")
    oodfilter.Scorer(fresh_tiny_model, index, "mcm")  # fine without a no-branch


def test_index_from_another_model_is_refused(tiny_model, fresh_tiny_model, cache_dir):
    foreign = oodfilter.build_class_vectors(fresh_tiny_model, NAMES, cache_dir=cache_dir)
    with pytest.raises(ModelMismatchError, match="different model"):
        oodfilter.Scorer(tiny_model, foreign, "msp")


def test_unknown_method_lists_the_registered_ones(tiny_model, index):
    with pytest.raises(oodfilter.UnknownNameError, match="registered: ") as refused:
        oodfilter.Scorer(tiny_model, index, "magic")
    # every built-in, in name order; installed plugins (neglabel, plp, csp, ...) sit among them
    listed = str(refused.value).split("registered: ", 1)[1].split(", ")
    builtins = {"atd", "ctw", "energy", "knn", "mahalanobis", "maxlogit", "mcm", "msp"}
    assert builtins <= set(listed) and listed == sorted(listed)


def test_atd_with_one_class_warns(tiny_model, cache_dir):
    single = oodfilter.build_class_vectors(tiny_model, ["dog"], cache_dir=cache_dir)
    with pytest.warns(UserWarning, match="single class"):
        oodfilter.Scorer(tiny_model, single, "atd")


def test_empty_input_gives_empty_result(tiny_model, index):
    result = oodfilter.Scorer(tiny_model, index, "atd").score_images(torch.zeros(0, 3, 32, 32))
    assert len(result) == 0 and result.is_ood is not None and result.is_ood.numel() == 0


def test_score_paths_keeps_every_input_in_order(tiny_model, index, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    paths = [good, broken, tmp_path / "missing.png", good]
    rows = _rows(oodfilter.Scorer(tiny_model, index, "atd", batch_size=3), paths)
    assert [r.path for r in rows] == [str(p) for p in paths]
    assert [r.status for r in rows] == ["ok", "error", "error", "ok"]
    assert rows[1].error == "not a recognised image format" and rows[2].error == "file not found"
    assert rows[0].ood_score == pytest.approx(rows[3].ood_score)
    assert rows[0].top_class in NAMES and isinstance(rows[0].is_ood, bool)


def test_real_images_score_consistently(tiny_model, cache_dir, shared_data):
    sample = shared_data / "imagenet-sample"
    names = [line.split("\t")[3] for line in (sample / "labels.tsv").read_text().splitlines()[1:50]]
    index = oodfilter.build_class_vectors(tiny_model, names, cache_dir=cache_dir)
    textures = sorted((shared_data / "textures-dtd" / "images").rglob("*.jpg"))[:4]
    paths = sorted((sample / "images").iterdir())[:12] + textures
    scorer = oodfilter.Scorer(tiny_model, index, "atd", batch_size=5)
    rows = _rows(scorer, paths)
    assert [r.status for r in rows] == ["ok"] * len(paths)
    images = torch.stack([tiny_model.preprocess(oodfilter.load_rgb_image(p)) for p in paths])
    direct = scorer.score_images(images)
    torch.testing.assert_close(torch.tensor([r.ood_score for r in rows]), direct.ood_score, rtol=1e-5, atol=1e-6)
