"""Eval and robustness refuse what needs no scores before any model is built (issue 27, item 6).

Each refusal below used to come only after the model was loaded, and most after the class vectors and
images were encoded; a patched model factory now fails the test if a model is built first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from oodfilter.errors import ClassListError, InputError, UnknownNameError
from oodfilter.evaluate import runner
from oodfilter.evaluate.checks import check_eval
from oodfilter.evaluate.config import EvalConfig
from oodfilter.evaluate.robustness import robustness
from oodfilter.evaluate.robustness_config import RobustnessConfig
from oodfilter.evaluate.runner import evaluate
from oodfilter.model import factory


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model is loaded or built (every way in goes through factory._load)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr(factory, "_load", refuse)


@pytest.fixture
def sets(tmp_path, monkeypatch):
    """ID and OOD folders of small images, a class list, a label file, an empty folder; the cwd is their root."""
    rng = np.random.default_rng(0)
    for name in ("id", "ood"):
        (tmp_path / name).mkdir()
        for index in range(4):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\n")
    (tmp_path / "labels.csv").write_text("file,class_name\nid/0.png,shark\n")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


EVAL = EvalConfig(id="id", ood=["ood"], classes="classes.txt", model="test-tiny", cache_dir="cache")


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"classes": "missing.txt"}, ClassListError, "missing.txt does not exist"),
    ({"ood": ["nowhere"]}, InputError, "'nowhere' does not exist"),
    ({"ood": ["empty"]}, InputError, "the empty set empty holds no images"),
    ({"methods": ["nonsense"]}, UnknownNameError, "unknown scorers 'nonsense'"),
    ({"templates": "nonsense"}, UnknownNameError, "unknown template set 'nonsense'"),
    ({"id_labels": "labels.csv"}, InputError, "class 'shark' is not in the class list"),
    ({"id_labels": "missing.csv"}, InputError, "label file missing.csv cannot be read"),
    ({"fpr_convention": "mine"}, InputError, "--fpr-convention must be one of clipn, openood"),
    ({"model": "ViT-B-16", "methods": ["mcm", "atd"]}, InputError, "'atd' needs a trained CLIPN no-branch"),
    ({"attack_eps": [0.5]}, InputError, "--attack-eps takes whole 8-bit levels"),
    ({"attack_eps": [2.0], "attack_steps": 0}, InputError, "--attack-steps must be at least 1"),
    ({"batch_size": 0}, InputError, "batch size must be at least 1"),
])
def test_eval_refuses_before_any_model_is_built(sets, no_model, options, error, message):
    with pytest.raises(error, match=message):
        evaluate(replace(EVAL, **options))


def test_eval_checks_every_method_on_the_loaded_model_before_encoding(sets, fresh_tiny_model, monkeypatch):
    """A method asked for by name that the given model cannot run stops eval before anything is encoded."""
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the methods were checked")

    monkeypatch.setattr(runner, "build_class_vectors", no_encoding)
    monkeypatch.setattr(runner, "encode_image_files", no_encoding)
    assert not fresh_tiny_model.no_branch_trained
    with pytest.raises(InputError, match="'ctw' needs a trained CLIPN no-branch"):
        evaluate(replace(EVAL, methods=["mcm", "ctw"]), model=fresh_tiny_model)


ROBUSTNESS = RobustnessConfig(id="id", ood="ood", classes="classes.txt", model="test-tiny", eps=[0.0, 1.0], steps=1,
                              cache_dir="cache")


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"classes": "missing.txt"}, ClassListError, "missing.txt does not exist"),
    ({"ood": "nowhere"}, InputError, "'nowhere' does not exist"),
    ({"ood": "empty"}, InputError, "the OOD set empty holds no images"),
    ({"methods": ["nonsense"]}, UnknownNameError, "unknown scorers 'nonsense'"),
    ({"templates": "nonsense"}, UnknownNameError, "unknown template set 'nonsense'"),
    ({"model": "ViT-B-16", "methods": ["atd"]}, InputError, "'atd' needs a trained CLIPN no-branch"),
    ({"out": "id"}, InputError, "inside the image set"),
])
def test_robustness_refuses_before_any_model_is_built(sets, no_model, options, error, message):
    with pytest.raises(error, match=message):
        robustness(replace(ROBUSTNESS, **options))


def test_id_labels_that_miss_an_id_image_are_refused_naming_it(sets, no_model):
    """Labels whose paths match no (or not every) ID image were ignored: id_accuracy came out null or partial."""
    (sets / "labels.csv").write_text("file,class_name\nid/0.png,tench\nid/1.png,goldfish\n")
    with pytest.raises(InputError, match=r"no label for 2 of the 4 ID images, the first being \S*id/2\.png"):
        evaluate(replace(EVAL, id_labels="labels.csv"))
    (sets / "labels.csv").write_text("file,class_name\n" + "".join(f"other/{i}.png,tench\n" for i in range(4)))
    with pytest.raises(InputError, match=r"no label for 4 of the 4 ID images, the first being \S*id/0\.png"):
        evaluate(replace(EVAL, id_labels="labels.csv"))


def test_id_labels_of_every_id_image_pass(sets):
    (sets / "labels.csv").write_text("file,class_index\n" + "".join(f"id/{i}.png,{i % 2}\n" for i in range(4)))
    checked = check_eval(replace(EVAL, id_labels="labels.csv"))
    assert sorted(checked.labels.values()) == [0, 0, 1, 1]
