"""Adversarial robustness of OOD filtering: PGD perturbations of OOD images that try to pass as in-distribution.

:mod:`~oodfilter.robustness.pgd` holds the attack as pure tensor functions, :mod:`~oodfilter.robustness.objectives`
what it minimises (a method's own score, or the distance of an image's feature to an ID target), and
:mod:`oodfilter.evaluate.robustness` the measurement a user runs (``oodfilter robustness``).
"""
