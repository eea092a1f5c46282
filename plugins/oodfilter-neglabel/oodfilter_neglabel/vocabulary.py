"""The shipped negative-label vocabulary (built from WordNet by tools/build_vocabulary.py)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_vocabulary() -> tuple[str, ...]:
    """Return the shipped candidate words (WordNet nouns, one per synset), in WordNet order."""
    text = resources.files("oodfilter_neglabel").joinpath("data/words.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)
