"""The CLIPN model: a frozen open_clip CLIP plus a trainable no-text tower."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oodfilter.model.fingerprint import tensors_fingerprint
from oodfilter.model.hf_text import hf_text_tower, hf_tokenizer_digest
from oodfilter.model.no_prompts import DEFAULT_NUM_PROMPTS, PromptedNoTower
from oodfilter.model.text_cut import yes_token_lengths
from oodfilter.model.text_parts import encode_with_parts, text_parts
from oodfilter.model.towers import build_no_tower, yes_tower_identity

Tokenizer = Callable[..., torch.Tensor]
TOWERS = ("yes", "no")


@dataclass
class ModelSource:
    """Where a model came from, recorded in bundles and manifests.

    Attributes:
        name: open_clip model name (``ViT-B-16``, ``hf-hub:org/repo``, ``test-tiny``) or bundle path.
        pretrained: Pretrained tag or weights file for ``name``, if any.
        kind: ``open_clip``, ``bundle`` or ``reference-checkpoint``.
        details: Extra provenance (checkpoint hash, epoch, ...).

    """

    name: str
    pretrained: str | None = None
    kind: str = "open_clip"
    details: dict[str, Any] = field(default_factory=dict)


class CLIPN(nn.Module):
    """CLIP saying no: a frozen open_clip model with a second, trainable "no" text tower.

    Args:
        clip: An open_clip ``CLIP``, or a ``CustomTextCLIP`` with a CLIP or Hugging Face text tower;
            frozen here.
        tokenizer: The tokenizer that goes with ``clip`` (``open_clip.get_tokenizer``).
        model_config: The open_clip model config (``model_cfg``) that rebuilds ``clip``.
        preprocess: The eval image transform (PIL image → (3, H, W) tensor).
        source: Provenance of the weights.
        num_prompts: Number of learnable no-prompts.
        no_branch_trained: Whether the no-tower holds trained weights (False for a fresh copy, whose
            "no" logits equal the "yes" logits and carry no information).

    """

    def __init__(
        self,
        clip: nn.Module,
        tokenizer: Tokenizer,
        *,
        model_config: dict[str, Any],
        preprocess: Callable[[Any], torch.Tensor],
        source: ModelSource | None = None,
        num_prompts: int = DEFAULT_NUM_PROMPTS,
        no_branch_trained: bool = False,
    ) -> None:
        super().__init__()
        self.clip: Any = clip  # open_clip CLIP or CustomTextCLIP
        self.no_tower: PromptedNoTower = build_no_tower(clip, tokenizer, num_prompts=num_prompts)
        self.clip.requires_grad_(False)
        self.clip.eval()
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.preprocess: Callable[[Any], torch.Tensor] = preprocess
        self.source = source or ModelSource(name="unknown")
        self.no_branch_trained = no_branch_trained
        self._fingerprints: dict[str, tuple[Any, str]] = {}
        self._tokenizer_ids: tuple[Any, str] | None = None
        self.train(False)
        self.training_config: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> CLIPN:
        """Set training mode on the no-tower only; the frozen CLIP always stays in eval mode.

        The no-tower's weights require gradients only in training mode: in eval mode its transformer
        then runs the same inference kernels as the frozen yes tower (an untrained copy gives bitwise
        the same features, and inference is faster).
        """
        super().train(mode)
        self.clip.eval()
        self.no_tower.requires_grad_(mode)
        return self

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return self.no_tower.prompts.device

    @property
    def logit_scale(self) -> float:
        """The fixed logit scale s = exp(logit_scale) of the frozen CLIP."""
        return float(self.clip.logit_scale.detach().exp().item())

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint embedding space."""
        return self.no_tower.output_dim

    @property
    def image_size(self) -> int:
        """Side length in pixels of the model's square input images."""
        size = getattr(self.clip.visual, "image_size", 224)
        return int(size[0] if isinstance(size, tuple | list) else size)

    def tokenize(self, texts: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Tokenize texts with the model's tokenizer, (N, L) on ``device`` (default: the model's)."""
        return self.tokenizer(list(texts)).to(self.device if device is None else device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Encode preprocessed images (B, 3, H, W) to L2-normalised features (B, D)."""
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encode token ids (B, L) with the yes tower ψ to L2-normalised features (B, D).

        ``L`` may be below the context length (a batch cut to its longest text, see :meth:`token_lengths`).
        """
        if hf_text_tower(self.clip) is None:
            parts = text_parts(self.clip)
            if tokens.shape[-1] < parts.positional_embedding.shape[0]:  # open_clip's encode_text takes full contexts
                return F.normalize(encode_with_parts(parts, tokens), dim=-1)
        return F.normalize(self.clip.encode_text(tokens), dim=-1)

    def encode_text_no(self, tokens: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids (B, L) with the no tower ψⁿᵒ to L2-normalised features (B, D).

        ``choice`` selects a prompt option per text (see :meth:`PromptedNoTower.select_prompts`).
        """
        return self.no_tower(tokens, choice)

    def token_lengths(self, tokens: torch.Tensor, tower: str) -> torch.Tensor | None:
        """Return how many token positions each text of ``tokens`` (B, L) needs in ``tower``, (B,), or None.

        Encoding a batch cut to its largest length gives the same features as the full context (see
        :mod:`oodfilter.model.text_cut`); None means the tower needs every position.
        """
        if tower == "yes":
            return yes_token_lengths(self.clip, tokens)
        if tower == "no":
            return self.no_tower.token_lengths(tokens)
        raise ValueError(f"unknown tower '{tower}'; expected one of {TOWERS}")

    def encode(self, tokens: torch.Tensor, tower: str) -> torch.Tensor:
        """Encode token ids (B, L) with the ``yes`` or ``no`` tower to L2-normalised features (B, D).

        The batch is cut to the token positions its longest text needs (:meth:`token_lengths`), where
        that gives the same features; the rest of the context is not computed.
        """
        lengths = self.token_lengths(tokens, tower)
        if lengths is not None and lengths.numel():
            tokens = tokens[:, : int(lengths.max())]
        if tower == "yes":
            return self.encode_text(tokens)
        if tower == "no":
            return self.encode_text_no(tokens)
        raise ValueError(f"unknown tower '{tower}'; expected one of {TOWERS}")

    def text_fingerprint(self, tower: str) -> str:
        """Fingerprint of everything that determines the ``tower``'s text vectors (weights, tokenizer)."""
        tokenizer_id = self._tokenizer_id()
        if tower == "no":
            named = list(self.no_tower.state_dict().items())
            extra = f"no|{self.no_tower.settings_id()}|{tokenizer_id}"
        elif tower == "yes":
            named, settings = yes_tower_identity(self.clip)
            extra = f"yes|{settings}|{tokenizer_id}"
        else:
            raise ValueError(f"unknown tower '{tower}'; expected one of {TOWERS}")
        # Hashing a ViT-B-16 text tower takes a fraction of a second; repeat it only when a tensor was
        # replaced (data pointer) or written in place (autograd's version counter).
        state = (extra, tuple((name, t.data_ptr(), t._version) for name, t in named))
        cached = self._fingerprints.get(tower)
        if cached is not None and cached[0] == state:
            return cached[1]
        fingerprint = tensors_fingerprint(named, extra=extra)
        self._fingerprints[tower] = (state, fingerprint)
        return fingerprint

    def image_fingerprint(self) -> str:
        """Fingerprint of the image tower's weights and preprocessing: what decides the image features."""
        named = list(self.clip.visual.state_dict().items())
        extra = "image|" + re.sub(r" at 0x[0-9a-fA-F]+", "", repr(self.preprocess))  # no memory addresses
        state = (extra, tuple((name, t.data_ptr(), t._version) for name, t in named))
        cached = self._fingerprints.get("image")
        if cached is not None and cached[0] == state:
            return cached[1]
        fingerprint = tensors_fingerprint(named, extra=extra)
        self._fingerprints["image"] = (state, fingerprint)
        return fingerprint

    def _tokenizer_id(self) -> str:
        """Return what identifies the tokenizer; for an HF tower also its vocabulary and normalisation (cached)."""
        tokenizer_id = f"{type(self.tokenizer).__name__}:{getattr(self.tokenizer, 'context_length', '')}"
        if hf_text_tower(self.clip) is None:
            return tokenizer_id
        if self._tokenizer_ids is None or self._tokenizer_ids[0] is not self.tokenizer:
            self._tokenizer_ids = (self.tokenizer, f"{tokenizer_id}:{hf_tokenizer_digest(self.tokenizer)}")
        return self._tokenizer_ids[1]
