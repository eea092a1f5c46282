"""Manifest rows as numeric and string columns: how Ray moves rows between processes.

Kept apart from :mod:`oodfilter.sinks.rows` so that reading and writing manifests needs no numpy
(``oodfilter scan --help`` imports the manifest readers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from oodfilter.sinks.rows import ManifestRow


def rows_to_columns(rows: Sequence[ManifestRow]) -> dict[str, np.ndarray]:
    """Encode rows as numeric and string columns (no None: NaN, -1 and "" stand for it), for Ray batches."""
    return {
        "path": np.array([row.path for row in rows], dtype=object),
        "status": np.array([row.status for row in rows], dtype=object),
        "error": np.array([row.error or "" for row in rows], dtype=object),
        "ood_score": np.array([np.nan if row.ood_score is None else row.ood_score for row in rows], dtype=np.float64),
        "is_ood": np.array([-1 if row.is_ood is None else int(row.is_ood) for row in rows], dtype=np.int8),
        "top_class": np.array([row.top_class or "" for row in rows], dtype=object),
        "top_prob": np.array([np.nan if row.top_prob is None else row.top_prob for row in rows], dtype=np.float64),
        # the label check (--classes-from-folders); the driver sets it, so actors send it empty
        "folder_class": np.array([row.folder_class or "" for row in rows], dtype=object),
        "label_issue": np.array([-1 if row.label_issue is None else int(row.label_issue) for row in rows],
                                dtype=np.int8),
    }


def rows_from_columns(columns: Mapping[str, np.ndarray]) -> list[ManifestRow]:
    """Decode columns written by :func:`rows_to_columns` back into rows."""
    rows = []
    for i, path in enumerate(columns["path"]):
        folder = str(columns["folder_class"][i]) if "folder_class" in columns else ""
        issue = int(columns["label_issue"][i]) if "label_issue" in columns else -1
        folder_class, label_issue = folder or None, None if issue < 0 else bool(issue)
        if str(columns["status"][i]) != "ok":
            rows.append(ManifestRow(path=str(path), status="error", error=str(columns["error"][i]),
                                    folder_class=folder_class, label_issue=label_issue))
            continue
        decision = int(columns["is_ood"][i])
        rows.append(ManifestRow(path=str(path), status="ok", ood_score=float(columns["ood_score"][i]),
                                is_ood=None if decision < 0 else bool(decision),
                                top_class=str(columns["top_class"][i]), top_prob=float(columns["top_prob"][i]),
                                folder_class=folder_class, label_issue=label_issue))
    return rows
