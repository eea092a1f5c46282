"""CLIPN bundles: a folder holding an open_clip-loadable yes-model, the no-tower and a manifest.

Layout::

    BUNDLE/
      oodfilter.json                      format, architecture, source, sha256 per file, training config
      no_tower.safetensors                ψⁿᵒ weights and the no-prompts
      yes_model/open_clip_config.json     open_clip can load this folder as 'local-dir:BUNDLE/yes_model'
      yes_model/open_clip_model.safetensors
      yes_model/config.json, tokenizer*   only for a Hugging Face text tower: its config and tokenizer

Loading always checks the manifest (see :mod:`oodfilter.model.manifest`), every file's sha256 and that
the no-tower holds finite numbers; saving replaces only a folder that holds a bundle and nothing else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oodfilter.atomic import new_file_mode, new_folder_mode
from oodfilter.errors import CheckpointError, ModelLoadError
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.file_checks import check_bundle_destination as check_bundle_destination  # re-exported
from oodfilter.model.hf_text import write_hf_text_files
from oodfilter.model.manifest import (
    BUNDLE_MANIFEST,
    NO_TOWER_FILE,
    YES_CONFIG_FILE,
    YES_DIR,
    YES_WEIGHTS_FILE,
    BundleManifest,
    bundle_files,
    bundle_json,
    listed_files,
    read_manifest,
    verify_files,
    write_manifest,
)
from oodfilter.model.state import load_state_strict


def save_bundle(
    model: CLIPN,
    out_dir: str | Path,
    *,
    training_config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bundle folder and return its path.

    The folder is assembled under a temporary name beside ``out_dir`` and renamed into place, so a
    crash never leaves a half-written bundle.

    Args:
        model: The CLIPN model to save.
        out_dir: Destination folder; must not exist (or be empty) unless ``overwrite``.
        training_config: The resolved training configuration, stored in the manifest.
        overwrite: Replace an existing bundle at ``out_dir`` (only once the new one is complete). A
            folder holding anything besides a bundle, or a file, is never replaced.

    Raises:
        InputError: ``out_dir`` is a file, a folder that is not only a bundle, or a bundle while
            ``overwrite`` is False (see :func:`check_bundle_destination`).

    """
    out = Path(out_dir)
    check_bundle_destination(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(new_folder_mode())  # it becomes the bundle folder: the umask's mode, not mkdtemp's 0700
        _write_bundle_files(model, staging, training_config)
        check_bundle_destination(out, overwrite=overwrite)  # again: the folder may have changed meanwhile
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_bundle_into(model: CLIPN, folder: str | Path, *, training_config: dict[str, Any] | None = None) -> Path:
    """Write the bundle files into an existing folder that holds other things too (a training run).

    Files are staged in a hidden sub-folder and moved into place one by one, the manifest
    (``oodfilter.json``) last, so the folder only reads as a bundle once every file is complete.
    Existing bundle files there are replaced, and files of an earlier bundle's yes-model folder that the
    new one lacks are removed; nothing else in the folder is touched.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-staging.", dir=out))
    try:
        _write_bundle_files(model, staging, training_config)
        names = bundle_files(staging)
        (out / YES_DIR).mkdir(exist_ok=True)
        for name in names:
            os.replace(staging / name, out / name)
        for stale in set(listed_files(out)) - set(names):
            (out / stale).unlink(missing_ok=True)
        os.replace(staging / BUNDLE_MANIFEST, out / BUNDLE_MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_bundle(bundle_dir: str | Path) -> CLIPN:
    """Load a bundle folder written by :func:`save_bundle` (on the CPU, eval mode).

    The manifest is checked, every file's sha256 compared with it, and the no-tower's weights and
    prompts checked to be finite, before the model is returned.

    Args:
        bundle_dir: The bundle folder.

    Raises:
        CheckpointError: the manifest is missing or malformed, a file is missing or altered, the
            weights do not match the recorded architecture (the message lists the keys), or they hold
            NaN or infinite values.

    """
    folder = Path(bundle_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    try:
        model = build_from_open_clip(
            f"local-dir:{folder / YES_DIR}",
            num_prompts=manifest.num_prompts,
            source=ModelSource(name=str(folder), kind="bundle", details={"origin": manifest.source}),
            hf_text_dir=folder / YES_DIR,
        )
    except ModelLoadError as error:
        raise CheckpointError(f"bundle {folder}: the yes-model cannot be loaded: {error}") from error
    no_path = folder / NO_TOWER_FILE
    load_state_strict(model.no_tower, _read_no_tower(no_path), what=str(no_path))
    _check_loaded(model, manifest, folder)
    model.no_branch_trained = manifest.no_branch_trained
    model.training_config = manifest.training_config
    return model.eval()


def _read_no_tower(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is unreadable or corrupt ({error}); re-create the bundle") from error
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            what = "the no-prompts" if key == "prompts" else f"the no-tower weight '{key}'"
            raise CheckpointError(
                f"{path}: {what} holds NaN or infinite values (a diverged training run?); the bundle cannot "
                "score. Re-create it from a good checkpoint."
            )
    return state


def _check_loaded(model: CLIPN, manifest: BundleManifest, folder: Path) -> None:
    """Check what the manifest states against the loaded model (cheap: sizes and one scalar)."""
    if model.embed_dim != manifest.embed_dim:
        raise CheckpointError(
            f"{folder / BUNDLE_MANIFEST}: 'architecture.embed_dim' is {manifest.embed_dim} but the bundle's "
            f"weights give {model.embed_dim}; re-create the bundle"
        )
    scale = model.clip.logit_scale.detach()
    if not bool(torch.isfinite(scale).all()):
        raise CheckpointError(
            f"{folder / YES_WEIGHTS_FILE}: the logit scale is not finite ({scale.item()}); re-create the bundle "
            "from a good checkpoint"
        )


def _write_bundle_files(model: CLIPN, folder: Path, training_config: dict[str, Any] | None) -> None:
    (folder / YES_DIR).mkdir()
    yes_config = {
        "model_cfg": model.model_config,
        "preprocess_cfg": open_clip.get_model_preprocess_cfg(model.clip),
    }
    (folder / YES_CONFIG_FILE).write_text(bundle_json(yes_config))
    save_file(_cpu_tensors(model.clip.state_dict()), str(folder / YES_WEIGHTS_FILE))
    write_hf_text_files(model.clip, model.tokenizer, folder / YES_DIR)
    save_file(_cpu_tensors(model.no_tower.state_dict()), str(folder / NO_TOWER_FILE))
    write_manifest(model, folder, training_config)
    _follow_umask(folder)


def _follow_umask(folder: Path) -> None:
    """Give the files written into ``folder`` the umask's modes (safetensors creates its files 0600)."""
    file_mode, folder_mode = new_file_mode(), new_folder_mode()
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else file_mode)


def _replace_dir(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    # The old folder moves into a fresh hidden folder of our own, so nothing else is ever deleted.
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, trash / out.name)
    os.replace(staging, out)
    shutil.rmtree(trash, ignore_errors=True)


def _cpu_tensors(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
