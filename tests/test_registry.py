"""Registries: registration, lookup errors, overwrite warnings and broken plugins."""

from __future__ import annotations

import pytest

from oodfilter import registry as registry_module
from oodfilter.errors import UnknownNameError
from oodfilter.registry import Registry


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self._target, self.dist = name, target, None

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_register_get_create_list():
    points = Registry("things")

    @points.register("Double")
    def double(x):
        return 2 * x

    assert points.get("double") is double
    assert points.create("double", 4) == 8
    assert points.list() == ["double"] and "DOUBLE" in points
    with pytest.raises(UnknownNameError, match="unknown things 'triple'; registered: double"):
        points.get("triple")


def test_overwrite_warns():
    points = Registry("things")
    points.add("a", 1)
    with pytest.warns(UserWarning, match="'a' from builtin is replaced by one from plugin-x"):
        points.add("a", 2, source="plugin-x")
    assert points.get("a") == 2


def test_broken_plugin_is_reported_and_skipped(monkeypatch):
    def entry_points(group):
        assert group == "oodfilter.things"
        return [_EntryPoint("good", 42), _EntryPoint("bad", ImportError("no module named 'torch_extra'"))]

    monkeypatch.setattr(registry_module.metadata, "entry_points", entry_points)
    points = Registry("things")
    assert points.list() == ["good"]
    assert points.get("good") == 42
    assert "no module named 'torch_extra'" in points.failures["bad"]
