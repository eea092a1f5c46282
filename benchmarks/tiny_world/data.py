"""The tiny world's data: Tiny-ImageNet (200 classes × 50 images at 64 px) split 40/10 per class, DTD."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY = DATA / "tiny-imagenet-val"
TEXTURES = DATA / "textures-dtd" / "images"
TRAIN_PER_CLASS = 40


@dataclass
class World:
    """Class names (WordNet synonyms), and file lists per split."""

    wnids: list[str]
    names: dict[str, list[str]]  # wnid → synonyms, first is the display name
    train: list[tuple[Path, int]]  # (file, class index)
    held_out: list[tuple[Path, int]]


def load_world(num_classes: int = 200) -> World:
    """Read Tiny-ImageNet's labels and split each class's images 40 train / 10 held out (by file hash)."""
    names: dict[str, list[str]] = {}
    for line in (TINY / "classes.tsv").read_text().splitlines()[1:]:
        wnid, words = line.split("\t")
        names[wnid] = [w.strip() for w in words.split(",") if w.strip()]
    wnids = sorted(names)[:num_classes]
    index = {w: i for i, w in enumerate(wnids)}
    per_class: dict[str, list[Path]] = {w: [] for w in wnids}
    for line in (TINY / "labels.tsv").read_text().splitlines()[1:]:
        file, wnid = line.split("\t")
        if wnid in per_class:
            per_class[wnid].append(TINY / file)
    train, held_out = [], []
    for wnid, files in per_class.items():
        ordered = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
        train += [(p, index[wnid]) for p in ordered[:TRAIN_PER_CLASS]]
        held_out += [(p, index[wnid]) for p in ordered[TRAIN_PER_CLASS:]]
    return World(wnids, {w: names[w] for w in wnids}, train, held_out)


def load_pixels(files: list[Path], size: int = 64) -> torch.Tensor:
    """Decode files to a (N, 3, size, size) uint8 tensor (kept in memory for fast augmentation)."""
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, file in enumerate(files):
        with Image.open(file) as image:
            array = np.array(image.convert("RGB").resize((size, size), Image.BICUBIC))
        out[i] = torch.from_numpy(array).permute(2, 0, 1)
    return out
