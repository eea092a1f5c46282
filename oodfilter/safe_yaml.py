"""YAML that a user hands us, loaded with ``SafeLoader`` and with aliases that cannot multiply without bound.

PyYAML's safe loader shares an anchored value between its aliases, so a 400-byte "billion laughs" file
loads in microseconds; but anything that then walks the value (converting it, comparing it, quoting it in
a message) walks every repetition: hundreds of millions of items. Such a file is refused before it is
built: the document's node graph is measured as if every alias were written out, and more than
:data:`MAX_EXPANDED_NODES` nodes, or an alias inside its own anchor, is an error naming the file. Aliases
as people use them (one list named twice) stay allowed; a config file never comes near the limit.
"""

from __future__ import annotations

from typing import Any

import yaml

from oodfilter.errors import InputError

MAX_EXPANDED_NODES = 100_000


class YamlAliasError(InputError):
    """A YAML document whose aliases expand past the limit, or refer to themselves."""


def load_yaml(text: str, source: str) -> Any:
    """Return the document in ``text`` (None when empty), loaded with ``yaml.SafeLoader``.

    Args:
        text: The YAML text.
        source: What the text is, for messages (e.g. ``config file /path/x.yaml``).

    Raises:
        yaml.YAMLError: the text is not YAML (the caller words that for its file).
        YamlAliasError: its aliases expand to more than :data:`MAX_EXPANDED_NODES` nodes, or loop.

    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a node graph that is larger than the limit once every alias is written out, or that loops."""
    sizes: dict[int, int] = {}  # id(node) → nodes in its expansion (a shared node is measured once)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # depth-first without recursion: a deep document cannot exhaust Python's stack
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(MAX_EXPANDED_NODES + 1, 1 + sum(sizes[id(child)] for child in _children(node)))
            if sizes[key] > MAX_EXPANDED_NODES:
                raise YamlAliasError(f"{source}: its YAML aliases (*name) expand to more than "
                                     f"{MAX_EXPANDED_NODES} values; write the values out, or use fewer aliases")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlAliasError(f"{source}: a YAML alias (*name) is used inside its own anchor (&name), which "
                                 "makes a value that contains itself; write the value out instead")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
