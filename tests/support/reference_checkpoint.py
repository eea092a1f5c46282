"""Writes a checkpoint in the reference CLIPN release's layout from a model (shared by several test files)."""

from __future__ import annotations

import torch

_NO_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def _reference_layout_checkpoint(model, path, *, drop=(), extra=None):
    """Write ``model`` the way the reference training code saves CLIPN: DataParallel keys, *_no names."""
    state = {}
    for key, value in model.clip.state_dict().items():
        state[f"module.{key}"] = value.clone()
    for key, value in model.no_tower.state_dict().items():
        head, _, rest = key.partition(".")
        if head == "prompts":
            state["module.prompt_no"] = value.clone()
        else:
            assert head in _NO_KEYS
            state[f"module.{head}_no" + (f".{rest}" if rest else "")] = value.clone()
    for key in drop:
        state.pop(key)
    state.update(extra or {})
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 3e-4}]}
    torch.save({"epoch": 10, "name": "CLIPN_ATD", "state_dict": state, "optimizer": optimizer,
                "scaler": {"scale": 65536.0}}, path)
    return path
