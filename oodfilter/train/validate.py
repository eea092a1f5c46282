"""Validation of the no-branch on held-out pairs: losses and how well "no" separates mismatched captions."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from oodfilter.evaluate.metrics import auroc
from oodfilter.model.clipn import CLIPN
from oodfilter.train.data import CaptionDataset, collate_pairs
from oodfilter.train.losses import clipn_loss, yes_no_logits


@torch.no_grad()
def validate(model: CLIPN, dataset: CaptionDataset, *, batch_size: int, device: torch.device) -> dict[str, float]:
    """Return held-out losses and the CTW separation AUROC of mismatched vs matched pairs.

    The AUROC scores every (image i, caption j) pair of each batch by pⁿᵒ_ij = σ(−z_ij), the CTW "no"
    probability; matched pairs (i = j) should score low and mismatched ones (captions of another class
    or text) high. An untrained no-branch gives exactly 0.5. The AUROC is left out when the held-out
    pairs hold no mismatched pair.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs)
    totals = {"loss": 0.0, "match": 0.0, "mismatch": 0.0, "tso": 0.0}
    matched, mismatched = [], []
    batches = 0
    try:
        for batch in loader:
            if batch["image"] is None or batch["image"].shape[0] < 2:
                continue
            f = model.encode_image(batch["image"].to(device))
            tokens = batch["tokens"].to(device)
            g, g_no = model.encode_text(tokens), model.encode_text_no(tokens)
            groups = batch["group"].to(device)
            parts = clipn_loss(f, g, g_no, model.logit_scale, groups=groups)
            for key, value in zip(totals, parts, strict=True):
                totals[key] += float(value)
            p_no = torch.sigmoid(-yes_no_logits(f, g, g_no, model.logit_scale)).cpu()  # (N, N)
            same = (groups[:, None] == groups[None, :]).cpu()  # pairs whose caption fits the image
            matched.append(p_no[torch.eye(p_no.shape[0], dtype=torch.bool)])
            mismatched.append(p_no[~same])
            batches += 1
    finally:
        model.train(was_training)
    if not batches:
        return {}
    metrics = {f"val_{key}": value / batches for key, value in totals.items()}
    matched_all, mismatched_all = torch.cat(matched), torch.cat(mismatched)
    if matched_all.numel() and mismatched_all.numel():  # a split of one caption group has no mismatched pair
        metrics["val_ctw_auroc"] = auroc(matched_all.numpy(), mismatched_all.numpy())
    return metrics
