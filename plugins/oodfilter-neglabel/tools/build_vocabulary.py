"""Build the shipped negative-label vocabulary from WordNet (run at development time, not by users).

Run: python plugins/oodfilter-neglabel/tools/build_vocabulary.py [SYNSETS_TSV]

Reads ../shared/data/wordnet/synsets.tsv (wnid, comma-separated names) and writes one word per line to
oodfilter_neglabel/data/words.txt: the first name of every synset, with underscores as spaces,
case-folded duplicates removed, in WordNet order. The available WordNet export holds nouns only, so the
list has no adjectives (the NegLabel paper mines nouns and adjectives).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2].parent / "shared" / "data" / "wordnet" / "synsets.tsv"
TARGET = HERE.parent / "oodfilter_neglabel" / "data" / "words.txt"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    seen: set[str] = set()
    words: list[str] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].startswith("n"):
            continue
        word = parts[1].split(",")[0].strip().replace("_", " ")
        if word and word.casefold() not in seen:
            seen.add(word.casefold())
            words.append(word)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"wrote {len(words)} words to {TARGET}")


if __name__ == "__main__":
    main()
