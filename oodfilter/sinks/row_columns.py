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
    }


def rows_from_columns(columns: Mapping[str, np.ndarray]) -> list[ManifestRow]:
    """Decode columns written by :func:`rows_to_columns` back into rows."""
    rows = []
    for i, path in enumerate(columns["path"]):
        if str(columns["status"][i]) != "ok":
            rows.append(ManifestRow(path=str(path), status="error", error=str(columns["error"][i])))
            continue
        decision = int(columns["is_ood"][i])
        rows.append(ManifestRow(path=str(path), status="ok", ood_score=float(columns["ood_score"][i]),
                                is_ood=None if decision < 0 else bool(decision),
                                top_class=str(columns["top_class"][i]), top_prob=float(columns["top_prob"][i])))
    return rows
