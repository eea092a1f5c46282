"""Scan and rescore refuse what needs no scores before any model is built (issue 27, item 6).

Each refusal below used to come only after the model was loaded and the class vectors encoded (minutes for
a long class list on a CPU); a patched model factory now fails the test if a model is built first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodfilter.errors import ClassListError, InputError, UnknownNameError
from oodfilter.model import factory
from oodfilter.scan import ScanConfig, scan
from oodfilter.scan.preflight import prepare_scan
from oodfilter.scan.rescore import RescoreConfig, rescore
from oodfilter.sinks.manifest import read_manifest


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model is loaded or built (every way in goes through factory._load)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr(factory, "_load", refuse)


@pytest.fixture
def folder(tmp_path):
    """Six small images, a class list, and an empty folder."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"{index}.png")
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\nhen\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


def _config(root: Path, **options) -> ScanConfig:
    values = {"inputs": [str(root / "images")], "classes": str(root / "classes.txt"), "model": "test-tiny",
              "out": str(root / "scan.jsonl"), "workers": 0, "cache_dir": str(root / "cache"), **options}
    return ScanConfig(**values)


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"classes": "missing.txt"}, ClassListError, "missing.txt does not exist"),
    ({"templates": "nonsense"}, UnknownNameError, "unknown template set 'nonsense'"),
    ({"method": "nonsense"}, UnknownNameError, "unknown scorers 'nonsense'"),
    ({"out": "scan.txt"}, InputError, "unknown format '.txt'"),
    ({"calibration": "classes.txt"}, InputError, "cannot be read as JSON"),
    ({"id_recall": 0.9, "calibrate_on": ["empty"]}, InputError, "no image found to calibrate on"),
    ({"method": "msp", "action": "move", "dest": "moved"}, InputError, "needs decisions"),
    ({"model": "ViT-B-16", "method": "ctw"}, InputError, "needs a trained CLIPN no-branch"),
])
def test_scan_refuses_before_any_model_is_built(folder, no_model, monkeypatch, options, error, message):
    monkeypatch.chdir(folder)  # the options' paths are relative to the folder
    with pytest.raises(error, match=message):
        scan(_config(folder, **options))
    assert not (folder / "scan.jsonl").exists()


def test_a_resume_with_another_class_list_or_rule_is_refused_before_the_model_loads(folder, no_model, monkeypatch):
    manifest = folder / "scan.jsonl"
    manifest.write_text("")
    meta = {"classes_sha256": "a different list", "decision_rule": {"threshold": None}, "method": "atd"}
    (folder / "scan.jsonl.meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"cannot resume .* different class list"):
        scan(_config(folder, resume=True))
    from oodfilter.decision.identity import classes_digest

    meta["classes_sha256"] = classes_digest(["tench", "goldfish", "hen"])  # the same list: the rule differs now
    (folder / "scan.jsonl.meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="different threshold or decision rule"):
        scan(_config(folder, resume=True, threshold=0.5))
    with pytest.raises(AssertionError, match="a model was loaded"):  # same settings: on to the model
        scan(_config(folder, resume=True))


def test_a_prepared_scan_holds_the_manifest_lock_until_it_ends(folder, tiny_model):
    config = _config(folder)
    other_writer = [sys.executable, "-c", f"from oodfilter.sinks.lock import ManifestLock\n"
                                          f"with ManifestLock({config.out!r}): pass"]
    with prepare_scan(config, model_given=True) as prepared:
        assert [Path(item.name).name for item in prepared.files] == [f"{i}.png" for i in range(6)]
        busy = subprocess.run(other_writer, capture_output=True, text=True)
        assert busy.returncode != 0 and "being written by another scan" in busy.stderr
        summary = scan(config, model=tiny_model, prepared=prepared)
    assert summary.ok == 6
    assert subprocess.run(other_writer, capture_output=True, text=True).returncode == 0


@pytest.fixture
def stored(folder, tiny_model):
    """A scan with stored features, to rescore."""
    scan(_config(folder, save_features=True), model=tiny_model)
    return folder / "scan.jsonl"


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"classes": "missing.txt"}, ClassListError, "missing.txt does not exist"),
    ({"method": "nonsense"}, UnknownNameError, "unknown scorers 'nonsense'"),
    ({"templates": "nonsense"}, UnknownNameError, "unknown template set 'nonsense'"),
    ({"calibration": "classes.txt"}, InputError, "cannot be read as JSON"),
    ({"id_recall": 0.9, "calibrate_on": ["empty"]}, InputError, "no image found to calibrate on"),
])
def test_rescore_refuses_before_any_model_is_built(folder, stored, no_model, monkeypatch, options, error, message):
    monkeypatch.chdir(folder)
    config = RescoreConfig(manifest=str(stored), classes="classes.txt", out="new.jsonl", cache_dir="cache")
    with pytest.raises(error, match=message):
        rescore(replace(config, **options))
    assert not (folder / "new.jsonl").exists()


def test_rescore_still_runs_once_the_checks_pass(folder, stored, tiny_model):
    config = RescoreConfig(manifest=str(stored), classes=["cat", "dog"], out=str(folder / "new.jsonl"),
                           cache_dir=str(folder / "cache"))
    summary = rescore(config, model=tiny_model)
    assert summary.ok == 6
    assert {row.top_class for row in read_manifest(folder / "new.jsonl")} <= {"cat", "dog"}
