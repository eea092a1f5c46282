"""``oodfilter rescore --adapt``: the dataset-aware pass over a scan's stored features, on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.decision import recall_threshold
from oodfilter.errors import InputError
from oodfilter.scoring.adaptive import AdaptConfig, adaptive_scores, score_with_proxies
from oodfilter.sinks.features import load_features
from oodfilter.sinks.manifest import read_manifest, read_meta, sidecar

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray", "cock",
           "hen", "ostrich"]


def _run(*args: object, expect: int = 0):
    result = CliRunner().invoke(cli, [*map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result


def _refused(*args: object) -> str:
    """The InputError message of a refused command (the CLI's error boundary prints it as one line)."""
    result = _run(*args, expect=1)
    assert isinstance(result.exception, InputError), repr(result.exception)
    return str(result.exception)


def _link(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, file in enumerate(files):
        (folder / f"{i:03d}-{file.name}").symlink_to(file)
    return folder


@pytest.fixture
def scanned(tmp_path: Path, shared_data: Path) -> tuple[Path, Path]:
    """A features scan of 30 ImageNet-sample photos and 10 DTD textures (test-tiny), and its class list."""
    photos = sorted((shared_data / "imagenet-sample" / "images").iterdir())[:30]
    textures = sorted((shared_data / "textures-dtd" / "images").rglob("*.jpg"))[::120][:10]
    folder = _link(photos + textures, tmp_path / "imgs")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "scan.jsonl"
    _run("scan", folder, "--model", "test-tiny", "--classes", classes, "--out", out, "--workers", 0, "--batch-size",
         8, "--cache-dir", tmp_path / "cache", "-q", "--save-features")
    return out, classes


def test_rescore_adapt_writes_the_adapted_scores_and_records_the_pass(tmp_path, scanned):
    out, classes = scanned
    adapted = tmp_path / "adapted.jsonl"
    _run("rescore", out, "--adapt", "--adapt-negatives", 4, "--classes", classes, "--out", adapted, "--cache-dir",
         tmp_path / "cache", "-q")
    meta = read_meta(adapted)
    assert meta["adapt"]["base_method"] == "atd" and meta["adapt"]["images"] == 40
    assert meta["adapt"]["config"]["negatives"] == 4 and meta["adapt"]["negatives"] <= 4
    assert meta["decision"] is None  # no threshold: the adapted score has no rule of its own
    rows = [row for row in read_manifest(adapted) if row.ok]
    assert all(row.is_ood is None for row in rows)
    # the rows hold exactly what the library call gives on the stored features
    model = oodfilter.load_model("test-tiny", device="cpu")
    vectors = oodfilter.build_class_vectors(model, CLASSES, include_no=True, cache_dir=tmp_path / "cache")
    scorer = oodfilter.Scorer(model, vectors, "atd", device="cpu")
    features = load_features(out, [row.path for row in read_manifest(out) if row.ok])
    expected = adaptive_scores(scorer, features, AdaptConfig(negatives=4))
    assert [row.score for row in rows] == [float(x) for x in expected.ood_score]
    plain = tmp_path / "plain.jsonl"
    _run("rescore", out, "--classes", classes, "--out", plain, "--cache-dir", tmp_path / "cache", "-q")
    assert "adapt" not in read_meta(plain)


def test_rescore_adapt_decides_with_a_threshold_or_a_keep_fraction(tmp_path, scanned):
    out, classes = scanned
    decided = tmp_path / "t.jsonl"
    _run("rescore", out, "--adapt", "--threshold", 0.5, "--classes", classes, "--out", decided, "--cache-dir",
         tmp_path / "cache", "-q")
    rows = [row for row in read_manifest(decided) if row.ok]
    assert all(row.is_ood == (row.score > 0.5) for row in rows)
    kept = tmp_path / "k.jsonl"
    _run("rescore", out, "--adapt", "--keep-fraction", 0.75, "--classes", classes, "--out", kept, "--cache-dir",
         tmp_path / "cache", "-q")
    rows = [row for row in read_manifest(kept) if row.ok]
    assert [row.score for row in rows] == [row.score for row in read_manifest(decided) if row.ok]
    assert "keep_boundary" in read_meta(kept)


def test_rescore_adapt_calibrates_on_known_images_scored_against_the_scans_proxies(tmp_path, scanned, shared_data):
    out, classes = scanned
    known_images = sorted((shared_data / "imagenet-sample" / "images").iterdir())[100:124]
    known = tmp_path / "known.jsonl"
    _run("scan", _link(known_images, tmp_path / "known"), "--model", "test-tiny", "--classes", classes, "--out",
         known, "--workers", 0, "--cache-dir", tmp_path / "cache", "-q", "--save-features")
    shutil.rmtree(tmp_path / "known")  # only the stored features remain
    adapted = tmp_path / "adapted.jsonl"
    _run("rescore", out, "--adapt", "--id-recall", 0.9, "--calibrate-on", known, "--classes", classes, "--out",
         adapted, "--cache-dir", tmp_path / "cache", "-q")
    meta = read_meta(adapted)
    assert meta["calibration"]["num_images"] == 24 and "calibrated to keep 90%" in meta["decision"]
    saved = json.loads(sidecar(adapted, "calibration.json").read_text())
    assert saved["method"] == "atd+adapt"  # refused by a scan or rescore that would decide on atd's own scores
    assert all(row.is_ood == (row.score > meta["threshold"]) for row in read_manifest(adapted) if row.ok)
    model = oodfilter.load_model("test-tiny", device="cpu")
    vectors = oodfilter.build_class_vectors(model, CLASSES, include_no=True, cache_dir=tmp_path / "cache")
    scorer = oodfilter.Scorer(model, vectors, "atd", device="cpu")
    result = adaptive_scores(scorer, load_features(out, [row.path for row in read_manifest(out) if row.ok]))
    known_features = torch.from_numpy(np.asarray(load_features(known, [r.path for r in read_manifest(known)]),
                                                 dtype=np.float32))
    scores = score_with_proxies(scorer, result.proxies, known_features)
    assert meta["threshold"] == recall_threshold(torch.from_numpy(scores.astype(np.float64)), 0.9)


def test_rescore_adapt_refusals_are_clear(tmp_path, scanned):
    out, classes = scanned
    plain = tmp_path / "plain.jsonl"  # scanned without stored features
    _run("scan", tmp_path / "imgs", "--model", "test-tiny", "--classes", classes, "--out", plain, "--workers", 0,
         "--cache-dir", tmp_path / "cache", "-q")
    assert "--save-features" in _refused("rescore", plain, "--adapt", "--classes", classes, "--out",
                                         tmp_path / "a.jsonl")
    few = tmp_path / "few.jsonl"
    _run("scan", _link(sorted((tmp_path / "imgs").iterdir())[:5], tmp_path / "few"), "--model", "test-tiny",
         "--classes", classes, "--out", few, "--workers", 0, "--cache-dir", tmp_path / "cache", "-q", "--save-features")
    assert "at least 20 scored images" in _refused("rescore", few, "--adapt", "--classes", classes, "--out",
                                                   tmp_path / "b.jsonl")
    calibration = tmp_path / "c.json"
    calibration.write_text("{}")
    assert "--calibration was fitted on the method's own scores" in _refused(
        "rescore", out, "--adapt", "--calibration", calibration, "--classes", classes, "--out", tmp_path / "c.jsonl")
    assert "add --adapt" in _refused("rescore", out, "--adapt-negatives", 3, "--classes", classes, "--out",
                                     tmp_path / "d.jsonl")
    assert "negative_fraction must be in (0, 0.5]" in _refused(
        "rescore", out, "--adapt", "--adapt-fraction", 0.9, "--classes", classes, "--out", tmp_path / "e.jsonl")
    assert not (tmp_path / "e.jsonl").exists()
