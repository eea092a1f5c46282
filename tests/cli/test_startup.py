"""Help, listings and every error that needs no model answer without importing torch (issue 27, item 2).

Each command runs in a fresh interpreter, which then reports the heavy modules it imported. Times are not
asserted here (they depend on the machine); ``benchmarks/startup.py`` measures them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

import oodfilter
from oodfilter.cli.main import COMMANDS

HEAVY = ("torch", "open_clip", "transformers", "faiss", "torchvision")
# Runs the CLI as `oodfilter ARGS` would, then prints the exit code and the heavy modules it imported.
_PROBE = f"""
import json, sys
from oodfilter.cli.main import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exit:
    code = exit.code
print("\\n@@" + json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, list[str], str]:
    """Run ``oodfilter ARGS`` in a fresh interpreter; return its exit code, heavy imports and output.

    The interpreter imports the same ``oodfilter`` as this test (not one found in its working folder).
    """
    root = str(Path(oodfilter.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                            cwd=cwd or tempfile.gettempdir(), env=env, timeout=300)
    marker = result.stdout.rfind("\n@@")
    assert marker >= 0, f"the CLI did not finish: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout[marker + 3:])
    return report["code"], report["heavy"], result.stdout[:marker] + result.stderr


def _fitters() -> list[str]:
    return sorted(entry_point.name for entry_point in metadata.entry_points(group="oodfilter.fitters"))


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([name, "--help"] for name in sorted(COMMANDS)),
                                  *(["fit", name, "--help"] for name in _fitters())], ids=" ".join)
def test_help_imports_nothing_heavy(args):
    code, heavy, output = run_cli(*args)
    assert code == 0, output
    assert heavy == [], f"oodfilter {' '.join(args)} imported {heavy}"
    assert ("Usage:" in output) != (args == ["--version"]), output


def test_models_and_plugins_list_without_torch():
    code, heavy, output = run_cli("models")
    assert code == 0 and heavy == [], (heavy, output)
    assert "clipn-vitb16 -> " in output and "'oodfilter scan' uses clipn-vitb16" in output
    code, heavy, output = run_cli("plugins")
    assert code == 0 and heavy == [], (heavy, output)
    lines = output.splitlines()
    assert any(line.split()[:3] == ["atd", "builtin", "needs"] for line in lines), output
    for entry_point in metadata.entry_points(group="oodfilter.scorers"):  # installed plugins, read not imported
        assert any(line.split()[:2] == [entry_point.name, entry_point.dist.name] for line in lines), output


@pytest.mark.slow
def test_plugins_lists_the_same_as_loading_every_plugin():
    code, _, listed = run_cli("plugins")
    loaded_code, heavy, loaded = run_cli("plugins", "--load")
    assert code == loaded_code == 0
    assert listed == loaded
    if metadata.entry_points(group="oodfilter.scorers"):
        assert "torch" in heavy  # --load really imports the plugins


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three images, a class list, a file that is not a manifest, an empty folder."""
    root = tmp_path_factory.mktemp("startup")
    (root / "images").mkdir()
    for index, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (32, 24), colour).save(root / "images" / f"{index}.png")
    (root / "classes.txt").write_text("tench\ngoldfish\n")
    (root / "taken.jsonl").write_text("not a manifest of ours\n")
    (root / "empty").mkdir()
    return root


SCAN = ["scan", "images", "--classes", "classes.txt", "--model", "test-tiny", "--out", "new.jsonl"]
# arguments → what the one-line error says; every one is known before any model is needed
ERRORS = {
    "scan bad option value": (["scan", "images", "--batch-size", "x"], "must be a whole number"),
    "scan no class list": (["scan", "images", "--model", "test-tiny"], "no class list"),
    "scan missing class file": ([*SCAN[:2], "--classes", "missing.txt", *SCAN[4:]], "missing.txt does not exist"),
    "scan missing input folder": (["scan", "nowhere", *SCAN[2:]], "'nowhere' does not exist"),
    "scan bad --out suffix": ([*SCAN[:-1], "out.txt"], "unknown format '.txt'"),
    "scan existing --out": ([*SCAN[:-1], "taken.jsonl"], "already exists"),
    "scan --overwrite of a foreign file": ([*SCAN[:-1], "taken.jsonl", "--overwrite"], "replaces only an oodfilter"),
    "scan unknown method": ([*SCAN, "--method", "nonsense"], "unknown scorers 'nonsense'"),
    "scan unknown templates": ([*SCAN, "--templates", "nonsense"], "unknown template set 'nonsense'"),
    "scan method the model cannot run": ([*SCAN[:4], "--model", "ViT-B-16", *SCAN[6:]], "no trained CLIPN no-branch"),
    "scan unreadable calibration": ([*SCAN, "--calibration", "classes.txt"], "cannot be read as JSON"),
    "scan calibrate-on without images": ([*SCAN, "--id-recall", "0.9", "--calibrate-on", "empty"], "no image found"),
    "scan action without decisions": ([*SCAN, "--method", "mcm", "--action", "move", "--dest", "moved"],
                                      "needs decisions"),
    "scan dest inside the inputs": ([*SCAN, "--action", "copy", "--dest", "images/sub"], "inside the scanned folder"),
    "eval no OOD set": (["eval", "--id", "images", "--classes", "classes.txt"], "at least one OOD set"),
    "eval missing OOD folder": (["eval", "--id", "images", "--ood", "nowhere", "--classes", "classes.txt",
                                 "--model", "test-tiny"], "'nowhere' does not exist"),
    "eval missing class file": (["eval", "--id", "images", "--ood", "images", "--classes", "missing.txt",
                                 "--model", "test-tiny"], "missing.txt does not exist"),
    "eval unknown method": (["eval", "--id", "images", "--ood", "images", "--classes", "classes.txt",
                             "--model", "test-tiny", "--methods", "nonsense"], "unknown scorers 'nonsense'"),
    "eval existing --out": (["eval", "--id", "images", "--ood", "empty", "--classes", "classes.txt", "--out",
                             "taken.jsonl"], "already exists"),
    "robustness no OOD set": (["robustness", "--id", "images", "--classes", "classes.txt"], "OOD images"),
    "robustness missing class file": (["robustness", "--id", "images", "--ood", "images", "--classes", "missing.txt",
                                       "--model", "test-tiny"], "missing.txt does not exist"),
    "rescore missing manifest": (["rescore", "gone.jsonl", "--classes", "classes.txt", "--out", "r.jsonl"],
                                 "gone.jsonl is missing or has no rows"),
    "rescore missing class file": (["rescore", "gone.jsonl", "--classes", "missing.txt", "--out", "r.jsonl"],
                                   "missing.txt does not exist"),
    "finetune no data": (["finetune", "--out", "ft"], "no training data"),
    "convert missing checkpoint": (["convert-clipn", "gone.pt", "bundle"], "checkpoint gone.pt does not exist"),
    "download unknown name": (["download", "nonsense"], "'nonsense' is not in the model catalogue"),
    "undo missing journal": (["undo", "gone.journal.jsonl"], "does not exist"),
}
if "plp" in _fitters():
    ERRORS["fit plp too few images"] = (["fit", "plp", "--images", "empty", "--classes", "classes.txt", "--model",
                                         "test-tiny"], "at least two ID images")


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_that_need_no_model_import_nothing_heavy(case, files):
    args, message = ERRORS[case]
    code, heavy, output = run_cli(*args, cwd=files)
    assert code == 2, output
    assert message in output, output
    assert heavy == [], f"{case}: imported {heavy}"


def test_apply_decides_and_acts_without_torch(tmp_path):
    """`oodfilter apply` scores nothing: a whole run (and its refusals) imports no model library."""
    (tmp_path / "images").mkdir()
    rows = []
    for index, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (32, 24), colour).save(tmp_path / "images" / f"{index}.png")
        rows.append({"path": f"images/{index}.png", "status": "ok", "error": None, "ood_score": index / 2,
                     "is_ood": None, "top_class": "tench", "top_prob": 0.5})
    (tmp_path / "scan.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "scan.jsonl.meta.json").write_text(json.dumps({"cwd": str(tmp_path), "method": "mcm"}))
    (tmp_path / "scan.jsonl.config.yaml").write_text("inputs:\n- images\n")  # what the scan read, as a scan records it
    code, heavy, output = run_cli("apply", "scan.jsonl", "--action", "copy", "--dest", "images/sub", "--threshold",
                                  "0.4", cwd=tmp_path)
    assert (code, heavy) == (2, []) and "inside the scanned folder" in output, output
    code, heavy, output = run_cli("apply", "scan.jsonl", "--action", "copy", "--dest", "copied", "--threshold", "0.4",
                                  cwd=tmp_path)
    assert (code, heavy) == (0, []), output
    assert sorted(path.name for path in (tmp_path / "copied").iterdir()) == ["1.png", "2.png"]
