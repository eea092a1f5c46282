"""CLIPN bundles: a folder holding an open_clip-loadable yes-model, the no-tower and a manifest.

Layout::

    BUNDLE/
      oodfilter.json                      format, architecture, source, sha256 per file, training config
      no_tower.safetensors                ψⁿᵒ weights and the no-prompts
      yes_model/open_clip_config.json     open_clip can load this folder as 'local-dir:BUNDLE/yes_model'
      yes_model/open_clip_model.safetensors
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import open_clip
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oodfilter.errors import CheckpointError, InputError, ModelLoadError
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.fingerprint import file_sha256
from oodfilter.model.loading import BUNDLE_MANIFEST, build_from_open_clip
from oodfilter.model.state import load_state_strict

FORMAT = "oodfilter-clipn-bundle"
FORMAT_VERSION = 1
NO_TOWER_FILE = "no_tower.safetensors"
YES_DIR = "yes_model"
YES_CONFIG_FILE = f"{YES_DIR}/open_clip_config.json"
YES_WEIGHTS_FILE = f"{YES_DIR}/open_clip_model.safetensors"


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
        overwrite: Replace an existing bundle at ``out_dir`` (only once the new one is complete).

    Raises:
        InputError: ``out_dir`` exists, is not empty and ``overwrite`` is False.

    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"{out} already exists and is not empty; choose a new folder or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_bundle_files(model, staging, training_config)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_bundle_into(model: CLIPN, folder: str | Path, *, training_config: dict[str, Any] | None = None) -> Path:
    """Write the bundle files into an existing folder that holds other things too (a training run).

    Files are staged in a hidden sub-folder and moved into place one by one, the manifest
    (``oodfilter.json``) last, so the folder only reads as a bundle once every file is complete.
    Existing bundle files there are replaced; nothing else in the folder is touched.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-staging.", dir=out))
    try:
        _write_bundle_files(model, staging, training_config)
        (out / YES_DIR).mkdir(exist_ok=True)
        for name in (YES_CONFIG_FILE, YES_WEIGHTS_FILE, NO_TOWER_FILE, BUNDLE_MANIFEST):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_bundle_files(model: CLIPN, folder: Path, training_config: dict[str, Any] | None) -> None:
    (folder / YES_DIR).mkdir()
    yes_config = {
        "model_cfg": model.model_config,
        "preprocess_cfg": open_clip.get_model_preprocess_cfg(model.clip),
    }
    (folder / YES_CONFIG_FILE).write_text(json.dumps(yes_config, indent=2, default=_jsonable))
    save_file(_cpu_tensors(model.clip.state_dict()), str(folder / YES_WEIGHTS_FILE))
    save_file(_cpu_tensors(model.no_tower.state_dict()), str(folder / NO_TOWER_FILE))
    files = [YES_CONFIG_FILE, YES_WEIGHTS_FILE, NO_TOWER_FILE]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {
            "model_cfg": model.model_config,
            "num_prompts": model.no_tower.num_prompts,
            "embed_dim": model.embed_dim,
        },
        "source": {
            "name": model.source.name,
            "pretrained": model.source.pretrained,
            "kind": model.source.kind,
            "details": model.source.details,
        },
        "no_branch_trained": model.no_branch_trained,
        "files": {name: file_sha256(folder / name) for name in files},
        "training_config": training_config,
    }
    (folder / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable))


def load_bundle(bundle_dir: str | Path, *, verify: bool = True) -> CLIPN:
    """Load a bundle folder written by :func:`save_bundle` (on the CPU, eval mode).

    Args:
        bundle_dir: The bundle folder.
        verify: Compare every file's sha256 with the manifest before loading.

    Raises:
        CheckpointError: the manifest is missing or malformed, a file is missing or altered, or the
            weights do not match the recorded architecture (the message lists the keys).

    """
    folder = Path(bundle_dir)
    manifest = _read_manifest(folder)
    if verify:
        _verify_files(folder, manifest)
    origin = manifest.get("source") or {}
    try:
        model = build_from_open_clip(
            f"local-dir:{folder / YES_DIR}",
            num_prompts=int(manifest["architecture"]["num_prompts"]),
            source=ModelSource(name=str(folder), kind="bundle", details={"origin": origin}),
        )
    except ModelLoadError as error:
        raise CheckpointError(f"bundle {folder}: the yes-model cannot be loaded: {error}") from error
    no_path = folder / NO_TOWER_FILE
    try:
        no_state = load_file(str(no_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{no_path} is unreadable or corrupt ({error}); re-create the bundle") from error
    load_state_strict(model.no_tower, no_state, what=str(no_path))
    model.no_branch_trained = bool(manifest.get("no_branch_trained", True))
    model.training_config = manifest.get("training_config")
    return model.eval()


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / BUNDLE_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{folder} is not an oodfilter bundle: {BUNDLE_MANIFEST} is missing") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is unreadable or not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oodfilter bundle manifest (format '{FORMAT}' expected)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has bundle format version {manifest.get('format_version')}; this oodfilter reads "
            f"version {FORMAT_VERSION}. Upgrade oodfilter or re-create the bundle."
        )
    return manifest


def _verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    for name, expected in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"bundle {folder} is incomplete: {name} is missing")
        if file_sha256(path) != expected:
            raise CheckpointError(
                f"{path} does not match the sha256 in {BUNDLE_MANIFEST}: the file is corrupt or was modified"
            )


def _replace_dir(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    backup = out.with_name(f".{out.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    os.replace(out, backup)
    os.replace(staging, out)
    shutil.rmtree(backup, ignore_errors=True)


def _cpu_tensors(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a bundle manifest")
