"""knn and mahalanobis on real images through scan, rescore, eval and the pipeline filter, with --reference."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import cli
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.features import load_features
from oodfilter.sinks.manifest import read_manifest, read_meta

pytestmark = pytest.mark.slow  # a dozen test-tiny scans of real photos


def _run(*args: object, expect: int = 0):
    result = CliRunner().invoke(cli, [*map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result


def _said(result) -> str:
    """What a refused command said: its output, or the error the command line prints as one line."""
    return result.output + str(result.exception)


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """Reference photos, a scan folder (other photos and textures), a class list, a cache."""
    root = tmp_path_factory.mktemp("fitted")
    photos = sorted((shared_data / "imagenet-sample" / "images").iterdir())
    textures = sorted((shared_data / "textures-dtd" / "images").rglob("*.jpg"))[::200][:5]
    for folder, files in (("ref", photos[:10]), ("scan", photos[10:15] + textures)):
        (root / folder).mkdir()
        for file in files:
            shutil.copy(file, root / folder / file.name)
    (root / "scan" / "broken.jpg").write_bytes(b"not an image")  # an error row, as in any real folder
    (root / "classes.txt").write_text("tench\ngoldfish\ngreat white shark\n")
    return root


def _scan(world: Path, inputs: Path | str, out: Path, *args: object, expect: int = 0):
    return _run("scan", inputs, "--model", "test-tiny", "--classes", world / "classes.txt", "--out", out,
                "--workers", 0, "--batch-size", 4, "--cache-dir", world / "cache", "-q", *args, expect=expect)


@pytest.fixture(scope="module")
def reference_manifest(world):
    """The reference folder scanned with stored features."""
    out = world / "ref.jsonl"
    _scan(world, world / "ref", out, "--method", "msp", "--save-features")
    return out


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_scan_with_a_reference_folder_scores_and_records_the_reference(world, tmp_path, method):
    out = tmp_path / "scan.jsonl"
    _scan(world, world / "scan", out, "--method", method, "--reference", world / "ref", "--save-features")
    rows = read_manifest(out)
    assert len(rows) == 11 and sum(row.ok for row in rows) == 10
    assert all(np.isfinite(row.score) and row.is_ood is None for row in rows if row.ok)  # no threshold-free rule
    meta = read_meta(out)
    assert meta["method"] == method and meta["reference"]["count"] == 10 and meta["reference"]["stored"] == 0
    assert meta["reference"]["paths"] == [str(world / "ref")]
    assert meta["reference_sha256"] == meta["reference"]["features_sha256"]


def test_knn_scores_the_reference_images_themselves_near_zero(world, tmp_path):
    out = tmp_path / "self.jsonl"
    _scan(world, world / "ref", out, "--method", "knn", "--reference", world / "ref")
    scanned = tmp_path / "scan.jsonl"
    _scan(world, world / "scan", scanned, "--method", "knn", "--reference", world / "ref")
    own = [row.score for row in read_manifest(out)]
    others = [row.score for row in read_manifest(scanned) if row.ok]
    assert max(own) < 5e-3 < min(others)


def test_a_scan_of_its_own_reference_images_is_warned_about(world, tmp_path, tiny_model):
    def scan_with_reference(folder: str) -> list[str]:
        config = ScanConfig(inputs=[str(world / folder)], classes=str(world / "classes.txt"), method="knn",
                            reference=[str(world / "ref")], out=str(tmp_path / f"{folder}.jsonl"),
                            cache_dir=str(world / "cache"), workers=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan(config, model=tiny_model)
        return [str(w.message) for w in caught if "also --reference images" in str(w.message)]

    said = scan_with_reference("ref")  # every scanned image is a reference image: scores near 0 whatever it is
    assert len(said) == 1 and said[0].startswith("10 of the 10 scanned images are also --reference images")
    assert scan_with_reference("scan") == []  # other images: nothing to say


def test_rescore_fits_on_stored_reference_features_without_encoding_an_image(world, tmp_path, reference_manifest,
                                                                             monkeypatch):
    source = tmp_path / "scan.jsonl"
    _scan(world, world / "scan", source, "--method", "msp", "--save-features")
    moved = tmp_path / "gone"
    shutil.move(world / "ref", moved)  # only the stored features remain
    try:
        def no_encode(*args, **kwargs):
            raise AssertionError("an image was encoded")

        monkeypatch.setattr("oodfilter.scoring.scorer.Scorer.encode_images", no_encode)
        for method in ("knn", "mahalanobis"):
            out = tmp_path / f"{method}.jsonl"
            _run("rescore", source, "--classes", world / "classes.txt", "--method", method, "--reference",
                 reference_manifest, "--out", out, "--cache-dir", world / "cache", "-q")
            meta = read_meta(out)
            assert meta["reference"]["stored"] == meta["reference"]["count"] == 10
            assert sum(row.ok for row in read_manifest(out)) == 10
    finally:
        shutil.move(moved, world / "ref")
    # knn by hand from the two stored feature files: the k-th (k = 1) nearest reference distance
    stored_ref = torch.from_numpy(np.asarray(load_features(reference_manifest, [r.path for r in
                                                                                 read_manifest(reference_manifest)]),
                                             dtype=np.float32))
    ok = [row.path for row in read_manifest(source) if row.ok]
    queries = torch.from_numpy(np.asarray(load_features(source, ok), dtype=np.float32))
    expected = torch.cdist(queries.double(), torch.nn.functional.normalize(stored_ref.double(), dim=-1)).min(1).values
    got = torch.tensor([row.score for row in read_manifest(tmp_path / "knn.jsonl") if row.ok], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)


def test_a_manifest_without_stored_features_gives_its_images(world, tmp_path):
    plain = tmp_path / "plain.jsonl"
    _scan(world, world / "ref", plain, "--method", "msp")
    out = tmp_path / "scan.jsonl"
    _scan(world, world / "scan", out, "--method", "knn", "--reference", plain)
    assert read_meta(out)["reference"]["count"] == 10 and read_meta(out)["reference"]["stored"] == 0


def test_resume_with_another_reference_is_refused(world, tmp_path):
    out = tmp_path / "scan.jsonl"
    _scan(world, world / "scan", out, "--method", "knn", "--reference", world / "ref")
    _scan(world, world / "scan", out, "--method", "knn", "--reference", world / "ref", "--resume")  # same: fine
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for file in sorted((world / "ref").iterdir())[:6]:
        shutil.copy(file, fewer / file.name)
    result = _scan(world, world / "scan", out, "--method", "knn", "--reference", fewer, "--resume", expect=1)
    assert "different reference images (--reference)" in _said(result)


def test_refusals_before_the_model_loads(world, tmp_path, reference_manifest, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("oodfilter.model.factory.load_model", no_load)
    monkeypatch.setattr("oodfilter.scoring.factory.load_model", no_load)
    out = tmp_path / "x.jsonl"
    result = _scan(world, world / "scan", out, "--method", "knn", expect=1)
    said = _said(result)
    assert "method 'knn' is fitted on known in-distribution images and none were given: pass --reference" in said
    result = _scan(world, world / "scan", out, "--method", "mahalanobis", "--reference", tmp_path / "nowhere",
                   expect=1)
    assert f"--reference {tmp_path / 'nowhere'}: input" in _said(result) and "does not exist" in _said(result)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _scan(world, world / "scan", out, "--method", "knn", "--reference", empty, expect=1)
    assert "holds no image to fit on" in _said(result)
    result = _run("rescore", reference_manifest, "--classes", world / "classes.txt", "--method", "mahalanobis",
                  "--out", tmp_path / "r.jsonl", expect=1)
    assert "pass --reference" in _said(result)
    result = _run("eval", "--id", world / "ref", "--ood", world / "scan", "--classes", world / "classes.txt",
                  "--model", "test-tiny", "--methods", "knn", expect=1)
    assert "pass --reference" in _said(result)
    assert not out.exists() and not (tmp_path / "r.jsonl").exists()


def test_eval_fits_once_on_the_reference_and_skips_fitted_methods_without_one(world, tmp_path, reference_manifest):
    held_out = tmp_path / "id"
    held_out.mkdir()
    for file in sorted((world / "scan").glob("*.JPEG")):
        shutil.copy(file, held_out / file.name)
    textures = tmp_path / "textures"
    textures.mkdir()
    for file in sorted((world / "scan").glob("*.jpg")):
        if file.name != "broken.jpg":
            shutil.copy(file, textures / file.name)
    common = ["eval", "--id", held_out, "--ood", textures, "--classes", world / "classes.txt", "--model",
              "test-tiny", "--cache-dir", world / "cache"]
    results = tmp_path / "results.json"
    _run(*common, "--methods", "knn,mahalanobis,mcm", "--reference", reference_manifest, "--out", results)
    report = json.loads(results.read_text())
    assert report["methods"] == ["knn", "mahalanobis", "mcm"]
    assert report["reference"]["count"] == report["reference"]["stored"] == 10
    assert all(0.0 <= report["results"][m]["textures"]["auroc"] <= 1.0 for m in report["methods"])
    unfitted = tmp_path / "unfitted.json"
    _run(*common, "--out", unfitted)
    skipped = json.loads(unfitted.read_text())["skipped"]
    assert "--reference" in skipped["knn"] and "--reference" in skipped["mahalanobis"]


def test_the_pipeline_filter_fits_on_its_reference(world, tiny_model, tmp_path):
    from oodfilter.pipeline.filter import OODFilter

    keep = OODFilter(tiny_model, ["tench", "goldfish", "great white shark"], method="knn", reference=[world / "ref"],
                     threshold=0.05, cache_dir=world / "cache", device="cpu")
    assert keep.scorer.reference is not None and len(keep.scorer.reference) == 10
    photo = sorted((world / "ref").iterdir())[0]
    image = keep.clip_preprocess(Image.open(photo).convert("RGB"))[None]
    assert float(keep.scorer.score_images(image).ood_score[0]) < 5e-3  # a reference image: its own neighbour
    with pytest.raises(Exception, match="pass --reference"):
        OODFilter(tiny_model, ["tench"], method="mahalanobis", cache_dir=world / "cache", device="cpu")
