"""Score histograms as PNG images, drawn with Pillow (no plotting library needed).

Each plot is labelled so that it reads on its own: a title, both axes named with a scale of ticks, and a
legend with a colour swatch, size and note per set. The same labels are stored as PNG text chunks
(``Title``, ``Description``, ``X axis``, ``Y axis``), readable with ``PIL.Image.open(path).text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]
X_LABEL = "OOD score (higher = more OOD)"
Y_LABEL = "share of the set's images per bin"
TICKS = 5
LEGEND_LINE = 16
_GREY, _BLACK = (120, 120, 120), (0, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at ``size`` pixels (its small bitmap font where Pillow was built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def legend_entries(sets: Mapping[str, Sequence[float]], notes: Mapping[str, str] | None = None) -> list[str]:
    """Return the legend line of each set: ``NAME (n=COUNT, NOTE)``, the note only where ``notes`` has one."""
    notes = notes or {}
    return [f"{name} (n={len(values)}{', ' + notes[name] if notes.get(name) else ''})"
            for name, values in sets.items()]


def save_histogram_png(
    sets: Mapping[str, Sequence[float]], path: str | Path, *, title: str, bins: int = 40,
    size: tuple[int, int] = (720, 400), notes: Mapping[str, str] | None = None,
) -> Path:
    """Draw one normalised histogram outline per named score set, on shared bins, and save it as PNG.

    ``notes`` adds a note to a set's legend entry (e.g. its AUROC against the in-distribution set).
    """
    width, height = size
    left, right, top, bottom = 78, 20, 40, 56
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    values = [np.asarray(v, dtype=np.float64) for v in sets.values() if len(v)]
    low = min(float(v.min()) for v in values) if values else 0.0
    high = max(float(v.max()) for v in values) if values else 1.0
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    densities = {name: np.histogram(np.asarray(v, dtype=np.float64), bins=edges)[0] / max(len(v), 1)
                 for name, v in sets.items()}
    plot_w, plot_h = width - left - right, height - top - bottom
    entries = legend_entries(sets, notes)
    legend_h = LEGEND_LINE * len(entries) + 14  # head room above the tallest bin, so the legend hides no bar
    peak = max((float(d.max()) for d in densities.values()), default=1.0) or 1.0
    peak *= plot_h / max(plot_h - legend_h, plot_h / 2)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=_GREY)
    for index, density in enumerate(densities.values()):
        points = []
        for b, value in enumerate(density):
            y = top + plot_h * (1 - value / peak)
            points += [(left + plot_w * b / bins, y), (left + plot_w * (b + 1) / bins, y)]
        draw.line(points, fill=COLOURS[index % len(COLOURS)], width=2)
    for tick in range(TICKS):  # x: scores from the lowest to the highest seen; y: 0 to the tallest bin
        fraction = tick / (TICKS - 1)
        x, y = left + plot_w * fraction, top + plot_h * (1 - fraction)
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill=_BLACK)
        draw.text((x, top + plot_h + 6), f"{low + fraction * (high - low):.4g}", fill=_BLACK, font=small,
                  anchor="ma")
        draw.line([left - 4, y, left, y], fill=_BLACK)
        draw.text((left - 6, y), f"{100 * fraction * peak:.3g}%", fill=_BLACK, font=small, anchor="rm")
    draw.text((left + plot_w / 2, height - 6), X_LABEL, fill=_BLACK, font=font, anchor="md")
    _vertical_text(image, Y_LABEL, (4, top + plot_h // 2), font)
    draw.text((left, 12), title, fill=_BLACK, font=font)
    _legend(draw, entries, (left + plot_w - 8, top + 8), small)
    info = PngInfo()
    for key, text in (("Title", title), ("Description", "\n".join(entries)), ("X axis", X_LABEL),
                      ("Y axis", Y_LABEL)):
        info.add_itxt(key, text)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, pnginfo=info)
    return out


def _legend(draw: ImageDraw.ImageDraw, entries: list[str], corner: tuple[float, float],
            font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    """Draw a boxed legend whose top-right corner is ``corner``: a colour swatch and a line per entry."""
    if not entries:
        return
    line_h, swatch = LEGEND_LINE, 18
    text_w = max(draw.textlength(entry, font=font) for entry in entries)
    right, top = corner
    box_left = right - text_w - swatch - 14
    draw.rectangle([box_left, top, right, top + line_h * len(entries) + 6], fill="white", outline=_GREY)
    for index, entry in enumerate(entries):
        y = top + 4 + line_h * index + line_h / 2
        colour = COLOURS[index % len(COLOURS)]
        draw.line([box_left + 5, y, box_left + 5 + swatch, y], fill=colour, width=3)
        draw.text((box_left + swatch + 9, y), entry, fill=_BLACK, font=font, anchor="lm")


def _vertical_text(image: Image.Image, text: str, left_middle: tuple[int, int],
                   font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    """Write ``text`` reading bottom to top, its left edge at ``left_middle[0]``, centred on ``left_middle[1]``."""
    box = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
    label = Image.new("RGB", (int(box[2]) + 2, int(box[3]) + 2), "white")
    ImageDraw.Draw(label).text((0, 0), text, fill=_BLACK, font=font)
    turned = label.rotate(90, expand=True)
    image.paste(turned, (left_middle[0], left_middle[1] - turned.height // 2))
