"""Evaluation: detection metrics (and, later, the eval runner)."""
