"""``oodfilter report``: a self-contained HTML page (thumbnails embedded, no network) of one scan."""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodfilter.atomic import atomic_write_text
from oodfilter.data.decode import ImageDecodeError, load_rgb_image
from oodfilter.data.remote import SourceUnavailableError, is_url
from oodfilter.decision.calibration import Calibration
from oodfilter.errors import InputError
from oodfilter.messages import redact
from oodfilter.outputs import check_output, starts_with
from oodfilter.report.class_rates import suspicious_note
from oodfilter.report.label_issues import label_issues_section
from oodfilter.report.review_page import REVIEW_FORMAT, SCRIPT, STYLE, file_sha256, json_island, review_name
from oodfilter.report.summary import ReportData, summarise_stream
from oodfilter.report.what_if import what_if
from oodfilter.sinks.manifest import iter_manifest, read_meta, sidecar
from oodfilter.sinks.names import printable
from oodfilter.sinks.row_paths import manifest_base, resolve_row_path
from oodfilter.sinks.rows import ManifestRow

logger = logging.getLogger(__name__)

THUMB_SIZE = 160
MAX_TABLE_ROWS = 200
# The browsable grid shows at most this many images (every k-th ok row of a larger scan).
MAX_GRID = 500


@dataclass
class ReportConfig:
    """Options of a report: gallery size, histogram bins, thumbnail size, images in the browsable grid."""

    per_gallery: int = 24
    bins: int = 40
    thumb_size: int = THUMB_SIZE
    grid: int = MAX_GRID


def write_report(
    manifest: str | Path, out: str | Path, config: ReportConfig | None = None, *, overwrite: bool = False
) -> Path:
    """Render the report of a scan manifest to ``out`` (written atomically) and return its path.

    Only the images shown are opened (four strips of at most ``per_gallery`` and a grid of at most ``grid``),
    so large scans stay fast; the page holds every ok row's score (about 20 bytes each) for its threshold
    slider. An image that can no longer be read is shown as a placeholder with the reason.

    Raises:
        InputError: the manifest is missing or empty.
        OutputError: ``out`` exists (without ``overwrite``), is not an HTML file, or is the manifest or
            one of its side files.
    """
    sides = ("meta.json", "config.yaml", "journal.jsonl", "calibration.json")
    inputs = [manifest, *(sidecar(manifest, name) for name in sides)]
    html_file = starts_with(b"<!doctype html", b"<html")
    check_output(out, overwrite=overwrite, kind="HTML report", is_expected_kind=html_file, inputs=inputs)
    options = config or ReportConfig()
    meta = read_meta(manifest)
    data = summarise_stream(lambda: iter_manifest(manifest), meta, per_gallery=options.per_gallery,
                            browse=max(0, options.grid))
    if not data.counts["total"]:
        raise InputError(f"manifest {manifest} is missing or has no rows; run oodfilter scan first")
    page = _page(data, meta, Path(manifest), options)
    return atomic_write_text(out, printable(page))  # a name that is not UTF-8 shows its odd bytes as \xNN


_UNREACHABLE = "\0a server did not answer"  # set in the cache: no more thumbnails are fetched from URLs


def _thumbnail(path: str, size: int, cache: dict[str, str]) -> str:
    if path not in cache and _UNREACHABLE in cache and is_url(path.rpartition("#")[0] or path):
        cache[path] = "error:its server did not answer"
    if path not in cache:
        try:
            image = load_rgb_image(path)
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
            cache[path] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        except ImageDecodeError as error:
            cache[path] = f"error:{error.reason}"
        except SourceUnavailableError:  # a URL's server is down now: the page is still written, without them
            cache[path] = cache[_UNREACHABLE] = "error:its server did not answer"
        except InputError as error:  # e.g. no credentials for the store in this environment
            cache[path] = f"error:{redact(str(error))}"
    return cache[path]


class _Cards:
    """The thumbnail cards of the page and the rows they show (each path once, for the page's script)."""

    def __init__(self, size: int, base: str) -> None:
        self.size, self.base = size, base
        self.cache: dict[str, str] = {}
        self.rows: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self.classes: dict[str, int] = {}

    def card(self, row: ManifestRow) -> str:
        """Return one card: the thumbnail, then file name, score, decision, top class, and keep/drop buttons."""
        shown = redact(row.path)  # a presigned URL's signature stays out of a page people share
        name = shown.rstrip("/").rsplit("/", 1)[-1] or shown
        if row.path not in self._index:
            self._index[row.path] = len(self.rows)
            # a path that holds a credential is not put in the page, so it cannot be marked here
            self.rows.append({"path": row.path if shown == row.path else None, "name": name, "score": row.score,
                              "cls": self.classes.get(row.top_class or "?", -1), "ood": row.is_ood})
        index = self._index[row.path]
        source = _thumbnail(resolve_row_path(row.path, self.base), self.size, self.cache)
        decision = {True: "OOD", False: "ID", None: "no decision"}[row.is_ood]
        if source.startswith("error:"):
            picture = f'<div class="missing">{html.escape(source[6:])}</div>'
        else:
            picture = f'<img class="thumb" src="{source}" alt="{html.escape(name)}">'
        buttons = ('<button type="button" data-mark="keep" title="keep (key k)">keep</button>'
                   '<button type="button" data-mark="drop" title="drop (key d)">drop</button>'
                   if shown == row.path else "<em>holds a credential: mark it in the manifest</em>")
        caption = (f'<div class="name">{html.escape(name)}</div>'
                   f'<div>{row.score:.4f} · <span class="verdict">{decision}</span> <span class="mark"></span></div>'
                   f"<div>{html.escape(str(row.top_class))} ({(row.top_prob or 0):.2f})</div><div>{buttons}</div>")
        return (f'<figure class="card" tabindex="0" data-row="{index}" title="{html.escape(shown)}">{picture}'
                f"<figcaption>{caption}</figcaption></figure>")

    def strip(self, rows: list[ManifestRow], empty: str, element_id: str = "") -> str:
        """Return the cards of ``rows`` in one gallery, or ``empty`` said in words when there are none."""
        if not rows:
            return f'<p class="note">{html.escape(empty)}</p>'
        attribute = f' id="{element_id}"' if element_id else ""
        return f'<div class="gallery"{attribute}>{"".join(self.card(row) for row in rows)}</div>'


def _histogram_svg(data: ReportData, bins: int, label: str = "decision boundary") -> str:
    if not data.scores:
        return "<p>no scores</p>"
    low, high = min(data.scores), max(data.scores)
    if data.boundary is not None:  # the boundary always shows
        low, high = min(low, data.boundary), max(high, data.boundary)
    if high <= low:
        high = low + 1e-6
    counts = [0] * bins
    for score in data.scores:
        counts[min(bins - 1, int((score - low) / (high - low) * bins))] += 1
    width, height, pad = 720, 220, 30
    peak = max(counts)
    bar = (width - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" '
             f'aria-label="histogram of OOD scores" id="histogram" data-low="{low!r}" data-high="{high!r}" '
             f'data-left="{pad}" data-right="{width - pad}">']
    for i, count in enumerate(counts):
        h = (height - pad) * count / peak
        centre = low + (i + 0.5) * (high - low) / bins
        colour = "#d62728" if data.boundary is not None and centre > data.boundary else "#1f77b4"
        parts.append(f'<rect x="{pad + i * bar:.1f}" y="{height - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                     f'fill="{colour}"><title>{count}</title></rect>')
    if data.boundary is not None and low <= data.boundary <= high:
        x = pad + (data.boundary - low) / (high - low) * (width - 2 * pad)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad / 2}" y2="{height}" stroke="black" '
                     f'stroke-dasharray="4 3"/><text x="{x + 4:.1f}" y="{pad / 2 + 10}">{html.escape(label)} '
                     f'{data.boundary:.4g}</text>')
    parts.append(f'<line id="slider-line" x1="0" x2="0" y1="{pad / 2}" y2="{height}" stroke="#e08000" '
                 'stroke-width="2" visibility="hidden"><title>the slider\'s threshold</title></line>')
    parts.append(f'<text x="{pad}" y="{height + 18}">{low:.4g}</text>')
    parts.append(f'<text x="{width - pad - 60}" y="{height + 18}">{high:.4g}</text>')
    parts.append(f'<text x="{width / 2 - 90:.0f}" y="{height + 34}">OOD score (higher = more OOD)</text></svg>')
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    shown = rows[:MAX_TABLE_ROWS]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in shown)
    more = f"<p>… and {len(rows) - len(shown)} more</p>" if len(rows) > len(shown) else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
.summary td{padding:2px 12px 2px 0}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:170px;font-size:12px}
figure img,.missing{width:160px;height:160px;object-fit:contain;background:#f2f2f2;display:block}
.missing{display:flex;align-items:center;justify-content:center;color:#a00;text-align:center}
.warning{color:#a00;font-weight:600}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var thumbs = document.querySelectorAll('img.thumb');
  var loaded = 0;
  thumbs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded += 1; } });
  document.body.setAttribute('data-thumbs-total', String(thumbs.length));
  document.body.setAttribute('data-thumbs-loaded', String(loaded));
});
"""


def _boundary_label(calibration: Calibration | None) -> str:
    if calibration is None:
        return "decision boundary"
    return f"threshold for ID recall {calibration.id_recall:.0%} ({calibration.num_images} ID images)"


def _per_class_section(data: ReportData) -> str:
    note = suspicious_note(data.per_class)
    warning = f'<p class="warning">Check: {html.escape(note)}.</p>' if note else ""
    rows = [[r.name, r.images, r.flagged, "-" if r.share is None else f"{r.share:.0%}", f"{r.median_score:.4g}"]
            for r in data.per_class]
    table = _table(["top class", "images", "flagged OOD", "flagged share", "median score"], rows)
    return f"<section><h2>Per top class</h2>{warning}{table}</section>"


def _what_if_section(calibration: Calibration | None, data: ReportData) -> str:
    if calibration is None:
        return ("<section><h2>What if</h2><p>Scan with <code>--id-recall R --calibrate-on ID_IMAGES</code> to see "
                "how many images each ID recall would keep.</p></section>")
    rows = [[f"{w.id_recall:.0%}", "-" if w.threshold is None else f"{w.threshold:.4g}",
             w.kept if w.threshold is not None else "-", w.flagged if w.threshold is not None else "-", w.note]
            for w in what_if(calibration, data.scores)]
    intro = (f"<p>Thresholds from the {calibration.num_images} calibration images of this scan "
             f"(fitted for {calibration.id_recall:.0%}; {html.escape(calibration.source)}).</p>")
    table = _table(["ID recall", "threshold", "kept", "flagged OOD", ""], rows)
    return f"<section><h2>What if: other ID recalls</h2>{intro}{table}</section>"


def _calibration_of(manifest: Path, meta: dict[str, Any]) -> Calibration | None:
    """Return the calibration the scan decided with, or None (a damaged or stale file is logged, not fatal)."""
    path = sidecar(manifest, "calibration.json")
    if not path.is_file() or not meta.get("calibration"):
        return None
    try:
        calibration = Calibration.load(path)
    except InputError as error:
        logger.warning("ignoring %s: %s", path, error)
        return None
    if calibration.threshold != meta.get("threshold"):
        logger.warning("ignoring %s: its threshold is not the one the scan decided with", path)
        return None
    return calibration


def _more_errors(total: int, shown: int) -> str:
    if total <= shown:
        return ""
    return f"<p>The first {shown} are listed; the manifest has every error row (status error).</p>"


def _warn_if_no_thumbnail(cache: dict[str, str], base: str) -> None:
    """Say so when not one gallery image could be read: the images moved, or the scan ran elsewhere."""
    shown = {path: source for path, source in cache.items() if path != _UNREACHABLE}
    if shown and all(source.startswith("error:") for source in shown.values()):
        path, source = next(iter(shown.items()))
        logger.warning("none of the %d gallery images could be read (e.g. %s: %s); relative paths are read from "
                       "%s, the folder the scan ran in", len(shown), redact(path), source[6:], base)


def _page(data: ReportData, meta: dict[str, Any], manifest: Path, options: ReportConfig) -> str:
    base = manifest_base(manifest, meta)
    calibration = _calibration_of(manifest, meta)
    c = data.counts
    summary_rows = [
        ("manifest", str(manifest)), ("model", meta.get("model", "?")), ("method", meta.get("method", "?")),
        ("decision rule", meta.get("decision") or "none (scores only)"), ("classes", meta.get("num_classes", "?")),
        ("inputs", c["total"]), ("in-distribution", c["id"]), ("OOD", c["ood"]),
        ("no decision", c["undecided"]), ("errors", c["errors"]),
    ]
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in summary_rows)
    cards = _Cards(options.thumb_size, base)
    cards.classes = {rate.name: index for index, rate in enumerate(data.per_class)}
    sections = [
        f'<table class="summary">{summary}</table>',
        f"<section><h2>Score distribution</h2>{_histogram_svg(data, options.bins, _boundary_label(calibration))}"
        "</section>",
        _galleries(data, meta, cards),
        _grid_section(data, cards),
        label_issues_section(iter_manifest(manifest),
                             lambda path: _thumbnail(resolve_row_path(path, base), cards.size, cards.cache)),
        _per_class_section(data),
        _what_if_section(calibration, data),
        f"<section><h2>Errors ({c['errors']})</h2>{_more_errors(c['errors'], len(data.errors))}"
        + _table(["path", "error"], [[redact(r.path), redact(str(r.error))] for r in data.errors]) + "</section>",
    ]
    _warn_if_no_thumbnail(cards.cache, base)
    island = json_island(_island(data, manifest, cards))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>oodfilter report: {html.escape(manifest.name)}</title><style>{_STYLE}{STYLE}</style></head>"
        f"<body><h1>oodfilter scan report</h1>{_toolbar(data)}{''.join(sections)}{island}"
        f"<script>{_SCRIPT}{SCRIPT}</script></body></html>"
    )


def _no_decision(data: ReportData) -> str:
    """Why a decided group is empty when the scan decided nothing."""
    return ("The scan made no decisions (scores only): move the threshold slider to see what a threshold would "
            "flag, or scan with --threshold, --id-recall or --keep-fraction."
            if data.counts["ood"] + data.counts["id"] == 0 else "")


def _boundary_words(data: ReportData, meta: dict[str, Any]) -> str:
    """Say which boundary the strips are nearest to, for the rule the scan decided with."""
    if meta.get("keep_boundary") is not None and meta.get("threshold") is None:
        return (f"the keep-fraction boundary {data.boundary:.6g} (the highest kept score): the flagged images "
                "scored lowest and the kept images scored highest")
    if meta.get("threshold") is not None:
        kind = "calibrated threshold" if meta.get("calibration") else "threshold"
        return f"the {kind} {data.boundary:.6g}: the flagged images scored lowest and the kept images scored highest"
    if meta.get("method") == "ctw":
        return ("CTW's rule, no-probability of the top class > 0.5 (the score is that probability): the flagged "
                "images scored lowest and the kept images scored highest")
    return ("the scan's per-image rule, which has no single threshold (ATD compares each image's score with a bar "
            "of its own, its best class's yes-probability times that class's probability, which the manifest "
            "does not store): the flagged images scored lowest and the kept images scored highest, whose "
            "decisions a change of score flips first")


def _galleries(data: ReportData, meta: dict[str, Any], cards: _Cards) -> str:
    """Return the four strips: most OOD among the flagged, both sides of the boundary, most ID among the kept."""
    undecided = _no_decision(data)
    none_flagged = undecided or "No image was flagged OOD by the scan."
    none_kept = undecided or "No image was kept (decided in-distribution) by the scan."
    return (
        f"<section><h2>Most OOD ({len(data.most_ood)})</h2><p class=\"note\">The highest-scored images the scan "
        f"flagged OOD, highest first.</p>{cards.strip(data.most_ood, none_flagged, 'most-ood')}</section>"
        f"<section><h2>Nearest the decision boundary</h2><p class=\"note\">Nearest "
        f"{html.escape(_boundary_words(data, meta))}.</p>"
        f'<div class="strip"><h3>Just flagged ({len(data.near_flagged)})</h3>'
        f"{cards.strip(data.near_flagged, none_flagged, 'near-flagged')}</div>"
        f'<div class="strip"><h3>Just kept ({len(data.near_kept)})</h3>'
        f"{cards.strip(data.near_kept, none_kept, 'near-kept')}</div></section>"
        f"<section><h2>Most in-distribution ({len(data.most_id)})</h2><p class=\"note\">The lowest-scored images "
        f"the scan kept, lowest first.</p>{cards.strip(data.most_id, none_kept, 'most-id')}</section>"
    )


def _grid_section(data: ReportData, cards: _Cards) -> str:
    """Return the browsable grid (sorted and filtered by the toolbar), with a note when it shows a sample."""
    ok = data.counts["ok"]
    shown = len(data.browse)
    if shown == 0 < ok:
        note = f"The grid is off (--grid 0); the {ok} scanned images count in the threshold slider's totals."
    elif shown < ok:
        note = (f"Showing {shown} of {ok} scanned images, spread evenly over the manifest (about 1 in "
                f"{ok / max(shown, 1):.3g}; the report's --grid option sets how many); the galleries above can be "
                "marked too, and every image counts in the threshold slider's totals.")
    else:
        note = f"All {ok} scanned images."
    return (f'<section><h2>Browse ({shown})</h2><p class="note">{html.escape(note)}</p>'
            f"{cards.strip(data.browse, 'No image was scanned successfully.', 'grid')}</section>")


def _toolbar(data: ReportData) -> str:
    """Return the review tools: threshold slider with live counts, class filter, sort, marks and export."""
    low, high, start = _slider_range(data)
    classes = "".join(f'<option value="{html.escape(rate.name)}">{html.escape(rate.name)} ({rate.images})</option>'
                      for rate in data.per_class)
    c = data.counts
    undecided = f" · {c['undecided']} no decision" if c["undecided"] else ""
    return (
        '<div class="toolbar" id="review-tools">'
        f'<label>Threshold <input type="range" id="threshold" min="{low!r}" max="{high!r}" '
        f'step="{(high - low) / 1000!r}" value="{start!r}"></label> <span id="threshold-value">the scan\'s '
        'decisions</span> <button type="button" id="threshold-reset">back to the scan\'s decisions</button>'
        f'<span>flagged <b id="count-flagged">{c["ood"]}</b> · kept <b id="count-kept">{c["id"]}</b>'
        f'<span id="count-undecided">{undecided}</span></span>'
        '<span id="class-counts" hidden>this class: flagged <b id="class-flagged"></b> · kept '
        '<b id="class-kept"></b></span>'
        f'<label>Class <select id="class-filter"><option value="">all classes</option>{classes}</select></label>'
        '<label>Sort the grid <select id="sort"><option value="score-desc">score, highest first</option>'
        '<option value="score-asc">score, lowest first</option><option value="name">file name</option>'
        "</select></label>"
        '<span>marked <b id="mark-count">0</b></span><button type="button" id="export">Export review</button></div>'
        '<p class="note">Mark an image with its keep / drop buttons, or with the keys k (keep), d (drop) and '
        "u (unmark) over a thumbnail. Export review downloads the marks (and the threshold, if you moved it) for "
        "<code>oodfilter apply MANIFEST --review FILE</code>. Nothing leaves this page otherwise.</p>"
    )


def _slider_range(data: ReportData) -> tuple[float, float, float]:
    """Return the slider's lowest and highest threshold (scores and boundary) and where it starts."""
    values = list(data.scores) or [0.0, 1.0]
    low, high = min(values), max(values)
    if data.boundary is not None:
        low, high = min(low, data.boundary), max(high, data.boundary)
    if high <= low:
        high = low + 1e-6
    start = data.boundary if data.boundary is not None else (low + high) / 2
    return low, high, start


def _island(data: ReportData, manifest: Path, cards: _Cards) -> dict[str, Any]:
    """Return the script's data: the review file's fields, per-class scores, the rows of the thumbnails."""
    low, high, start = _slider_range(data)
    return {
        "format": REVIEW_FORMAT, "manifest": os.path.abspath(manifest), "manifest_sha256": file_sha256(manifest),
        "review_name": review_name(manifest), "slider": {"min": low, "max": high, "start": start},
        "classes": [rate.name for rate in data.per_class],
        "class_counts": [[rate.flagged, rate.decided - rate.flagged, rate.images - rate.decided]
                         for rate in data.per_class],
        "class_scores": [sorted(data.class_scores[rate.name]) for rate in data.per_class],
        "rows": cards.rows,
    }
