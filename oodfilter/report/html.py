"""``oodfilter report``: a self-contained HTML page (thumbnails embedded, no network) of one scan."""

from __future__ import annotations

import base64
import html
import io
import logging
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
from oodfilter.report.summary import ReportData, summarise_stream
from oodfilter.report.what_if import what_if
from oodfilter.sinks.manifest import iter_manifest, read_meta, sidecar
from oodfilter.sinks.names import printable
from oodfilter.sinks.row_paths import manifest_base, resolve_row_path
from oodfilter.sinks.rows import ManifestRow

logger = logging.getLogger(__name__)

THUMB_SIZE = 160
MAX_TABLE_ROWS = 200


@dataclass
class ReportConfig:
    """Options of a report: gallery size, histogram bins, thumbnail size."""

    per_gallery: int = 24
    bins: int = 40
    thumb_size: int = THUMB_SIZE


def write_report(
    manifest: str | Path, out: str | Path, config: ReportConfig | None = None, *, overwrite: bool = False
) -> Path:
    """Render the report of a scan manifest to ``out`` (written atomically) and return its path.

    Only the gallery images are opened (at most three galleries of ``per_gallery``), so large scans stay
    fast. An image that can no longer be read is shown as a placeholder with the reason.

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
    data = summarise_stream(lambda: iter_manifest(manifest), meta, per_gallery=options.per_gallery)
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


def _gallery(title: str, rows: list[ManifestRow], size: int, cache: dict[str, str], base: str) -> str:
    """Return the cards of ``rows``: thumbnails of the files they name (relative rows resolved from ``base``)."""
    cards = []
    for row in rows:
        source = _thumbnail(resolve_row_path(row.path, base), size, cache)
        shown = redact(row.path)  # a presigned URL's signature stays out of a page people share
        decision = {True: "OOD", False: "ID", None: "no decision"}[row.is_ood]
        label = (f"{row.score:.4f} · {decision}<br>{html.escape(str(row.top_class))} "
                 f"({(row.top_prob or 0):.2f})")
        if source.startswith("error:"):
            picture = f'<div class="missing">{html.escape(source[6:])}</div>'
        else:
            picture = f'<img class="thumb" src="{source}" alt="{html.escape(Path(shown).name)}">'
        cards.append(f'<figure title="{html.escape(shown)}">{picture}<figcaption>{label}</figcaption></figure>')
    body = "".join(cards) or "<p>none</p>"
    return f'<section><h2>{html.escape(title)} ({len(rows)})</h2><div class="gallery">{body}</div></section>'


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
             f'aria-label="histogram of OOD scores">']
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
    cache: dict[str, str] = {}
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
    size = options.thumb_size
    sections = [
        f'<table class="summary">{summary}</table>',
        f"<section><h2>Score distribution</h2>{_histogram_svg(data, options.bins, _boundary_label(calibration))}"
        "</section>",
        _gallery("Most OOD", data.most_ood, size, cache, base),
        _gallery("Borderline", data.borderline, size, cache, base),
        _gallery("Most in-distribution", data.most_id, size, cache, base),
        label_issues_section(iter_manifest(manifest), lambda row: _thumbnail(resolve_row_path(row, base), size, cache)),
        _per_class_section(data),
        _what_if_section(calibration, data),
        f"<section><h2>Errors ({c['errors']})</h2>{_more_errors(c['errors'], len(data.errors))}"
        + _table(["path", "error"], [[redact(r.path), redact(str(r.error))] for r in data.errors]) + "</section>",
    ]
    _warn_if_no_thumbnail(cache, base)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>oodfilter report: {html.escape(manifest.name)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>oodfilter scan report</h1>{''.join(sections)}<script>{_SCRIPT}</script></body></html>"
    )
