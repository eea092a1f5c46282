"""Fast prompt encoding is exact: batches cut to their longest caption give the full-context vectors, in order.

Every tower kind (CLIP-style and Hugging Face, yes and no towers with their no-prompts) is compared with
its full-context path (``encode_text`` / ``encode_text_no`` on the tokenizer's full output); a tower that
cannot be cut exactly must fall back to the full context rather than give other vectors.
"""

from __future__ import annotations

import pytest
import torch

import oodfilter
from oodfilter.model.registration import TINY_HF_CONTEXT_LENGTH, TINY_HF_MODEL_NAME
from oodfilter.model.text_cut import hf_token_lengths, is_causal_mask
from oodfilter.model.text_parts import encode_with_parts, text_parts
from oodfilter.text.encoding import EncodePlan, encode_captions
from oodfilter.text.templates import resolve_templates

# Varied lengths: an empty caption (start and end tokens only), short and long ones, and one longer than
# any context, which the tokenizer truncates to the full context.
CAPTIONS = [
    "a photo of a tench.",
    "",
    "a bad photo of the great white shark swimming near a coral reef at dusk.",
    "hen",
    "itap of a goldfish.",
    "a photo of a " + "very " * 120 + "long caption",
    "art of the ostrich.",
    "a drawing of a small brambling, perched on a branch in the snow.",
]


@pytest.fixture(scope="module")
def hf_model():
    return oodfilter.load_model(TINY_HF_MODEL_NAME, device="cpu")


def _full_context(model, tower, captions):
    """The reference: every caption at the tokenizer's full context, through the unchanged towers."""
    tokens = model.tokenize(captions)
    with torch.no_grad():
        return (model.encode_text(tokens) if tower == "yes" else model.encode_text_no(tokens)).numpy()


@pytest.mark.parametrize("kind", ["clip", "hf"])
@pytest.mark.parametrize("tower", ["yes", "no"])
def test_cut_batches_give_the_full_context_vectors_in_order(kind, tower, tiny_model, hf_model):
    model = tiny_model if kind == "clip" else hf_model
    context = 77 if kind == "clip" else TINY_HF_CONTEXT_LENGTH
    if tower == "no":  # the no-prompts are non-zero, so they matter, and cut to the batch too
        assert model.no_tower.prompts.abs().sum() > 0 and model.no_tower.context_length == context
    plan = EncodePlan(model, tower, CAPTIONS, batch_size=3)
    widths = [width for _, width in plan.batches]
    assert plan.cut and widths[0] == context  # the truncated caption fills the context: its batch is not cut
    assert widths == sorted(widths, reverse=True) and widths[-1] < context // 2  # longest first; short ones cut
    fast = encode_captions(model, tower, CAPTIONS, batch_size=3, precision="fp32")
    full = _full_context(model, tower, CAPTIONS)
    assert abs(fast - full).max() < 1e-5
    # the rows are the callers' captions, not the sorted order: each matches its own caption only
    distances = ((fast[:, None] - full[None]) ** 2).sum(-1)
    assert (distances.argmin(axis=1) == list(range(len(CAPTIONS)))).all()
    reverse = encode_captions(model, tower, CAPTIONS[::-1], batch_size=3, precision="fp32")
    assert abs(reverse - full[::-1]).max() < 1e-5


def test_cut_batches_cost_a_fraction_of_the_context(tiny_model):
    captions = [f"a photo of a {name}." for name in ("tench", "goldfish", "hen", "ostrich", "great white shark")]
    plan = EncodePlan(tiny_model, "yes", captions, batch_size=2)
    assert plan.positions <= len(captions) * 12  # every caption needs at most 12 of the 77 positions


def test_token_lengths_end_at_each_pooled_token(tiny_model, hf_model):
    tokens = tiny_model.tokenize(["", "a photo of a tench.", "hen"])
    eot = tokens.argmax(dim=-1)  # CLIP pools at the end-of-text token, the largest id
    assert tiny_model.token_lengths(tokens, "yes").tolist() == (eot + 1).tolist() == [2, 9, 3]  # "tench": 2 tokens
    assert tiny_model.token_lengths(tokens, "no").tolist() == [2, 9, 3]
    hf_tokens = hf_model.tokenize(["", "hen"])
    lengths = hf_model.token_lengths(hf_tokens, "yes")
    pad = hf_model.clip.text.config.pad_token_id
    for row, length in zip(hf_tokens, lengths.tolist(), strict=True):  # the last non-padding token is the last kept
        assert row[length - 1] != pad and (row[length:] == pad).all()


def test_a_tower_without_a_causal_mask_is_encoded_at_the_full_context(fresh_tiny_model):
    model = fresh_tiny_model
    model.clip.attn_mask = None  # bidirectional: every position sees the padding
    model.no_tower.attn_mask = None
    tokens = model.tokenize(CAPTIONS[:2])
    assert model.token_lengths(tokens, "yes") is None and model.token_lengths(tokens, "no") is None
    full = torch.from_numpy(_full_context(model, "yes", CAPTIONS[:2]))
    with torch.no_grad():  # what a cut would give: other vectors, which the fallback never returns
        cut = torch.nn.functional.normalize(encode_with_parts(text_parts(model.clip), tokens[:, :8]), dim=-1)
    assert (cut - full).abs().max() > 1e-3
    assert not EncodePlan(model, "yes", CAPTIONS[:2], batch_size=2).cut
    for tower in ("yes", "no"):
        fast = encode_captions(model, tower, CAPTIONS[:2], precision="fp32")
        assert abs(fast - _full_context(model, tower, CAPTIONS[:2])).max() < 1e-6


@pytest.mark.parametrize("pool_type", ["last", "none"])
def test_poolings_that_read_the_padding_are_not_cut(fresh_tiny_model, pool_type):
    fresh_tiny_model.clip.text_pool_type = pool_type
    assert fresh_tiny_model.token_lengths(fresh_tiny_model.tokenize(["hen"]), "yes") is None


def test_max_pooled_hf_tower_is_not_cut(hf_model):
    from open_clip.hf_model import MaxPooler

    tower = hf_model.clip.text
    tokens = hf_model.tokenize(["hen", "a photo of a goldfish"])
    assert hf_token_lengths(tower, tokens) is not None
    original = tower.pooler
    try:
        tower.pooler = MaxPooler()  # open_clip's max pooler pools over the padding
        assert hf_token_lengths(tower, tokens) is None
        assert hf_model.token_lengths(tokens, "yes") is None
    finally:
        tower.pooler = original


def test_causal_mask_check():
    causal = torch.full((4, 4), float("-inf")).triu(1)
    assert is_causal_mask(causal, 4)
    assert not is_causal_mask(causal, 5) and not is_causal_mask(None, 4)
    assert not is_causal_mask(torch.zeros(4, 4), 4)  # attends to every position
    leaky = causal.clone()
    leaky[0, 3] = 0.0
    assert not is_causal_mask(leaky, 4)


def _hf_config(kind):
    import transformers

    small = dict(vocab_size=60, pad_token_id=1)
    if kind == "mt5":
        return transformers.MT5Config(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, **small)
    if kind == "m2m_100":
        return transformers.M2M100Config(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                         max_position_embeddings=40, **small)
    config = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
              "xlm-roberta": transformers.XLMRobertaConfig}[kind]
    return config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=40, **small)


@pytest.mark.slow
@pytest.mark.parametrize("pooler", ["mean_pooler", "cls_pooler"])
@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "mt5", "m2m_100"])
def test_every_hf_architecture_that_is_cut_gives_the_full_context_features(kind, pooler):
    pytest.importorskip("transformers")
    from open_clip.hf_model import HFTextEncoder

    config = _hf_config(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = HFTextEncoder("unused", output_dim=8, config=config, pooler_type=pooler, proj_type="linear").eval()
    if config.is_encoder_decoder:  # as open_clip builds such a tower from a model name
        tower.transformer = tower.transformer.encoder
    tokens = torch.randint(3, 60, (4, 32), generator=torch.Generator().manual_seed(0))
    for row, used in enumerate((5, 12, 2, 20)):
        tokens[row, used:] = config.pad_token_id
    lengths = hf_token_lengths(tower, tokens)
    assert lengths is not None and lengths.tolist() == [5, 12, 2, 20]
    with torch.no_grad():
        full, cut = tower(tokens), tower(tokens[:, : int(lengths.max())])
    assert (full - cut).abs().max() < 1e-5


def test_a_cold_build_tokenizes_its_captions_once_for_both_towers(tiny_model, cache_dir, monkeypatch):
    tokenized: list[int] = []
    original = tiny_model.tokenize

    def counting(texts, device=None):
        tokenized.append(len(texts))
        return original(texts, device=device)

    monkeypatch.setattr(tiny_model, "tokenize", counting)
    names = ["tench", "goldfish", "hen"]
    vectors = oodfilter.build_class_vectors(tiny_model, names, templates="ensemble", cache_dir=cache_dir)
    assert sum(tokenized) == 7 * len(names)  # not once per tower
    for tower, matrix in (("yes", vectors.yes), ("no", vectors.no)):  # and both towers got their own vectors
        captions = [template.format(name) for template in resolve_templates("ensemble") for name in names]
        full = torch.from_numpy(_full_context(tiny_model, tower, captions)).view(7, len(names), -1)
        expected = torch.nn.functional.normalize(full.mean(dim=0), dim=-1)
        assert (matrix - expected).abs().max() < 1e-5
