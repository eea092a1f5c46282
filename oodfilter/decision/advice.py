"""What a decision rule does with a class list of this length, measured on the benchmark world.

The threshold-free rules (ATD, CTW) keep a share of in-distribution images that the user does not choose:
it depends on the no-branch and on the number of classes. ``benchmarks/world/decisions.py`` measured it
(RESULTS.md, "Decisions"); the figures below are that table's, quoted in the warnings so that a user with
a short list, or CTW with a long one, knows what to expect and what to do instead.
"""

from __future__ import annotations

# Class-list size → (share of ID images kept, share of near-OOD caught) by each rule, on world A with the
# generic no-branch; mean over 10 random class subsets × 3 seeds (benchmarks/world/decisions.py).
MEASURED_RULES: dict[str, dict[int, tuple[float, float]]] = {
    "atd": {1: (0.943, 0.741), 2: (0.945, 0.626), 3: (0.931, 0.556), 5: (0.946, 0.491), 10: (0.943, 0.398),
            100: (0.940, 0.171)},
    "ctw": {1: (0.943, 0.741), 2: (0.948, 0.578), 3: (0.949, 0.470), 5: (0.961, 0.344), 10: (0.975, 0.191),
            100: (0.999, 0.003)},
}
# The calibrated threshold's recall on new ID images at R = 0.95, measured the same way (every method).
MEASURED_CALIBRATED_RECALL = (0.948, 0.952)
SHORT_LIST = 5  # lists up to this long get the short-list advice
LONG_LIST_CTW = 50  # CTW with lists from this long catches almost nothing
SOFTMAX_METHODS = ("msp", "mcm")


def _nearest(table: dict[int, tuple[float, float]], classes: int) -> tuple[int, tuple[float, float]]:
    size = min(table, key=lambda k: (abs(k - classes), k))
    return size, table[size]


def decision_advice(method: str, num_classes: int, *, rule_decides: bool) -> list[str]:
    """Warnings for ``method`` with ``num_classes`` classes (empty when there is nothing to say).

    Args:
        method: The score method's name.
        num_classes: The length of the class list.
        rule_decides: Whether the method's threshold-free rule makes the decisions (no threshold,
            calibration or keep fraction given).

    """
    advice = []
    remedy = ("to choose the share of in-distribution images kept, calibrate: --id-recall 0.95 --calibrate-on "
              "ID_IMAGES (Python: oodfilter.calibrate); on the benchmark world the calibrated threshold kept "
              f"{MEASURED_CALIBRATED_RECALL[0]:.1%}–{MEASURED_CALIBRATED_RECALL[1]:.1%} of new ID images for R = 0.95")
    if num_classes == 1 and method in SOFTMAX_METHODS:
        advice.append(f"{method} with a single class gives every image the same score (a softmax over one class is "
                      "1): list more classes, or use energy, maxlogit or a CLIPN method")
    if rule_decides and method in MEASURED_RULES and num_classes <= SHORT_LIST:
        size, (kept, caught) = _nearest(MEASURED_RULES[method], num_classes)
        advice.append(f"with {num_classes} class(es), {method}'s threshold-free rule decides with an ID recall you "
                      f"did not choose: on the benchmark world with {size} class(es) it kept {kept:.0%} of "
                      f"in-distribution images and caught {caught:.0%} of near-OOD ones (a no-branch fine-tuned on "
                      f"the ID classes alone kept only 75-82%); {remedy}")
    if rule_decides and method == "ctw" and num_classes >= LONG_LIST_CTW:
        size, (kept, caught) = _nearest(MEASURED_RULES["ctw"], num_classes)
        advice.append(f"ctw's rule with {num_classes} classes flags almost nothing: on the benchmark world with "
                      f"{size} classes it caught {caught:.1%} of near-OOD images (atd: "
                      f"{_nearest(MEASURED_RULES['atd'], num_classes)[1][1]:.0%}); use atd, or {remedy}")
    return advice
