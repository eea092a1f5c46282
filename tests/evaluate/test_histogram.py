"""eval's score histograms say what they show: title, named axes with a scale, a legend with swatches."""

from __future__ import annotations

import numpy as np
from PIL import Image

from oodfilter.evaluate.histogram import COLOURS, TICKS, X_LABEL, Y_LABEL, save_histogram_png

LEFT, TOP, BOTTOM = 78, 40, 56  # the plot area's margins in save_histogram_png


def _sets():
    rng = np.random.default_rng(0)
    return {"ID": rng.normal(0, 1, 200).tolist(), "OOD far": rng.normal(3, 1, 80).tolist()}


def test_the_png_carries_its_labels_as_text(tmp_path):
    """The PNG had a title and legend drawn in pixels only; the same labels are now readable from the file."""
    path = save_histogram_png(_sets(), tmp_path / "h.png", title="atd: ID vs OOD", notes={"OOD far": "AUROC 97.0%"})
    with Image.open(path) as image:
        assert image.size == (720, 400)
        text = dict(image.text)
    assert text["Title"] == "atd: ID vs OOD"
    assert text["Description"].splitlines() == ["ID (n=200)", "OOD far (n=80, AUROC 97.0%)"]
    assert text["X axis"] == X_LABEL and text["Y axis"] == Y_LABEL


def _dark_bands(pixels: np.ndarray) -> int:
    """Count the runs of rows holding dark (text) pixels."""
    rows = (pixels.min(axis=2) < 100).any(axis=1)
    return int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])


def test_the_y_axis_has_a_scale_and_the_legend_a_swatch_per_set(tmp_path):
    """The y axis said "share" without a number, and the legend was coloured text with no line to match."""
    path = save_histogram_png(_sets(), tmp_path / "h.png", title="t")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height = pixels.shape[0]
    tick_labels = pixels[TOP - 10:height - BOTTOM + 5, 30:LEFT - 5]  # right of the rotated axis name, above the x ticks
    assert _dark_bands(tick_labels) == TICKS
    under_axis = pixels[height - BOTTOM + 4:height - BOTTOM + 22, LEFT - 30:]  # the x tick values
    assert (under_axis.min(axis=2) < 100).any()
    legend = pixels[TOP:TOP + 60, 300:]
    for colour in COLOURS[:2]:  # a swatch: a run of the set's colour at least 15 pixels long on one row
        match = (np.abs(legend - np.array(colour)).sum(axis=2) < 30)
        longest = max(np.diff(np.flatnonzero(np.diff(np.r_[0, row, 0]))) [::2].max(initial=0) for row in match)
        assert longest >= 15, colour
