"""The report's "Label issues" section: images whose folder names one class and that look like another.

Rows come from a scan with ``--classes-from-folders`` (:mod:`oodfilter.scan.label_check`); the section is
empty (the report shows nothing) when no row has ``label_issue`` True, including every manifest of a scan
without the label check.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from pathlib import Path

from oodfilter.messages import redact
from oodfilter.sinks.rows import ManifestRow

MAX_SHOWN = 200


def label_issue_rows(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    """Return the rows marked ``label_issue``, the most confident first (ties in manifest order)."""
    issues = [row for row in rows if row.label_issue is True]
    return sorted(issues, key=lambda row: -(row.top_prob or 0.0))


def label_issues_section(rows: Iterable[ManifestRow], thumbnail: Callable[[str], str] | None = None,
                         limit: int = MAX_SHOWN) -> str:
    """Return the HTML fragment of the "Label issues" section ("" when no row has a label issue).

    Args:
        rows: The manifest's rows.
        thumbnail: Returns an image's ``data:`` URL, or ``error:REASON`` when it cannot be shown, given a
            row's path; None shows no pictures.
        limit: The most rows listed (the most confident first); the manifest has them all.

    """
    issues = label_issue_rows(rows)
    if not issues:
        return ""
    shown = issues[:limit]
    body = "".join(_row(row, thumbnail) for row in shown)
    more = (f"<p>The {len(shown)} most confident are listed; filter the manifest on label_issue for all "
            f"{len(issues)}.</p>" if len(issues) > len(shown) else "")
    picture_head = "<th>image</th>" if thumbnail is not None else ""
    return (f'<section id="label-issues"><h2>Label issues ({len(issues)})</h2>'
            "<p>Images whose folder names one class while the model confidently sees another: check whether they "
            "are misfiled (like cleanlab's label issues; a hint for a person, not a correction).</p>"
            f'<table class="label-issues"><thead><tr>{picture_head}<th>path</th><th>folder class</th>'
            f"<th>looks like</th><th>probability</th><th>OOD score</th></tr></thead><tbody>{body}</tbody></table>"
            f"{more}</section>")


def _row(row: ManifestRow, thumbnail: Callable[[str], str] | None) -> str:
    shown = redact(row.path)  # a presigned URL's signature stays out of a page people share
    cells = []
    if thumbnail is not None:
        source = thumbnail(row.path)
        if source.startswith("error:"):
            cells.append(f'<td><div class="missing">{html.escape(source[6:])}</div></td>')
        else:
            cells.append(f'<td><img class="thumb" src="{html.escape(source)}" '
                         f'alt="{html.escape(Path(shown).name)}"></td>')
    score = "-" if row.ood_score is None else f"{row.ood_score:.4f}"
    cells += [f"<td>{html.escape(shown)}</td>", f"<td>{html.escape(str(row.folder_class))}</td>",
              f"<td>{html.escape(str(row.top_class))}</td>", f"<td>{(row.top_prob or 0.0):.2f}</td>",
              f"<td>{score}</td>"]
    return "<tr>" + "".join(cells) + "</tr>"
