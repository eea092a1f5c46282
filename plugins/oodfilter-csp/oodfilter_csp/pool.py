"""The conjugated semantic pool (CSP, docs/method.md): modifiers × superclass nouns, beside NegLabel's nouns.

NegLabel's pool is nouns; CSP adds *conjugated* labels, a modifier (an adjective) before a superclass noun
("furry creature", "striped pattern"). Such a label's text vector sits near the centre of the images that
share the property across many categories, so the negatives cover regions of the image space that no
single noun does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

# Superclass nouns spanning WordNet's unique beginners that photos fall under: things, living things,
# places and scenes, surfaces and stuff. Our own choice (the paper's list is longer and more scenic).
SUPERCLASSES: tuple[str, ...] = ("object", "thing", "creature", "plant", "place", "scene", "pattern",
                                 "surface", "material", "structure")


@cache
def load_modifiers() -> tuple[str, ...]:
    """Return the shipped modifiers: adjectives recovered from WordNet's ``-ness`` nouns (tools/build_modifiers.py)."""
    text = resources.files("oodfilter_csp").joinpath("data/modifiers.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def conjugated_labels(modifiers: Sequence[str], superclasses: Sequence[str] = SUPERCLASSES) -> list[str]:
    """Return every ``"<modifier> <superclass>"`` label, modifier-major, duplicates (case-folded) removed."""
    labels = (f"{m.strip()} {s.strip()}" for m in modifiers for s in superclasses if m.strip() and s.strip())
    first: dict[str, str] = {}
    for label in labels:
        first.setdefault(label.casefold(), label)
    return list(first.values())
