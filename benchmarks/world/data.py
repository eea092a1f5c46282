"""The world's images and class names: Tiny-ImageNet splits, the ImageNet sample, DTD textures.

Everything is read from ``../shared/data`` (or ``$OODFILTER_SHARED_DATA``). The splits are fixed: within
each Tiny class, files ordered by a hash of their name give 40 training and 10 held-out images; the 100
ID classes are a fixed random half of the 200 (seed 0), the other 100 are near-OOD.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from benchmarks.world.errors import WorldError

REPO = Path(__file__).resolve().parents[2]
# DTD classes that overlap ImageNet concepts (cobwebbed ~ "spider web", bubbly ~ "bubble").
AMBIGUOUS_TEXTURES = ("bubbly", "cobwebbed")
TRAIN_PER_CLASS = 40
HELD_OUT_PER_CLASS = 10


def shared_data() -> Path:
    """The shared data folder, or a :class:`WorldError` saying how to point at it."""
    root = Path(os.environ.get("OODFILTER_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (root / "tiny-imagenet-val" / "labels.tsv").is_file():
        raise WorldError(f"no benchmark images at {root}: set OODFILTER_SHARED_DATA to the shared data folder")
    return root


@dataclass(frozen=True)
class LabelledImage:
    """An image file and the index of its class in the list it belongs to."""

    path: Path
    label: int


@dataclass(frozen=True)
class WorldData:
    """The splits one world is built and evaluated on.

    ``names``/``wnids`` list the Tiny classes (WordNet-id order), ``imagenet_index`` their ImageNet
    class index; ``labels`` of ``train``/``held_out``
    index them. ``id_classes`` is the ID half (sorted), the rest are near-OOD. ``imagenet`` holds the
    1000-way ImageNet sample (labels = ImageNet class index, names in ``imagenet_names``); ``generic``
    its images whose class is not a Tiny class (the no-branch's generic training set); ``textures``
    the DTD images as (file, texture class).
    """

    names: list[str]
    wnids: list[str]
    imagenet_index: list[int]
    train: list[LabelledImage]
    held_out: list[LabelledImage]
    id_classes: list[int]
    imagenet_names: list[str]
    imagenet: list[LabelledImage]
    generic: list[LabelledImage]
    textures: list[tuple[Path, str]]

    @property
    def ood_classes(self) -> list[int]:
        """The near-OOD classes: the Tiny classes outside the ID half."""
        chosen = set(self.id_classes)
        return [c for c in range(len(self.names)) if c not in chosen]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _hash_order(path: Path) -> str:
    return hashlib.sha256(path.name.encode()).hexdigest()


def load_world_data(classes: int = 200, per_class: int | None = None, textures_every: int = 1,
                    imagenet_every: int = 1) -> WorldData:
    """Read the splits; ``classes``/``per_class``/``textures_every`` shrink them for quick runs.

    Args:
        classes: How many Tiny classes (the first in WordNet-id order); half are ID.
        per_class: Images per class kept (split 4:1 into training and held-out); all 50 when None.
        textures_every: Keep every n-th DTD image.
        imagenet_every: Keep every n-th ImageNet-sample image.

    """
    root = shared_data()
    imagenet_rows = _rows(root / "imagenet-sample" / "labels.tsv")
    by_wnid = {row["wnid"]: row["class_name"] for row in imagenet_rows}
    index_of = {row["wnid"]: int(row["class_index"]) for row in imagenet_rows}
    imagenet_names = [row["class_name"] for row in sorted(imagenet_rows, key=lambda r: int(r["class_index"]))]
    tiny_rows = _rows(root / "tiny-imagenet-val" / "labels.tsv")
    wnids = sorted({row["wnid"] for row in tiny_rows})[:classes]
    missing = [w for w in wnids if w not in by_wnid]
    if missing:
        raise WorldError(f"Tiny-ImageNet classes without an ImageNet name: {missing[:5]}")
    train: list[LabelledImage] = []
    held_out: list[LabelledImage] = []
    keep = per_class or TRAIN_PER_CLASS + HELD_OUT_PER_CLASS
    cut = keep * TRAIN_PER_CLASS // (TRAIN_PER_CLASS + HELD_OUT_PER_CLASS)
    for label, wnid in enumerate(wnids):
        files = sorted((root / "tiny-imagenet-val" / r["file"] for r in tiny_rows if r["wnid"] == wnid),
                       key=_hash_order)
        train += [LabelledImage(f, label) for f in files[:cut]]
        held_out += [LabelledImage(f, label) for f in files[cut:keep]]
    id_classes = sorted(random.Random(0).sample(range(len(wnids)), len(wnids) // 2))
    tiny = {row["wnid"] for row in _rows(root / "tiny-imagenet-val" / "classes.tsv")}
    imagenet_rows = imagenet_rows[::imagenet_every]
    imagenet = [LabelledImage(root / "imagenet-sample" / r["file"], int(r["class_index"])) for r in imagenet_rows]
    generic = [item for item, row in zip(imagenet, imagenet_rows, strict=True) if row["wnid"] not in tiny]
    texture_files = sorted((root / "textures-dtd" / "images").glob("*/*"))[::textures_every]
    return WorldData(names=[by_wnid[w] for w in wnids], wnids=wnids,
                     imagenet_index=[index_of[w] for w in wnids], train=train, held_out=held_out,
                     id_classes=id_classes, imagenet_names=imagenet_names, imagenet=imagenet, generic=generic,
                     textures=[(f, f.parent.name) for f in texture_files])
