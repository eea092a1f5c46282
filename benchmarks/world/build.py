"""Build a world: heads trained on cached features, saved as an open_clip ``local-dir:`` folder.

World A trains its heads on captions of all Tiny classes, world B on the ID half only (the new
vocabulary then is unseen by the heads). A world folder is cached under a hash of everything that
decides it (kind, seed, recipe, splits, templates, package versions), so reruns and later seeds reuse it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import timm
import torch
import transformers
from safetensors.torch import save_file

from benchmarks.world import towers
from benchmarks.world.data import WorldData
from benchmarks.world.features import backbone_features, cache_key, caption_features, world_transform
from benchmarks.world.heads import HeadInputs, HeadRecipe, class_vectors, image_vectors, train_heads

EMBED_DIM = 512
IMAGE_SIZE = 160
CONTEXT_LENGTH = 32
# CLIP-style templates the heads train on; the product's 7 "ensemble" templates are among them.
WORLD_TEMPLATES = (
    "a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
    "a cropped photo of the {}.", "a good photo of a {}.", "a low resolution photo of a {}.", "a photo of my {}.",
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.", "a blurry photo of a {}.",
)


@dataclass
class FeatureBank:
    """Cached frozen-tower features of every image and caption a world needs (see :mod:`features`)."""

    pooled: dict[Path, torch.Tensor]  # file → (1280,)
    teacher: dict[Path, torch.Tensor]  # file → (1000,) ImageNet logits
    imagenet_captions: torch.Tensor  # (1000, T, 384)
    templates: tuple[str, ...]  # the T caption templates


@dataclass
class World:
    """A built world: its ``local-dir:`` folder, the heads' figures and how long it took."""

    kind: str
    seed: int
    folder: Path
    metrics: dict[str, float]
    seconds: float

    @property
    def model_name(self) -> str:
        """The open_clip name oodfilter loads it by."""
        return f"local-dir:{self.folder}"


def load_feature_bank(data: WorldData, cache: Path, *, templates: tuple[str, ...] = WORLD_TEMPLATES, workers: int = 1,
                      log=print) -> FeatureBank:
    """Features of all Tiny, ImageNet-sample and DTD images and of the ImageNet names' captions."""
    files = [i.path for i in data.train + data.held_out + data.imagenet] + [f for f, _ in data.textures]
    backbone = towers.load_backbone()
    pooled, logits = backbone_features(backbone, world_transform(IMAGE_SIZE, towers.MEAN, towers.STD), files,
                                       cache, workers=workers, log=log)
    clip = towers.build_clip(EMBED_DIM, IMAGE_SIZE, CONTEXT_LENGTH)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(towers.minilm_folder()), context_length=CONTEXT_LENGTH)
    captions = [t.format(name) for name in data.imagenet_names for t in templates]
    pooled_captions = caption_features(clip.text, tokenizer, captions, cache)
    return FeatureBank(pooled=dict(zip(files, pooled, strict=True)), teacher=dict(zip(files, logits, strict=True)),
                       imagenet_captions=pooled_captions.view(len(data.imagenet_names), len(templates), -1),
                       templates=templates)


def _stack(bank: dict[Path, torch.Tensor], files: list[Path]) -> torch.Tensor:
    return torch.stack([bank[f] for f in files])


def _inputs(kind: str, data: WorldData, bank: FeatureBank) -> HeadInputs:
    classes = list(range(len(data.names))) if kind == "A" else data.id_classes
    position = {c: i for i, c in enumerate(classes)}
    items = [i for i in data.train if i.label in position]
    return HeadInputs(image=_stack(bank.pooled, [i.path for i in items]),
                      labels=torch.tensor([position[i.label] for i in items]),
                      teacher=_stack(bank.teacher, [i.path for i in items]),
                      class_captions=bank.imagenet_captions[[data.imagenet_index[c] for c in classes]],
                      imagenet_captions=bank.imagenet_captions)


def _accuracy(image: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    top = (image @ classes.T).topk(k, dim=-1).indices  # (N, k)
    return float((top == labels[:, None]).any(dim=-1).float().mean())


def world_metrics(clip: torch.nn.Module, data: WorldData, bank: FeatureBank) -> dict[str, float]:
    """Zero-shot top-1 on held-out Tiny (all classes, ID classes), ImageNet-sample top-1/top-5."""
    image_head, text_head = clip.visual.head.proj, clip.text.proj
    tiny = class_vectors(text_head, bank.imagenet_captions[data.imagenet_index])
    held = image_vectors(image_head, _stack(bank.pooled, [i.path for i in data.held_out]))
    labels = torch.tensor([i.label for i in data.held_out])
    in_id = torch.tensor([i.label in set(data.id_classes) for i in data.held_out])
    remap = torch.full((len(data.names),), -1, dtype=torch.long)
    remap[data.id_classes] = torch.arange(len(data.id_classes))
    imagenet = class_vectors(text_head, bank.imagenet_captions)
    pictures = image_vectors(image_head, _stack(bank.pooled, [i.path for i in data.imagenet]))
    truth = torch.tensor([i.label for i in data.imagenet])
    return {"tiny_top1": _accuracy(held, tiny, labels),
            "id_top1": _accuracy(held[in_id], tiny[data.id_classes], remap[labels[in_id]]),
            "imagenet_top1": _accuracy(pictures, imagenet, truth),
            "imagenet_top5": _accuracy(pictures, imagenet, truth, k=5)}


def _save_local_dir(clip: torch.nn.Module, folder: Path) -> None:
    """Write ``clip`` as a self-contained open_clip ``local-dir:`` folder (config, weights, tokenizer)."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in towers.HF_FILES:
        shutil.copyfile(towers.minilm_folder() / name, partial / name)
    config = {"model_cfg": towers.model_config(EMBED_DIM, IMAGE_SIZE, CONTEXT_LENGTH, folder),
              "preprocess_cfg": towers.preprocess_config(IMAGE_SIZE)}
    (partial / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(partial / "open_clip_model.safetensors"))
    partial.replace(folder)


def build_world(kind: str, seed: int, data: WorldData, bank: FeatureBank, cache: Path, recipe: HeadRecipe,
                log=print) -> World:
    """Train (or reuse) world ``kind`` (``A``: all Tiny classes' captions, ``B``: the ID half's) for ``seed``."""
    key = cache_key(kind, seed, asdict(recipe), bank.templates, data.wnids, data.id_classes,
                    [str(i.path) for i in data.train], open_clip.__version__, timm.__version__,
                    transformers.__version__, torch.__version__)
    folder = cache / f"world-{kind}-seed{seed}-{key}"
    record = folder / "world.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        log(f"world {kind} seed {seed}: from cache ({folder})")
        return World(kind, seed, folder, saved["metrics"], saved["seconds"])
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = towers.build_clip(EMBED_DIM, IMAGE_SIZE, CONTEXT_LENGTH)
        history = train_heads(clip.visual.head.proj, clip.text.proj, clip.logit_scale, _inputs(kind, data, bank),
                              recipe, seed)
    clip.eval()
    metrics = world_metrics(clip, data, bank)
    _save_local_dir(clip, folder)
    seconds = time.perf_counter() - started
    record.write_text(json.dumps({"metrics": metrics, "seconds": seconds, "loss": history}, indent=1))
    log(f"world {kind} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        + f" ({seconds:.0f} s)")
    return World(kind, seed, folder, metrics, seconds)
