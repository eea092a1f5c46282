"""``python -m oodfilter.cli``: the same as the ``oodfilter`` command."""

from oodfilter.cli.main import main

main()
