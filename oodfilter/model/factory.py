"""``load_model``: the one way in from a name, a file or a folder to a ready CLIPN model.

It dispatches over bundle folders, reference checkpoints, ``test-tiny`` and open_clip names; the
building blocks live in lower modules (:mod:`~oodfilter.model.build`, :mod:`~oodfilter.model.tiny`,
:mod:`~oodfilter.model.bundle`, :mod:`~oodfilter.model.convert`), none of which imports this one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from oodfilter.device import resolve_device
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.bundle import load_bundle
from oodfilter.model.clipn import CLIPN
from oodfilter.model.convert import load_reference_checkpoint
from oodfilter.model.manifest import BUNDLE_MANIFEST
from oodfilter.model.pretrained import resolve_pretrained
from oodfilter.model.registration import TINY_MODEL_NAME
from oodfilter.model.tiny import build_tiny_model


def load_model(
    model: str | Path = "ViT-B-16",
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = "auto",
) -> CLIPN:
    """Load a CLIPN model, ready for inference (eval mode, on ``device``).

    ``model`` may be:

    * a bundle folder written by :func:`oodfilter.save_bundle`, ``oodfilter finetune`` or
      ``oodfilter convert-clipn`` (trained no-branch included); its manifest and file hashes are
      always checked;
    * a reference CLIPN release checkpoint (``.pt``), converted on the fly (architecture ViT-B-16,
      or the one named by ``pretrained``);
    * an open_clip model name (``ViT-B-16``) with ``pretrained`` a tag (``laion2b_s34b_b88k``,
      downloaded from the model hub), a local weights file, or ``"random"`` for random weights
      (benchmarks); without ``pretrained``, ViT-B-16 and ViT-B-32 get CLIPN's LAION-2B tags. The
      no-branch starts as an untrained copy of the text tower;
    * an ``hf-hub:org/repo`` or ``local-dir:/path`` open_clip identifier;
    * ``test-tiny``: a tiny model with seeded random weights (no-branch included) for tests.

    Args:
        model: What to load (see above).
        pretrained: Pretrained tag or weights file for an open_clip name.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or a ``torch.device``.

    Raises:
        ModelLoadError: the name, tag or file cannot be resolved or loaded, or a bundle fails its
            checks; the message says why.

    """
    target = resolve_device(device)
    path = Path(model)
    if path.is_dir() and (path / BUNDLE_MANIFEST).is_file():
        loaded = load_bundle(path)
    elif path.is_file():
        loaded = load_reference_checkpoint(path, architecture=pretrained or "ViT-B-16")
    elif str(model) == TINY_MODEL_NAME:
        loaded = build_tiny_model()
    else:
        loaded = build_from_open_clip(str(model), resolve_pretrained(str(model), pretrained))
    return loaded.to(target).eval()
