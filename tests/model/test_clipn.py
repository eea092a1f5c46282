"""CLIPN model: the no-tower copy, prompts, frozen parts, and model loading by name."""

from __future__ import annotations

import pytest
import torch

import oodfilter
from oodfilter.errors import ModelLoadError
from oodfilter.model.text_parts import text_parts


def test_no_tower_starts_as_exact_copy_of_yes_tower(fresh_tiny_model):
    model = fresh_tiny_model
    parts = text_parts(model.clip)
    no = model.no_tower
    assert torch.equal(no.token_embedding.weight, parts.token_embedding.weight)
    assert torch.equal(no.positional_embedding, parts.positional_embedding)
    assert torch.equal(no.text_projection, parts.text_projection)
    yes_transformer = parts.transformer.state_dict()
    for key, value in no.transformer.state_dict().items():
        assert torch.equal(value, yes_transformer[key]), key
    assert torch.count_nonzero(no.prompts) == 0
    # Copies, not shared storage: training the no-tower must not move the yes tower.
    assert no.token_embedding.weight.data_ptr() != parts.token_embedding.weight.data_ptr()
    tokens = model.tokenize(["a photo of a dog", "a tench", "something quite different"])
    with torch.no_grad():
        assert torch.equal(model.encode_text_no(tokens), model.encode_text(tokens))
    assert model.no_branch_trained is False


def test_only_the_no_branch_trains(fresh_tiny_model):
    model = fresh_tiny_model
    assert not any(p.requires_grad for p in model.parameters())  # eval mode: nothing to train
    model.train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("no_tower.") for name in trainable)
    assert "no_tower.prompts" in trainable
    assert not model.clip.logit_scale.requires_grad
    assert model.no_tower.training and not model.clip.training
    model.eval()


def test_prompt_selection_eval_mean_and_training_draws(tiny_model):
    no = tiny_model.no_tower
    assert no.num_prompts == 16
    options = no.prompt_options()
    assert options.shape[0] == 17
    torch.testing.assert_close(options[16], no.prompts.mean(dim=0))
    no.eval()
    torch.testing.assert_close(no.select_prompts(4)[0], no.prompts.mean(dim=0))
    chosen = no.select_prompts(3, torch.tensor([0, 16, 5]))
    torch.testing.assert_close(chosen[1], options[16])
    torch.testing.assert_close(chosen[2], no.prompts[5])
    try:
        no.train()
        torch.manual_seed(0)
        drawn = no.select_prompts(400)
        distinct = {int(i) for i in (drawn[:, None] == options[None]).flatten(2).all(-1).float().argmax(-1)}
        assert len(distinct) == 17  # every option, the mean included, gets drawn
    finally:
        no.eval()


def test_prompts_change_the_no_embeddings(tiny_model):
    tokens = tiny_model.tokenize(["a photo of a cat"])
    with torch.no_grad():
        assert not torch.allclose(tiny_model.encode_text_no(tokens), tiny_model.encode_text(tokens), atol=1e-3)


def test_tiny_model_is_deterministic_and_normalised(tiny_model):
    again = oodfilter.load_model("test-tiny", device="cpu")
    assert again.text_fingerprint("yes") == tiny_model.text_fingerprint("yes")
    assert again.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    images = torch.randn(2, 3, tiny_model.image_size, tiny_model.image_size)
    with torch.no_grad():
        features = tiny_model.encode_image(images)
    assert features.shape == (2, tiny_model.embed_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))


def test_fingerprint_changes_when_weights_change(fresh_tiny_model):
    before_yes = fresh_tiny_model.text_fingerprint("yes")
    before_no = fresh_tiny_model.text_fingerprint("no")
    with torch.no_grad():
        fresh_tiny_model.no_tower.prompts[0, 0, 0] += 1e-3
    assert fresh_tiny_model.text_fingerprint("no") != before_no
    assert fresh_tiny_model.text_fingerprint("yes") == before_yes


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="unknown model 'ViT-Q-99'"):
        oodfilter.load_model("ViT-Q-99", device="cpu")


def test_unknown_pretrained_tag_names_the_known_tags():
    with pytest.raises(ModelLoadError, match="laion2b_s34b_b79k"):
        oodfilter.load_model("ViT-B-32", pretrained="no_such_tag", device="cpu")


def test_name_without_default_tag_asks_for_weights():
    with pytest.raises(ModelLoadError, match="needs pretrained weights"):
        oodfilter.load_model("RN50", device="cpu")


def test_tag_download_offline_fails_with_a_hint(monkeypatch):
    import open_clip.factory

    def offline(*args, **kwargs):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(ModelLoadError, match="offline"):
        oodfilter.load_model("ViT-B-32", device="cpu")


def test_cuda_request_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(oodfilter.InputError, match="no CUDA device"):
        oodfilter.load_model("test-tiny", device="cuda")
