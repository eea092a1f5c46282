"""Pseudo-label probing (PLP) for oodfilter."""

from oodfilter_plp.probe import LinearProbe, fit_probe, probe_cache_path
from oodfilter_plp.scorer import PLP, fit_plp

__all__ = ["PLP", "LinearProbe", "fit_plp", "fit_probe", "probe_cache_path"]
