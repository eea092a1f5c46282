"""The public surface: explicit, sorted, importable."""

from __future__ import annotations

import oodfilter


def test_all_is_sorted_and_every_name_exists():
    assert oodfilter.__all__ == sorted(oodfilter.__all__)
    for name in oodfilter.__all__:
        assert hasattr(oodfilter, name), name


def test_every_error_derives_from_the_base():
    for name in ("InputError", "ClassListError", "ModelLoadError", "CheckpointError", "ModelMismatchError",
                 "MissingDependencyError", "UnknownNameError", "UnsupportedModelError", "ImageDecodeError"):
        assert issubclass(getattr(oodfilter, name), oodfilter.OODFilterError), name


def test_lazy_exports_match_all():
    assert set(oodfilter.__all__) - {"__version__"} == set(oodfilter._EXPORTS)
    import subprocess
    import sys

    code = "import sys, oodfilter; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
