"""The report's "Label issues" section: the rows a label check marked, with their picture, folder and look."""

from __future__ import annotations

import json
import re

from oodfilter.report import write_report
from oodfilter.report.label_issues import label_issues_section
from oodfilter.sinks.manifest import ManifestWriter
from oodfilter.sinks.rows import ManifestRow


def _manifest(tmp_path, rows):
    out = tmp_path / "scan.jsonl"
    writer = ManifestWriter(out, append=False, label_columns=True)
    writer.write(rows)
    writer.close()
    (tmp_path / "scan.jsonl.meta.json").write_text(json.dumps({"method": "atd", "decision": "atd threshold-free rule",
                                                               "threshold": None, "cwd": str(tmp_path)}))
    return out


def _rows(real_images):
    photo, texture, other = (str(p) for p in real_images[:3])
    return [
        ManifestRow(texture, "ok", ood_score=0.2, is_ood=False, top_class="chequered", top_prob=0.9,
                    folder_class="chequered", label_issue=False),
        ManifestRow(photo, "ok", ood_score=0.7, is_ood=True, top_class="goldfish", top_prob=0.62,
                    folder_class="chequered", label_issue=True),
        ManifestRow(other, "ok", ood_score=0.3, is_ood=False, top_class="tench <b>", top_prob=0.97,
                    folder_class="banded", label_issue=True),
        ManifestRow("gone.jpg", "error", error="missing", folder_class="banded"),
    ]


def test_report_lists_each_label_issue_most_confident_first(tmp_path, real_images):
    rows = _rows(real_images)
    page = write_report(_manifest(tmp_path, rows), tmp_path / "report.html").read_text()
    section = page[page.index('<section id="label-issues">'):]
    section = section[:section.index("</section>")]
    assert "Label issues (2)" in section
    cells = re.findall(r"<tr><td>(.*?)</tr>", section)
    assert len(cells) == 2
    assert rows[2].path in cells[0] and "banded" in cells[0] and "tench &lt;b&gt;" in cells[0] and "0.97" in cells[0]
    assert rows[1].path in cells[1] and "chequered" in cells[1] and "goldfish" in cells[1] and "0.62" in cells[1]
    assert section.count('class="thumb" src="data:image/jpeg;base64,') == 2  # the pictures are in the page
    assert rows[0].path not in section


def test_no_label_issue_no_section(tmp_path, real_images):
    rows = [r for r in _rows(real_images) if r.label_issue is not True]
    page = write_report(_manifest(tmp_path, rows), tmp_path / "report.html").read_text()
    assert "Label issues" not in page
    assert label_issues_section(rows) == ""


def test_section_lists_at_most_the_limit_and_says_so():
    rows = [ManifestRow(f"c/{i}.jpg", "ok", ood_score=0.1, is_ood=False, top_class="d", top_prob=0.5 + i / 100,
                        folder_class="c", label_issue=True) for i in range(5)]
    fragment = label_issues_section(rows, limit=2)
    assert "Label issues (5)" in fragment and "The 2 most confident are listed" in fragment
    assert fragment.count("<tr><td>") == 2 and "c/4.jpg" in fragment and "c/0.jpg" not in fragment
