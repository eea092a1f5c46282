"""Build the shipped modifier list (adjectives) from WordNet (run at development time, not by users).

Run: python plugins/oodfilter-csp/tools/build_modifiers.py [SYNSETS_TSV]

CSP conjugates modifiers (adjectives) with superclass nouns. The WordNet export in shared/data holds nouns
only, so the adjectives are recovered from the nouns that WordNet forms from them with the suffix ``-ness``
("redness" → "red", "fuzziness" → "fuzzy"): one lower-case word per line, in WordNet order, case-folded
duplicates removed. Words ending in ``-ness`` that are not such nominalisations ("harness", "lioness") are
skipped by rule (``-oness``) or by name (:data:`NOT_NOMINALISATIONS`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2].parent / "shared" / "data" / "wordnet" / "synsets.tsv"
TARGET = HERE.parent / "oodfilter_csp" / "data" / "modifiers.txt"
WORD = re.compile(r"[a-z]+ness")
NOT_NOMINALISATIONS = {"harness", "witness", "wilderness", "business", "busyness", "governess", "mayoress",
                       "eyewitness", "unwitness"}


def adjective_of(noun: str) -> str | None:
    """Return the adjective a ``-ness`` noun is formed from, or None when ``noun`` is not such a nominalisation."""
    feminine = noun.endswith("oness") and not noun.endswith("neness")  # lioness, baroness (not proneness)
    if not WORD.fullmatch(noun) or noun in NOT_NOMINALISATIONS or feminine:
        return None
    stem = noun[: -len("ness")]
    if stem.endswith("i"):  # fuzzi-ness → fuzzy
        stem = stem[:-1] + "y"
    return stem if len(stem) >= 3 else None


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    seen: set[str] = set()
    words: list[str] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].startswith("n"):
            continue
        for name in parts[1].split(","):
            adjective = adjective_of(name.strip())
            if adjective is not None and adjective not in seen:
                seen.add(adjective)
                words.append(adjective)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"wrote {len(words)} modifiers to {TARGET}")


if __name__ == "__main__":
    main()
