"""The compact set of seen paths that tells a manifest reader a repeated path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oodfilter.sinks.path_set import PathSet


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12) | st.sampled_from(["a.jpg", "b.jpg", "\udcff.jpg", ""]), max_size=3000))
def test_it_answers_as_a_set_of_the_paths_does(paths):
    seen, expected = PathSet(), set()
    for path in paths:
        assert seen.add(path) == (path not in expected)
        expected.add(path)
    assert len(seen) == len(expected)


def test_it_grows_past_its_first_table_and_keeps_every_path():
    seen = PathSet()
    paths = [f"/data/shard-{i // 1000:04d}/{i:08d}.jpg" for i in range(20_000)]
    assert all(seen.add(path) for path in paths)
    assert not any(seen.add(path) for path in paths[::7])
    assert len(seen) == 20_000
