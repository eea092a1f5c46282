"""Image-caption data for fine-tuning the no-branch: caption tables and image-folder trees.

Sources, detected from what ``--data`` points to:

* a ``.csv``, ``.tsv`` or ``.jsonl`` table with ``path`` and ``caption`` columns (paths relative to the
  table's folder, or absolute);
* a folder whose sub-folders are class names; each image's caption is a template filled with its
  folder's name (a different template per sample, chosen reproducibly);
* WebDataset shards (``shards/{000..099}.tar``, a glob, or URLs): each sample with an image and a caption
  (its ``txt`` field, or ``caption``/``text`` in its ``json``) is a pair, read from the shard by name
  (:mod:`oodfilter.data.shards`), so resuming mid-epoch works as for files.

Missing or corrupt images are skipped and counted, never fatal. Augmentation is seeded per sample from
(seed, epoch, index), so a run resumed mid-epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from oodfilter.data.decode import ImageDecodeError, load_rgb_image
from oodfilter.data.discovery import IMAGE_EXTENSIONS
from oodfilter.data.remote import SourceUnavailableError
from oodfilter.data.shards import expand_shards, image_field, names_shards, sample_caption, sample_name, shard_index
from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionedImage:
    """One training pair: an image file and its caption, or the class name that templates turn into one."""

    path: str
    caption: str | None = None
    class_name: str | None = None
    key: str = ""  # what the train/validation split hashes: the path as the source names it


def read_caption_source(data: str | Path) -> list[CaptionedImage]:
    """Read the pairs of a caption table or an image-folder tree (see the module docstring).

    Raises:
        InputError: ``data`` does not exist, is an unknown kind of file, lacks the columns, or is empty.
    """
    if names_shards(str(data)) and not Path(data).is_dir():
        pairs = _shard_pairs(str(data))
        if not pairs:
            raise InputError(f"the shards {data} hold no sample with both an image and a caption (txt, or caption "
                             "in json)")
        return pairs
    source = Path(data)
    if source.is_dir():
        pairs = _folder_pairs(source)
    elif source.is_file():
        pairs = _table_pairs(source)
    else:
        raise InputError(f"training data {source} does not exist; pass a caption table or an image-folder tree")
    if not pairs:
        raise InputError(f"training data {source} holds no image-caption pairs")
    return pairs


def _folder_pairs(root: Path) -> list[CaptionedImage]:
    pairs = []
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{root} has no class sub-folders; an image-folder tree has one folder per class")
    for folder in classes:
        name = folder.name.replace("_", " ")
        for file in sorted(folder.rglob("*")):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                pairs.append(CaptionedImage(str(file), class_name=name, key=file.relative_to(root).as_posix()))
    return pairs


def _shard_pairs(spec: str) -> list[CaptionedImage]:
    """Return the (image, caption) samples of the shards ``spec`` names.

    A sample without an image or a caption, or whose caption cannot be read, is left out and counted; a
    damaged shard or one that cannot be read at all is warned about, never fatal.
    """
    pairs = []
    left_out: list[str] = []
    for shard in expand_shards(spec):
        base = shard.rsplit("/", 1)[-1]
        try:
            index = shard_index(shard)
        except SourceUnavailableError:
            raise
        except InputError as error:
            left_out.append(str(error))
            continue
        if index.error is not None:
            left_out.append(f"{shard}: {index.error}")
        for key, fields in index.samples.items():
            try:
                caption = sample_caption(shard, fields) if image_field(fields) is not None else None
            except SourceUnavailableError:
                raise
            except InputError as error:
                left_out.append(str(error))
                continue
            if caption is not None:
                pairs.append(CaptionedImage(sample_name(shard, key), caption, key=sample_name(base, key)))
    if left_out:
        logger.warning("training data %s: %d problem(s) left samples out, e.g. %s", spec, len(left_out), left_out[0])
    return pairs


def _table_pairs(table: Path) -> list[CaptionedImage]:
    suffix = table.suffix.lower()
    base = table.parent
    rows: list[dict[str, Any]]
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(table.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(parse_json(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{table} line {number} is not valid JSON") from error
    elif suffix in (".csv", ".tsv"):
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise InputError(f"caption table {table} must be .csv, .tsv or .jsonl")
    if rows and not {"path", "caption"} <= set(rows[0]):
        raise InputError(f"caption table {table} needs 'path' and 'caption' columns; found {sorted(rows[0])}")
    return [
        CaptionedImage(
            str(Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]),
            str(row["caption"]),
            key=str(row["path"]),
        )
        for row in rows
    ]


def split_pairs(pairs: list[CaptionedImage], val_fraction: float) -> tuple[list[CaptionedImage], list[CaptionedImage]]:
    """Split into (train, validation) by a hash of each pair's key (its path as the source names it).

    The split depends on neither the run nor where the data lives, so it is the same on every machine.
    """
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = int(val_fraction * 10_000)

    def bucket(pair: CaptionedImage) -> int:
        key = pair.key or pair.path
        return int(hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % 10_000  # odd names too

    val = [p for p in pairs if bucket(p) < cut]
    val_paths = {p.path for p in val}
    return [p for p in pairs if p.path not in val_paths], val


@dataclass
class DataCounters:
    """Samples skipped (undecodable) and captions truncated by the tokenizer."""

    skipped: int = 0
    truncated: int = 0
    skipped_paths: list[str] = field(default_factory=list)


class CaptionDataset(Dataset[Any]):
    """Decoded, augmented image and tokenised caption per pair; ``None`` for an undecodable image.

    Args:
        pairs: The pairs.
        transform: PIL image → (3, H, W) tensor (random augmentation allowed: it is seeded per sample).
        tokenizer: The model's tokenizer (list of strings → (N, L) ids).
        templates: Templates for folder-tree captions.
        seed: Base seed of the per-sample randomness.
    """

    def __init__(
        self,
        pairs: Sequence[CaptionedImage],
        transform: Callable[[Any], torch.Tensor],
        tokenizer: Callable[..., torch.Tensor],
        templates: Sequence[str],
        seed: int = 0,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.tokenizer = tokenizer
        self.templates = list(templates)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose per-sample randomness to use."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def caption(self, index: int) -> str:
        """Return the caption of pair ``index`` (for class folders, a template drawn for this epoch)."""
        pair = self.pairs[index]
        if pair.caption is not None:
            return pair.caption
        rng = random.Random(_sample_seed(self.seed, self.epoch, index))
        return rng.choice(self.templates).format(pair.class_name)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        pair = self.pairs[index]
        try:
            image = load_rgb_image(pair.path)
        except ImageDecodeError as error:
            return {"index": index, "error": error.reason, "path": pair.path}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
            pixels = self.transform(image)
        text = self.caption(index)
        tokens = self.tokenizer([text])[0]
        return {"index": index, "image": pixels, "tokens": tokens, "group": self.group(index),
                "truncated": _is_truncated(self.tokenizer, text)}

    def group(self, index: int) -> int:
        """Return an id of what pair ``index``'s caption says: its class for folders, else its text."""
        pair = self.pairs[index]
        key = f"class:{pair.class_name}" if pair.class_name is not None else f"text:{pair.caption}"
        return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).hexdigest()[:15], 16)


def _is_truncated(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` is longer than the tokenizer's context, special tokens included."""
    length = getattr(tokenizer, "context_length", None)
    count = _token_count(tokenizer, text)
    return length is not None and count is not None and count > int(length)


def _token_count(tokenizer: Any, text: str) -> int | None:
    """Tokens ``text`` needs, special tokens included; None for a tokenizer that cannot say."""
    hf_tokenizer = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers one
    if callable(hf_tokenizer):
        return len(hf_tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        return None
    return len(encode(text)) + 2  # open_clip's SimpleTokenizer: start and end tokens


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate good samples; report the skipped ones by path."""
    good = [item for item in items if "image" in item]
    return {
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "image": torch.stack([item["image"] for item in good]) if good else None,
        "tokens": torch.stack([item["tokens"] for item in good]) if good else None,
        "group": torch.tensor([item["group"] for item in good], dtype=torch.long),
        "truncated": sum(bool(item["truncated"]) for item in good),
        "skipped": [item["path"] for item in items if "image" not in item],
    }


class GlobalBatchSampler(Sampler[list[int]]):
    """The local slice of each global batch of one epoch, from a shuffled order seeded by (seed, epoch).

    Every rank draws the same global batches; rank r takes samples [r·b, (r+1)·b) of each, with
    b = global_batch / world. :meth:`set_epoch` selects the epoch and the batch to start from;
    batches before that are skipped without being loaded.
    """

    def __init__(self, size: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise InputError(f"batch size {global_batch} must be divisible by the number of processes ({world})")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw, and the first of its global batches to yield."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.size // self.global_batch - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        local = self.global_batch // self.world
        for batch in range(self.start_batch, self.size // self.global_batch):
            start = batch * self.global_batch + self.rank * local
            yield order[start : start + local]
