"""The bundle manifest ``oodfilter.json``: its fields, how it is written, and how it is checked.

A manifest is read strictly: every key is required, unknown keys are refused, numbers are type- and
range-checked, and every bundle file must be listed with its sha256 and match it. A bundle that fails
any check is refused with a message that names the file or key and says how to fix it.

Besides :data:`BUNDLE_FILES`, the yes-model folder of a model with a Hugging Face text tower holds that
tower's ``config.json`` and its tokenizer's files (whose names depend on the tokenizer); they are listed
and checked like the others, and the yes-model folder may hold no file the manifest does not list,
since open_clip and transformers read whatever they find there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodfilter.errors import CheckpointError
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt
from oodfilter.model.file_digest import file_sha256

if TYPE_CHECKING:
    from oodfilter.model.clipn import CLIPN

BUNDLE_MANIFEST = "oodfilter.json"
FORMAT = "oodfilter-clipn-bundle"
FORMAT_VERSION = 1
NO_TOWER_FILE = "no_tower.safetensors"
YES_DIR = "yes_model"
YES_CONFIG_FILE = f"{YES_DIR}/open_clip_config.json"
YES_WEIGHTS_FILE = f"{YES_DIR}/open_clip_model.safetensors"
# The files every bundle has besides the manifest; the manifest lists these, each with its sha256, and
# any text-tower files of the yes-model folder (see the module docstring).
BUNDLE_FILES = (YES_CONFIG_FILE, YES_WEIGHTS_FILE, NO_TOWER_FILE)

_TOP_KEYS = ("format", "format_version", "architecture", "source", "no_branch_trained", "files", "training_config")
_ARCHITECTURE_KEYS = ("model_cfg", "num_prompts", "embed_dim")
_SOURCE_KEYS = ("name", "pretrained", "kind", "details")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEXT_TOWER_FILE = re.compile(rf"{YES_DIR}/[A-Za-z0-9][A-Za-z0-9._-]*")
_RECREATE = "re-create the bundle (oodfilter convert-clipn, oodfilter finetune or oodfilter.save_bundle)"


@dataclass(frozen=True)
class BundleManifest:
    """The checked content of a bundle's ``oodfilter.json``.

    Attributes:
        model_cfg: The open_clip model config of the yes-model.
        num_prompts: Number of learnable no-prompts (≥ 1).
        embed_dim: Dimension of the joint embedding space (≥ 1).
        source: Provenance of the weights (``name``, ``pretrained``, ``kind``, ``details``).
        no_branch_trained: Whether the no-tower holds trained weights.
        files: sha256 per bundle file, keyed by its path inside the bundle.
        training_config: The resolved training configuration, if the bundle came from training.

    """

    model_cfg: dict[str, Any]
    num_prompts: int
    embed_dim: int
    source: dict[str, Any]
    no_branch_trained: bool
    files: dict[str, str]
    training_config: dict[str, Any] | None


def write_manifest(model: CLIPN, folder: Path, training_config: dict[str, Any] | None) -> None:
    """Hash the bundle files already written in ``folder`` and write the manifest beside them."""
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
        "files": {name: file_sha256(folder / name) for name in bundle_files(folder)},
        "training_config": training_config,
    }
    (folder / BUNDLE_MANIFEST).write_text(bundle_json(manifest))


def bundle_files(folder: Path) -> list[str]:
    """List the bundle files written in ``folder``: :data:`BUNDLE_FILES`, then the text-tower files.

    Raises:
        CheckpointError: the yes-model folder holds a file whose name a manifest cannot list.

    """
    extra = sorted(f"{YES_DIR}/{path.name}" for path in (folder / YES_DIR).iterdir()
                   if f"{YES_DIR}/{path.name}" not in BUNDLE_FILES)
    for name in extra:
        if not (folder / name).is_file() or not _TEXT_TOWER_FILE.fullmatch(name):
            raise CheckpointError(
                f"{folder / name}: a bundle's {YES_DIR} folder holds only plain files with simple names"
            )
    return [*BUNDLE_FILES, *extra]


def listed_files(folder: Path) -> frozenset[str]:
    """Return the file names that ``folder``'s manifest lists, read leniently (empty when it is unreadable)."""
    try:
        files = parse_json((folder / BUNDLE_MANIFEST).read_text()).get("files")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return frozenset()
    if not isinstance(files, dict):
        return frozenset()
    return frozenset(name for name in files if name in BUNDLE_FILES or _TEXT_TOWER_FILE.fullmatch(str(name)))


def bundle_json(value: Any) -> str:
    """``value`` as indented JSON for a bundle file (tuples and sets as lists, paths as strings)."""
    return json.dumps(value, indent=2, default=_jsonable)


def read_manifest(folder: Path) -> BundleManifest:
    """Read and check ``folder/oodfilter.json``.

    Raises:
        CheckpointError: the manifest is missing, not JSON, of another format or version, has a
            missing or unknown key, or a field of the wrong type or out of range; the message names it.

    """
    path = folder / BUNDLE_MANIFEST
    raw = _read_json(folder, path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oodfilter bundle manifest (format '{FORMAT}' expected)")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has bundle format version {raw.get('format_version')}; this oodfilter reads "
            f"version {FORMAT_VERSION}. Upgrade oodfilter or re-create the bundle."
        )
    _check_keys(raw, _TOP_KEYS, "", path)
    architecture = _check_keys(raw["architecture"], _ARCHITECTURE_KEYS, "architecture.", path)
    source = _check_keys(raw["source"], _SOURCE_KEYS, "source.", path)
    _check_source(source, path)
    return BundleManifest(
        model_cfg=_typed(architecture["model_cfg"], dict, "architecture.model_cfg", "an object", path),
        num_prompts=_positive_int(architecture["num_prompts"], "architecture.num_prompts", path),
        embed_dim=_positive_int(architecture["embed_dim"], "architecture.embed_dim", path),
        source=source,
        no_branch_trained=_typed(raw["no_branch_trained"], bool, "no_branch_trained", "true or false", path),
        files=_check_files(raw["files"], path),
        training_config=_typed_or_none(raw["training_config"], dict, "training_config", "an object or null", path),
    )


def verify_files(folder: Path, manifest: BundleManifest) -> None:
    """Compare every bundle file's sha256 with the manifest.

    Raises:
        CheckpointError: a file is missing or its content differs from the manifest's hash.

    """
    for name in manifest.files:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"bundle {folder} is incomplete: {name} is missing; {_RECREATE}")
        if file_sha256(path) != manifest.files[name]:
            raise CheckpointError(
                f"{path} does not match the sha256 in {BUNDLE_MANIFEST}: the file is corrupt or was modified; "
                f"copy the bundle again from its origin or {_RECREATE}"
            )
    unlisted = sorted(f"{YES_DIR}/{path.name}" for path in (folder / YES_DIR).iterdir()
                      if f"{YES_DIR}/{path.name}" not in manifest.files)
    if unlisted:
        raise CheckpointError(
            f"{folder / unlisted[0]} is not listed in {BUNDLE_MANIFEST}; open_clip or transformers could read it "
            f"and load something else than what was saved. Remove it, or {_RECREATE}"
        )


def _read_json(folder: Path, path: Path) -> Any:
    try:
        return parse_json(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError as error:
        raise CheckpointError(f"{folder} is not an oodfilter bundle: {BUNDLE_MANIFEST} is missing") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is unreadable or not valid JSON: {error}; {_RECREATE}") from error


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number in a bundle manifest")


def _check_keys(value: Any, keys: tuple[str, ...], prefix: str, path: Path) -> dict[str, Any]:
    """Require ``value`` to be an object with exactly ``keys``; return it."""
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: '{prefix.rstrip('.')}' must be an object; {_RECREATE}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise CheckpointError(
            f"{path}: unknown key '{prefix}{unknown[0]}' (bundle format version {FORMAT_VERSION} knows "
            f"{', '.join(prefix + key for key in keys)}); remove the key or {_RECREATE}"
        )
    missing = [key for key in keys if key not in value]
    if missing:
        raise CheckpointError(f"{path}: required key '{prefix}{missing[0]}' is missing; {_RECREATE}")
    return value


def _check_source(source: Mapping[str, Any], path: Path) -> None:
    _typed(source["name"], str, "source.name", "a string", path)
    _typed_or_none(source["pretrained"], str, "source.pretrained", "a string or null", path)
    _typed(source["kind"], str, "source.kind", "a string", path)
    _typed(source["details"], dict, "source.details", "an object", path)


def _check_files(files: Any, path: Path) -> dict[str, str]:
    if not isinstance(files, dict) or not files:
        raise CheckpointError(
            f"{path} lists no files: a bundle's 'files' must give the sha256 of {', '.join(BUNDLE_FILES)}, "
            f"so that a corrupt or altered file is caught; {_RECREATE}"
        )
    unknown = sorted(name for name in files if name not in BUNDLE_FILES and not _TEXT_TOWER_FILE.fullmatch(name))
    if unknown:
        raise CheckpointError(f"{path}: 'files' lists '{unknown[0]}', which is not a bundle file; {_RECREATE}")
    for name in BUNDLE_FILES:
        if name not in files:
            raise CheckpointError(f"{path}: 'files' lacks the sha256 of {name}; {_RECREATE}")
    for name in files:
        if not isinstance(files[name], str) or not _SHA256.fullmatch(files[name]):
            raise CheckpointError(
                f"{path}: 'files.{name}' must be a sha256 (64 lowercase hex digits), found {excerpt(files[name])}; "
                f"{_RECREATE}"
            )
    return dict(files)


def _positive_int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{path}: '{key}' must be an integer ≥ 1, found {excerpt(value)}; {_RECREATE}")
    return value


def _typed(value: Any, kind: type, key: str, expected: str, path: Path) -> Any:
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: '{key}' must be {expected}, found {excerpt(value)}; {_RECREATE}")
    return value


def _typed_or_none(value: Any, kind: type, key: str, expected: str, path: Path) -> Any:
    return None if value is None else _typed(value, kind, key, expected, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a bundle manifest")
