"""Plugins read from their source: what they register, and why they would not load, without importing them."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest

from oodfilter import registry as registry_module
from oodfilter.plugin_inspect import inspect_entry_point, survey
from oodfilter.registry import Registry


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """A folder on sys.path to write fake plugin packages into; the packages are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("fakeplug")]:
        del sys.modules[name]


def _package(root, name, files):
    folder = root / name
    folder.mkdir()
    for file, text in {"__init__.py": "", **files}.items():
        (folder / file).write_text(textwrap.dedent(text))


def _entry(name, value, group="oodfilter.scorers"):
    return metadata.EntryPoint(name=name, value=value, group=group)


GOOD = {
    "__init__.py": "from fakeplug_good.scorer import Fancy\n",
    "scorer.py": """
        import os  # a dependency that is installed
        from typing import ClassVar

        from oodfilter.scoring.methods import ScoreMethod
        from . import helpers

        class Base(ScoreMethod):
            threshold_free = True

        class Fancy(Base):
            name: ClassVar[str] = "fancy"
            needs_no_branch = True

            def __call__(self, batch):
                return helpers.score(batch)

        class Plain(ScoreMethod):
            def __call__(self, batch):
                return None
        """,
    "helpers.py": "def score(batch):\n    return batch\n",
}


def test_attributes_are_read_from_source_without_importing(plugin_root):
    _package(plugin_root, "fakeplug_good", GOOD)
    wanted = ("needs_no_branch", "threshold_free", "name")
    info = inspect_entry_point(_entry("fancy", "fakeplug_good.scorer:Fancy"), wanted)
    assert info.problem is None and info.complete
    assert info.attributes == {"needs_no_branch": True, "threshold_free": True, "name": "fancy"}
    plain = inspect_entry_point(_entry("plain", "fakeplug_good.scorer:Plain"), wanted)
    assert plain.attributes == {"needs_no_branch": False, "threshold_free": False}  # the host's defaults
    assert not any(name.startswith("fakeplug") for name in sys.modules)


@pytest.mark.parametrize(("files", "target", "problem"), [
    ({"scorer.py": "import fakeplug_missing_dependency\nclass S: pass\n"}, "scorer:S",
     "ModuleNotFoundError: No module named 'fakeplug_missing_dependency'"),
    ({"scorer.py": "from .helpers import x\nclass S: pass\n",
      "helpers.py": "import fakeplug_deep_dependency\nx = 1\n"}, "scorer:S",
     "ModuleNotFoundError: No module named 'fakeplug_deep_dependency'"),
    ({"__init__.py": "import fakeplug_init_dependency\n", "scorer.py": "class S: pass\n"}, "scorer:S",
     "ModuleNotFoundError: No module named 'fakeplug_init_dependency'"),
    ({"scorer.py": "class S: pass\n"}, "gone:S", "ModuleNotFoundError: No module named 'fakeplug_bad.gone'"),
    ({"scorer.py": "class S: pass\n"}, "scorer:Missing",
     "AttributeError: module 'fakeplug_bad.scorer' has no attribute 'Missing'"),
    ({"scorer.py": "class S(:\n"}, "scorer:S", "SyntaxError"),
])
def test_a_plugin_that_would_not_load_is_reported(plugin_root, files, target, problem):
    _package(plugin_root, "fakeplug_bad", files)
    info = inspect_entry_point(_entry("bad", f"fakeplug_bad.{target}"), ("needs_no_branch",))
    assert info.problem is not None and info.problem.startswith(problem), info.problem
    assert "fakeplug_bad" not in sys.modules


def test_survey_lists_builtins_and_plugins_and_failures_without_loading(plugin_root, monkeypatch):
    _package(plugin_root, "fakeplug_good", GOOD)
    entries = [_entry("fancy", "fakeplug_good.scorer:Fancy", "oodfilter.things"),
               _entry("broken", "fakeplug_good.nothing:X", "oodfilter.things")]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: entries)
    points: Registry[object] = Registry("things")

    class Builtin:
        needs_no_branch = False

    points.add("builtin", Builtin)
    found = survey(points, ("needs_no_branch",))
    assert found.entries == {"builtin": ("builtin", {"needs_no_branch": False}),
                             "fancy": ("unknown distribution", {"needs_no_branch": True})}
    assert list(found.failures) == ["broken"] and "No module named 'fakeplug_good.nothing'" in found.failures["broken"]
    assert "fakeplug_good" not in sys.modules and not points._discovered


def test_survey_loads_the_plugins_when_the_source_cannot_tell(plugin_root, monkeypatch):
    source = "import os\nclass S:\n    needs_no_branch = bool(os.sep)\n"  # only running it tells
    _package(plugin_root, "fakeplug_dynamic", {"scorer.py": source})
    entries = [_entry("dynamic", "fakeplug_dynamic.scorer:S", "oodfilter.things")]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: entries)
    points: Registry[object] = Registry("things")
    found = survey(points, ("needs_no_branch",))
    assert found.entries == {"dynamic": ("unknown distribution", {"needs_no_branch": True})}
    assert "fakeplug_dynamic.scorer" in sys.modules  # loaded, as every command that uses it would


def test_check_known_and_peek_load_no_plugin(plugin_root, monkeypatch):
    entries = [_entry("fancy", "fakeplug_never.scorer:Fancy", "oodfilter.things"),
               _entry("builtin", "fakeplug_never.scorer:Replacement", "oodfilter.things")]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: entries)
    points: Registry[object] = Registry("things")
    points.add("builtin", 1)
    points.add("other", 2)
    points.check_known("FANCY")  # declared by an entry point: known without loading it
    with pytest.raises(registry_module.UnknownNameError,
                       match="unknown things 'nope'; registered: builtin, fancy, other"):
        points.check_known("nope")
    assert points.peek("other") == 2
    assert points.peek("builtin") is None  # a plugin would replace it: only loading tells
    assert points.peek("fancy") is None
    assert not points._discovered
