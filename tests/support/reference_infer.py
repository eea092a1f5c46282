"""CLIPN's reference evaluation, re-done by hand from a reference-layout checkpoint (no oodfilter code).

The reference (xmed-lab/CLIPN, src/classification.py and src/zero_shot_infer.py) reads its prompt file with
``readlines()``, drops the newline, formats each line with the class name and tokenizes it at 77 tokens, quotes
and all; it sums the normalised per-template vectors of each tower and normalises; logits are ``100 · f Wᵀ``;
CTW's ID score is σ(ℓʸᵉˢ − ℓⁿᵒ) at the argmax class and ATD's is Σ_c σ(ℓʸᵉˢ_c − ℓⁿᵒ_c) softmax(ℓʸᵉˢ)_c.
``reference_prompt.txt`` beside this file is the reference's ``src/prompt/prompt.txt`` byte for byte (CRLF).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

REFERENCE_PROMPTS = Path(__file__).with_name("reference_prompt.txt")
_NO_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def reference_captions(class_names: list[str]) -> list[list[str]]:
    """Captions per template, as the reference makes them: ``line.replace("\\n", "").format(name)``."""
    with open(REFERENCE_PROMPTS) as file:  # text mode: universal newlines, as the reference opens it
        lines = file.readlines()
    return [[line.replace("\n", "").format(name) for name in class_names] for line in lines]


def _towers(checkpoint: Path, architecture: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """The yes CLIP, a CLIP holding the no-tower's weights, and the no-prompts, from the checkpoint's keys."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    prompts = state.pop("prompt_no")
    no_state = {}
    for key in [key for key in state if key.split(".")[0].removesuffix("_no") in _NO_PARTS and
                key.split(".")[0].endswith("_no")]:
        head, _, rest = key.partition(".")
        no_state[head.removesuffix("_no") + (f".{rest}" if rest else "")] = state.pop(key)
    yes = open_clip.create_model(architecture).eval()
    yes.load_state_dict(state, strict=True)
    no = open_clip.create_model(architecture).eval()
    no.load_state_dict({**state, **no_state}, strict=True)
    return yes, no, prompts


def _encode_no(no: torch.nn.Module, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    x = no.token_embedding(tokens) + no.positional_embedding + prompt  # (N, L, W)
    x = no.ln_final(no.transformer(x, attn_mask=no.attn_mask))
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ no.text_projection  # (N, D)


@torch.no_grad()
def reference_scores(checkpoint: Path, architecture: str, class_names: list[str],
                     images: list[Path]) -> dict[str, dict[str, float]]:
    """Return per image path: the reference's CTW and ATD ID scores and its top class index."""
    yes, no, prompts = _towers(checkpoint, architecture)
    prompt = prompts.mean(dim=0)  # inference uses the mean of the learnable no-prompts
    w_yes = torch.zeros(len(class_names), yes.text_projection.shape[1])
    w_no = torch.zeros_like(w_yes)
    for captions in reference_captions(class_names):
        tokens = open_clip.tokenize(captions, 77)
        w_yes += F.normalize(yes.encode_text(tokens), dim=-1)
        w_no += F.normalize(_encode_no(no, prompt, tokens), dim=-1)
    w_yes, w_no = F.normalize(w_yes, dim=-1), F.normalize(w_no, dim=-1)
    _, _, preprocess = open_clip.create_model_and_transforms(architecture)
    results = {}
    for path in images:
        pixels = preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
        f = F.normalize(yes.encode_image(pixels), dim=-1)
        logits, logits_no = 100.0 * f @ w_yes.T, 100.0 * f @ w_no.T  # (1, C)
        yesno = torch.softmax(torch.stack([logits, logits_no], dim=-1), dim=-1)[..., 0]  # (1, C)
        top = logits.argmax(dim=-1, keepdim=True)
        results[str(path)] = {"ctw": float(yesno.gather(1, top)), "atd": float((yesno * logits.softmax(-1)).sum()),
                              "top": int(top)}
    return results
