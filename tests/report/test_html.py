"""`oodfilter report`: a self-contained page, checked as text and in a real headless browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import cli
from oodfilter.report import ReportConfig, write_report
from oodfilter.report.summary import decision_boundary, summarise
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest, read_meta
from oodfilter.sinks.rows import ManifestRow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture
def scanned(tmp_path, tiny_model, awkward_images):
    folder = tmp_path / "imgs"
    shutil.copytree(awkward_images[0], folder / "awkward", symlinks=True)
    out = tmp_path / "scan.jsonl"
    # clipn-clean: with these random weights and synthetic images it decides both ways (the quoted reference
    # captions put every image on one side), so the page has a decision boundary and both strips beside it.
    scan(ScanConfig(inputs=[str(folder)], classes=["tench", "goldfish", "banded texture"], out=str(out),
                    cache_dir=str(tmp_path / "cache"), workers=0, templates="clipn-clean"), model=tiny_model)
    return out


def test_page_is_self_contained_and_complete(scanned, tmp_path):
    page_path = write_report(scanned, tmp_path / "report.html", ReportConfig(per_gallery=5))
    page = page_path.read_text()
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []  # nothing fetched from anywhere
    data = summarise(read_manifest(scanned), read_meta(scanned), per_gallery=5, browse=500)
    strips = [data.most_ood, data.near_flagged, data.near_kept, data.most_id]
    assert all(strips) and len(data.browse) == 8  # both decisions occur; the grid has every ok image
    # four strips (issue 30: "Borderline" was a score-sorted list, not the two sides of the boundary) and the grid
    assert page.count('class="thumb"') == sum(map(len, strips)) + 8
    for heading in ("Score distribution", "Most OOD", "Nearest the decision boundary", "Just flagged", "Just kept",
                    "Most in-distribution", "Browse (8)", "Per top class", "Errors (5)"):
        assert heading in page
    assert "decompression bomb" in page or "exceeds the limit" in page  # the error messages are listed
    assert "atd threshold-free rule" in page


def test_decision_boundary_rules():
    rows = [ManifestRow(f"{s}.png", "ok", ood_score=s, is_ood=s > 0.4, top_class="a") for s in (0.1, 0.3, 0.5, 0.9)]
    assert decision_boundary(rows, {"threshold": 0.7}) == 0.7
    assert decision_boundary(rows, {"method": "ctw"}) == 0.5
    assert decision_boundary(rows, {"method": "atd"}) == pytest.approx(0.4)
    assert decision_boundary([ManifestRow("a.png", "ok", ood_score=0.2, top_class="a")], {"method": "msp"}) is None


def test_unreadable_gallery_image_becomes_a_placeholder(scanned, tmp_path):
    first_ok = next(r for r in read_manifest(scanned) if r.status == "ok")
    os.remove(first_ok.path)  # the image is gone since the scan
    page = write_report(scanned, tmp_path / "r.html", ReportConfig(per_gallery=100)).read_text()
    assert 'class="missing"' in page and "file not found" in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(scanned, tmp_path):
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no Chromium found (Debian package 'chromium'; .ci/run installs it)")
    result = CliRunner().invoke(cli, ["report", str(scanned), "--out", str(tmp_path / "report.html"),
                                      "--per-gallery", "8"])
    assert result.exit_code == 0, result.output
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000"]
    url = (tmp_path / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    loaded = re.search(r'data-thumbs-loaded="(\d+)"', dom.stdout)
    total = re.search(r'data-thumbs-total="(\d+)"', dom.stdout)
    data = summarise(read_manifest(scanned), read_meta(scanned), per_gallery=8, browse=500)
    thumbs = sum(map(len, [data.most_ood, data.near_flagged, data.near_kept, data.most_id, data.browse]))
    assert loaded and total and int(total.group(1)) == thumbs and int(loaded.group(1)) == thumbs
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", url], capture_output=True,
                   timeout=120)
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        colours = image.convert("RGB").resize((64, 80)).getcolors(64 * 80)
        assert colours is not None and len(colours) > 50  # a rendered page, not a blank one
