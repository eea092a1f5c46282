"""One optimizer step on the tiny model, the per-sample prompt choice, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from oodfilter.train import FinetuneConfig
from oodfilter.train import step as step_module
from oodfilter.train.distributed import DistContext
from oodfilter.train.losses import clipn_loss
from oodfilter.train.session import open_session
from oodfilter.train.step import learning_rate, prompt_choice, train_step

CPU = torch.device("cpu")
CAPTIONS = ["a photo of a red square", "a photo of a green field", "a photo of a blue sky", "a photo of a cat"]


def _session(model, tmp_path, **overrides):
    values = dict(model="test-tiny", data="unused", out=str(tmp_path), steps=10, batch_size=8, lr=1e-3, seed=5)
    values.update(overrides)
    return open_session(FinetuneConfig(**values), DistContext(0, 1, CPU), model, total_steps=10,
                        work=tmp_path / "training")


def _batch(model):
    generator = torch.Generator().manual_seed(0)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(8)]
    return {"image": torch.randn(8, 3, model.image_size, model.image_size, generator=generator),
            "tokens": model.tokenizer(captions),
            "group": torch.tensor([i % len(CAPTIONS) for i in range(8)])}


def test_a_step_reports_the_loss_before_it_and_trains_only_the_no_tower(fresh_tiny_model, tmp_path):
    model = fresh_tiny_model
    with torch.no_grad():  # distinct prompts, so that the loss depends on which one each sample uses
        noise = torch.randn(model.no_tower.prompts.shape, generator=torch.Generator().manual_seed(1))
        model.no_tower.prompts.add_(noise)
    session = _session(model, tmp_path, warmup_steps=4)
    session.position.step = 2
    batch = _batch(model)
    with torch.no_grad():  # the loss of the weights as they were, with the prompts the step draws
        choice = prompt_choice(session.config, session.ctx, 2, model.no_tower.num_prompts + 1)
        expected = clipn_loss(model.encode_image(batch["image"]), model.encode_text(batch["tokens"]),
                              model.no_tower(batch["tokens"], choice), model.logit_scale, groups=batch["group"])
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    no_before = {k: v.clone() for k, v in model.no_tower.state_dict().items()}

    parts = train_step(session, batch)

    assert parts is not None and session.position.step == 2  # the caller advances the position
    for key, value in zip(["loss", "match", "mismatch", "tso"], expected, strict=True):
        assert parts[key] == pytest.approx(float(value), rel=1e-5), key
    assert parts["lr"] == pytest.approx(1e-3 * 3 / 4)  # warm-up: the third of four steps
    assert all(torch.equal(v, clip_before[k]) for k, v in model.clip.state_dict().items())
    assert any(not torch.equal(v, no_before[k]) for k, v in model.no_tower.state_dict().items())


def test_a_step_with_a_non_finite_loss_changes_nothing(fresh_tiny_model, tmp_path, monkeypatch):
    model = fresh_tiny_model
    session = _session(model, tmp_path, grad_accum=2)
    real, calls = step_module.clipn_loss, []

    def nan_second_chunk(*args, **kwargs):
        calls.append(1)
        parts = real(*args, **kwargs)
        return parts._replace(total=parts.total * float("inf")) if len(calls) == 2 else parts

    monkeypatch.setattr(step_module, "clipn_loss", nan_second_chunk)
    before = {k: v.clone() for k, v in model.no_tower.state_dict().items()}
    assert train_step(session, _batch(model)) is None
    assert len(calls) == 2  # the first chunk's gradients were accumulated, but no optimizer step was taken
    assert all(torch.equal(v, before[k]) for k, v in model.no_tower.state_dict().items())


def test_prompt_choices_of_two_processes_make_up_the_single_process_choice():
    config = FinetuneConfig(batch_size=8, seed=2)
    single = prompt_choice(config, DistContext(0, 1, CPU), 7, 5)
    halves = [prompt_choice(config, DistContext(rank, 2, CPU), 7, 5) for rank in range(2)]
    assert single.shape == (8,) and int(single.min()) >= 0 and int(single.max()) <= 4
    assert torch.equal(torch.cat(halves), single)
    assert not torch.equal(prompt_choice(config, DistContext(0, 1, CPU), 8, 5), single)  # a new draw each step


def test_learning_rate_warms_up_then_decays_to_zero():
    config = FinetuneConfig(lr=0.1, warmup_steps=4)
    assert [learning_rate(config, step, 14) for step in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert learning_rate(config, 4, 14) == pytest.approx(0.1)
    assert learning_rate(config, 9, 14) == pytest.approx(0.05)  # halfway through the cosine
    assert learning_rate(config, 14, 14) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(FinetuneConfig(lr=0.1), 5, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))
