"""The label check of a labelled folder: images whose folder names one class and that look confidently like another.

The rule (:func:`is_label_issue`): the yes-branch's top class is not the folder's class, and its probability
is above ``min_prob`` (default 0.5). The probabilities of the C classes sum to 1, so a top class above 0.5
holds the majority: the folder's class has less than 0.5, below the top class, and the image is more likely
the other class than its own under the model, by a margin that grows with the cut. A lower cut would flag
images the model finds ambiguous between several classes (the folder's class may then be the second most
likely, or even tie); a higher one flags fewer, surer cases. It is a hint for a person to look, as in
cleanlab's label issues, not a correction: OOD rows are checked too (an image that is OOD *and* looks like
another class is still worth a look).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from oodfilter.sinks.rows import ManifestRow

LABEL_MIN_PROB = 0.5


def is_label_issue(folder_class: str | None, top_class: str | None, top_prob: float | None,
                   min_prob: float = LABEL_MIN_PROB) -> bool | None:
    """Return whether an image looks confidently like another class than its folder's.

    Args:
        folder_class: The class its folder names (None: no folder class, so no check).
        top_class: The yes-branch's most likely class (None: the image was not scored).
        top_prob: That class's probability.
        min_prob: The probability the other class must exceed.

    Returns:
        None when there is nothing to check, else True when ``top_class`` differs from ``folder_class``
        and ``top_prob > min_prob``.

    """
    if folder_class is None or top_class is None or top_prob is None:
        return None
    return top_class != folder_class and top_prob > min_prob


def label_rows(rows: list[ManifestRow], folder_of: Callable[[str], str | None],
               min_prob: float = LABEL_MIN_PROB) -> list[ManifestRow]:
    """Return ``rows`` with ``folder_class`` (from ``folder_of(path)``) and ``label_issue`` set."""
    labelled = []
    for row in rows:
        folder = folder_of(row.path)
        issue = is_label_issue(folder, row.top_class, row.top_prob, min_prob) if row.ok else None
        labelled.append(replace(row, folder_class=folder, label_issue=issue))
    return labelled
