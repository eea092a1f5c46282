"""Fixtures of the report tests: a scan of real images and its report page."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import cli
from oodfilter.scan import ScanConfig, scan


@pytest.fixture
def reviewed_scan(tmp_path, tiny_model, real_images):
    """A scan of real photos and textures (copied: a review's export is later applied to them) and its report."""
    folder = tmp_path / "images"
    for image in real_images:
        target = folder / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
    manifest = tmp_path / "scan.jsonl"
    # clipn-clean: test-tiny's ATD with the quoted reference captions puts nearly every image near 1.0
    # with these classes test-tiny's top classes split (19 fish, 5 blue), so the class filter has something to do
    classes = ["red", "green", "blue", "striped", "dotted", "bird", "dog", "fish"]
    scan(ScanConfig(inputs=[str(folder)], classes=classes, out=str(manifest), cache_dir=str(tmp_path / "cache"),
                    workers=0, templates="clipn-clean"), model=tiny_model)
    result = CliRunner().invoke(cli, ["report", str(manifest), "--out", str(tmp_path / "report.html"),
                                      "--per-gallery", "4"])
    assert result.exit_code == 0, result.output
    return manifest, tmp_path / "report.html"
