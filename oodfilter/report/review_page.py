"""The report's review tools, all in the page: threshold slider, class filter, sorting, keep/drop marks, export.

The export is a review file (``oodfilter-review/1``, read by ``oodfilter apply --review``).

The page's data travels in one JSON island (:func:`json_island`); the script below reads it and needs no
network. Counts at a moved threshold are exact: every ok row's score is in the island, sorted per top class,
and the script counts ``score > threshold`` as the scan and ``apply`` decide.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

REVIEW_FORMAT = "oodfilter-review/1"


def file_sha256(path: str | Path) -> str | None:
    """Return the hex sha256 of a file's bytes, or None when it is not a file (read in 1 MiB chunks)."""
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def review_name(manifest: str | Path) -> str:
    """Return the file name the page's "Export review" suggests: ``<manifest name>.review.json``."""
    return Path(manifest).name + ".review.json"


def json_island(data: dict[str, Any], element_id: str = "report-data") -> str:
    r"""Return ``data`` as a ``<script type="application/json">`` element that no value can break out of.

    Every ``<``, ``>`` and ``&`` is written as a JSON ``\uXXXX`` escape (they can only occur inside strings), so
    neither ``</script>`` nor ``<!--`` in a file name ends or changes the element; non-ASCII is escaped too.
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def read_island(page: str, element_id: str = "report-data") -> Any:
    """Return the data of the JSON island ``element_id`` of a page written by :func:`json_island`."""
    start_tag = f'<script type="application/json" id="{element_id}">'
    start = page.index(start_tag) + len(start_tag)
    return json.loads(page[start:page.index("</script>", start)])


STYLE = """
.toolbar{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ccc;padding:8px 0;
 display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;font-size:14px}
.toolbar input[type=range]{width:260px}
.card{outline:none;border:2px solid transparent;border-radius:4px;padding:2px}
.card:focus,.card:hover{border-color:#999}
.card.flagged .verdict{color:#b00;font-weight:600} .card.kept .verdict{color:#070;font-weight:600}
.card.mark-keep{border-color:#2a2;background:#efe} .card.mark-drop{border-color:#c22;background:#fee}
.card .name{font-weight:600;overflow-wrap:anywhere}
.card button{font-size:11px;padding:1px 6px;margin-right:4px}
.card[hidden]{display:none}
.strip h3{font-size:15px;margin:12px 0 6px}
.note{color:#555;font-size:13px}
"""

SCRIPT = """
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var state = {threshold: null, classFilter: '', sort: 'score-desc', marks: Object.create(null)};
  window.oodReview = state;
  var slider = document.getElementById('threshold');
  var byId = function (id) { return document.getElementById(id); };
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var hovered = null;

  function keptAt(sorted, t) {  /* how many of the ascending scores are <= t (kept at threshold t) */
    var lo = 0, hi = sorted.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (sorted[mid] <= t) { lo = mid + 1; } else { hi = mid; } }
    return lo;
  }
  function countsOf(classIndex) {
    var c = data.class_counts[classIndex];
    if (state.threshold === null) { return {flagged: c[0], kept: c[1], undecided: c[2]}; }
    var sorted = data.class_scores[classIndex], kept = keptAt(sorted, state.threshold);
    return {flagged: sorted.length - kept, kept: kept, undecided: 0};
  }
  function decisionOf(row) { return state.threshold === null ? row.ood : row.score > state.threshold; }
  function renderCounts() {
    var total = {flagged: 0, kept: 0, undecided: 0};
    for (var i = 0; i < data.classes.length; i += 1) {
      var c = countsOf(i);
      total.flagged += c.flagged; total.kept += c.kept; total.undecided += c.undecided;
    }
    byId('count-flagged').textContent = String(total.flagged);
    byId('count-kept').textContent = String(total.kept);
    byId('count-undecided').textContent = total.undecided ? ' · ' + total.undecided + ' no decision' : '';
    var classIndex = data.classes.indexOf(state.classFilter);
    byId('class-counts').hidden = classIndex < 0;
    if (classIndex >= 0) {
      var own = countsOf(classIndex);
      byId('class-flagged').textContent = String(own.flagged);
      byId('class-kept').textContent = String(own.kept);
    }
    byId('threshold-value').textContent = state.threshold === null
      ? 'the scan\\'s decisions' : 'score > ' + state.threshold.toPrecision(6);
    byId('mark-count').textContent = String(Object.keys(state.marks).length);
  }
  function renderCard(card) {
    var row = data.rows[Number(card.getAttribute('data-row'))];
    var mark = row.path === null ? undefined : state.marks[row.path];
    var decided = decisionOf(row);
    card.classList.toggle('flagged', decided === true);
    card.classList.toggle('kept', decided === false);
    card.classList.toggle('mark-keep', mark === 'keep');
    card.classList.toggle('mark-drop', mark === 'drop');
    card.querySelector('.verdict').textContent = decided === null ? 'no decision' : decided ? 'OOD' : 'ID';
    card.querySelector('.mark').textContent = mark ? 'marked ' + mark : '';
    card.hidden = state.classFilter !== '' && data.classes[row.cls] !== state.classFilter;
  }
  function renderLine() {  /* the slider's threshold on the histogram */
    var svg = byId('histogram'), line = byId('slider-line');
    if (!svg || !line) { return; }
    var low = Number(svg.getAttribute('data-low')), high = Number(svg.getAttribute('data-high'));
    var left = Number(svg.getAttribute('data-left')), right = Number(svg.getAttribute('data-right'));
    var t = state.threshold;
    line.setAttribute('visibility', t === null || t < low || t > high ? 'hidden' : 'visible');
    if (t !== null) {
      var x = String(left + (t - low) / (high - low) * (right - left));
      line.setAttribute('x1', x); line.setAttribute('x2', x);
    }
  }
  function render() { renderCounts(); renderLine(); cards.forEach(renderCard); }
  function sortGrid() {
    var grid = byId('grid');
    if (!grid) { return; }
    var items = Array.prototype.slice.call(grid.children);
    var key = function (card) { return data.rows[Number(card.getAttribute('data-row'))]; };
    items.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (state.sort === 'name') { return x.name < y.name ? -1 : x.name > y.name ? 1 : 0; }
      return state.sort === 'score-asc' ? x.score - y.score : y.score - x.score;
    });
    items.forEach(function (card) { grid.appendChild(card); });
  }
  function setMark(card, mark) {
    var row = data.rows[Number(card.getAttribute('data-row'))];
    if (row.path === null) { return; }
    if (mark === null || state.marks[row.path] === mark) { delete state.marks[row.path]; }
    else { state.marks[row.path] = mark; }
    render();
  }
  function review() {
    return {format: data.format, manifest: data.manifest, manifest_sha256: data.manifest_sha256,
            threshold: state.threshold, marks: state.marks};
  }
  window.oodReviewFile = review;

  slider.addEventListener('input', function () { state.threshold = parseFloat(slider.value); render(); });
  byId('threshold-reset').addEventListener('click', function () {
    state.threshold = null; slider.value = String(data.slider.start); render();
  });
  byId('class-filter').addEventListener('change', function (event) {
    state.classFilter = event.target.value; render();
  });
  byId('sort').addEventListener('change', function (event) { state.sort = event.target.value; sortGrid(); });
  document.addEventListener('click', function (event) {
    var button = event.target.closest('button[data-mark]');
    if (button) { setMark(button.closest('.card'), button.getAttribute('data-mark')); }
  });
  document.addEventListener('mouseover', function (event) { hovered = event.target.closest('.card'); });
  document.addEventListener('keydown', function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName)) {
      return;
    }
    var card = (document.activeElement && document.activeElement.closest && document.activeElement.closest('.card'))
      || hovered;
    var mark = {k: 'keep', d: 'drop', u: null}[event.key];
    if (card && mark !== undefined) { setMark(card, mark); event.preventDefault(); }
  });
  byId('export').addEventListener('click', function () {
    var blob = new Blob([JSON.stringify(review(), null, 2) + '\\n'], {type: 'application/json'});
    var link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = data.review_name;
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  });
  slider.value = String(data.slider.start);
  sortGrid();
  render();
  document.body.setAttribute('data-review-ready', 'true');
})();
"""
