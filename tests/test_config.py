"""Config files and flags: values convert through each field's declared type; defaults are written once."""

from __future__ import annotations

import dataclasses
import json
import shutil

import click
import pytest
import yaml
from click.testing import CliRunner

from oodfilter.cli.main import cli, main
from oodfilter.cli.options import config_option
from oodfilter.config import ModelOptions, build_config, convert_value, default_of
from oodfilter.errors import InputError
from oodfilter.evaluate.config import EvalConfig as MovedEvalConfig
from oodfilter.evaluate.runner import EvalConfig, load_eval_config
from oodfilter.scan import ScanConfig, load_scan_config
from oodfilter.sinks.manifest import read_manifest
from oodfilter.train import FinetuneConfig, load_finetune_config


def _yaml(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_numbers_written_as_text_become_numbers(tmp_path):
    config = load_scan_config(_yaml(tmp_path, 'batch_size: "32"\nworkers: "0"\nthreshold: "0.5"\nmax_pixels: 1_000\n'))
    assert config.batch_size == 32 and isinstance(config.batch_size, int)
    assert config.workers == 0 and config.threshold == 0.5 and isinstance(config.threshold, float)
    assert config.max_pixels == 1000 and isinstance(config.max_pixels, int)


def test_optional_float_takes_null_and_text(tmp_path):
    assert load_scan_config(_yaml(tmp_path, "threshold: null\n")).threshold is None
    assert load_scan_config(overrides={"threshold": "0.25"}).threshold == 0.25
    with pytest.raises(InputError, match=r"threshold must be a number or null, got 'high'"):
        load_scan_config(overrides={"threshold": "high"})


def test_unquoted_exponent_learning_rate_is_a_float(tmp_path):
    config = load_finetune_config(_yaml(tmp_path, "lr: 3e-4\ngrad_clip: '1'\nsteps: '10'\n"))
    assert config.lr == pytest.approx(3e-4) and config.grad_clip == 1.0 and config.steps == 10


@pytest.mark.parametrize(("word", "expected"), [
    ("no", False), ("false", False), ("0", False), ("off", False), ("No", False), (" n ", False),
    ("yes", True), ("true", True), ("1", True), ("on", True), ("TRUE", True), ("y", True),
])
def test_bool_words_are_click_words(tmp_path, word, expected):
    config = load_scan_config(_yaml(tmp_path, f'recursive: "{word}"\ndry_run: "{word}"\n'))
    assert config.recursive is expected and config.dry_run is expected


def test_yaml_booleans_and_zero_one_still_work(tmp_path):
    config = load_scan_config(_yaml(tmp_path, "recursive: no\nresume: 1\noverwrite: 0\n"))
    assert config.recursive is False and config.resume is True and config.overwrite is False


def test_unconvertible_bool_names_key_value_and_file(tmp_path):
    path = _yaml(tmp_path, "recursive: maybe\n")
    with pytest.raises(InputError) as error:
        load_scan_config(path)
    message = str(error.value)
    assert f"config file {path}" in message and "recursive" in message and "'maybe'" in message
    assert "true or false" in message


@pytest.mark.parametrize("text", ["batch_size: lots\n", "batch_size: 2.5\n", "batch_size: true\n", "batch_size:\n"])
def test_unconvertible_int_is_an_input_error(tmp_path, text):
    with pytest.raises(InputError, match=r"config file .*config\.yaml: batch_size must be a whole number, got "):
        load_scan_config(_yaml(tmp_path, text))


def test_list_option_given_one_string_and_items_become_text(tmp_path):
    config = load_scan_config(_yaml(tmp_path, "include: '*.jpg'\nexclude: [tmp, 2024]\ninputs: photos\n"))
    assert config.include == ["*.jpg"] and config.exclude == ["tmp", "2024"] and config.inputs == ["photos"]
    with pytest.raises(InputError, match=r"include must be a list of text, got \{'a': 1\}"):
        load_scan_config(_yaml(tmp_path, "include: {a: 1}\n"))


def test_text_or_list_keeps_the_shape_it_was_given(tmp_path):
    as_text = load_scan_config(_yaml(tmp_path, "classes: classes.txt\ntemplates: ensemble\n"))
    assert as_text.classes == "classes.txt" and as_text.templates == "ensemble"
    as_list = load_scan_config(_yaml(tmp_path, "classes: [cat, 7]\ntemplates: ['a photo of a {}.']\n"))
    assert as_list.classes == ["cat", "7"] and as_list.templates == ["a photo of a {}."]
    with pytest.raises(InputError, match="classes must be text or a list of text"):
        load_scan_config(_yaml(tmp_path, "classes: {cat: 1}\n"))


def test_text_field_rejects_a_boolean_but_takes_a_number(tmp_path):
    assert load_scan_config(_yaml(tmp_path, "model: 123\n")).model == "123"
    with pytest.raises(InputError, match="model must be text, got True"):
        load_scan_config(_yaml(tmp_path, "model: yes\n"))


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = _yaml(tmp_path, "batch-size: 8\nbatchsize: 8\n")
    with pytest.raises(InputError, match=rf"config file {path}: unknown option\(s\): batchsize; known: .*batch_size"):
        load_scan_config(path)
    with pytest.raises(InputError, match=r"overrides: unknown option\(s\): colour"):
        load_scan_config(overrides={"colour": "red"})


def test_overrides_win_and_are_converted_with_the_same_rules(tmp_path):
    config = load_eval_config(_yaml(tmp_path, "batch_size: 8\nplots: 'off'\nood: far\n"), {"batch_size": "16"})
    assert config.batch_size == 16 and config.plots is False and config.ood == ["far"]
    with pytest.raises(InputError, match="overrides: workers must be a whole number, got 'two'"):
        load_eval_config(overrides={"workers": "two"})


def test_dashes_in_yaml_keys_and_empty_file(tmp_path):
    assert load_finetune_config(_yaml(tmp_path, "grad-accum: '4'\n")).grad_accum == 4
    assert load_finetune_config(_yaml(tmp_path, "")) == FinetuneConfig()


def test_model_options_are_shared_and_field_names_are_kept():
    model_fields = {"model", "pretrained", "device", "precision", "batch_size"}
    for cls in (ScanConfig, FinetuneConfig, EvalConfig):
        assert issubclass(cls, ModelOptions)
        assert model_fields <= {f.name for f in dataclasses.fields(cls)}
    assert {f.name for f in dataclasses.fields(EvalConfig)} == {
        "classes", "id", "ood", "id_labels", "methods", "model", "pretrained", "out", "templates", "batch_size",
        "workers", "device", "precision", "cache_dir", "fpr_convention", "plots", "overwrite", "attack_eps",
        "attack_steps", "reference"}
    assert "cache_dir" not in {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert default_of(ScanConfig, "batch_size") == 64 and default_of(FinetuneConfig, "batch_size") == 256
    assert default_of(ScanConfig, "include") == [] and default_of(FinetuneConfig, "lr") == 3e-4
    assert EvalConfig is MovedEvalConfig


def test_convert_value_rules():
    assert convert_value(int | None, None) is None and convert_value(int | None, "7") == 7
    assert convert_value(str | list[str], ["a"]) == ["a"] and convert_value(list[int], "3") == [3]
    assert convert_value(float, 2) == 2.0 and convert_value(int, 4.0) == 4
    with pytest.raises(TypeError, match="not supported"):
        convert_value(dict[str, int], {})


@dataclasses.dataclass
class Sample:
    """A config for the option tests: help and conversion must follow it."""

    count: int = 41
    names: list[str] = dataclasses.field(default_factory=list)


@click.command()
@config_option(f"{__name__}:Sample", "--count", help="How many ({default}).")
@config_option(f"{__name__}:Sample", "--name", "names", field="names", multiple=True, help="Names.")
def _sample_command(count: int | None, names: tuple[str, ...]) -> None:
    click.echo(json.dumps({"count": count, "names": list(names)}))


def test_option_help_reads_the_dataclass_default():
    assert "How many (41)." in CliRunner().invoke(_sample_command, ["--help"]).output
    result = CliRunner().invoke(cli, ["finetune", "--help"])
    assert f"Global batch size ({default_of(FinetuneConfig, 'batch_size')})" in " ".join(result.output.split())
    assert "--count INTEGER" in CliRunner().invoke(_sample_command, ["--help"]).output


def test_option_values_convert_through_the_field_type():
    result = CliRunner().invoke(_sample_command, ["--count", " 12 ", "--name", "a", "--name", "b"])
    assert json.loads(result.output) == {"count": 12, "names": ["a", "b"]}
    bad = CliRunner().invoke(_sample_command, ["--count", "many"])
    assert bad.exit_code == 2 and "Invalid value for '--count': must be a whole number, got 'many'" in bad.output


def test_scan_flag_with_a_bad_number_is_a_usage_error():
    result = CliRunner().invoke(cli, ["scan", "x.jpg", "--batch-size", "lots"])
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size': must be a whole number, got 'lots'" in result.output


def test_cli_scan_with_config_of_string_values(tmp_path, real_images):
    folder = tmp_path / "images"
    (folder / "deeper").mkdir(parents=True)
    for path in real_images[:3]:
        shutil.copy(path, folder / path.name)
    shutil.copy(real_images[3], folder / "deeper" / real_images[3].name)
    (tmp_path / "classes.txt").write_text("tench\ngoldfish\n")
    out = tmp_path / "m.jsonl"
    config = _yaml(tmp_path, f'batch_size: "2"\nworkers: "0"\nthreshold: "0.5"\nrecursive: "no"\nmethod: msp\n'
                             f"model: test-tiny\nclasses: {tmp_path / 'classes.txt'}\nout: {out}\n"
                             f"cache_dir: {tmp_path / 'cache'}\n")
    result = CliRunner().invoke(cli, ["scan", str(folder), "--config", str(config), "--quiet"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert sorted(row["path"] for row in read_manifest(out)) == sorted(str(folder / p.name) for p in real_images[:3])
    resolved = yaml.safe_load(out.with_name(out.name + ".config.yaml").read_text())
    assert resolved["batch_size"] == 2 and resolved["recursive"] is False and resolved["threshold"] == 0.5


def test_cli_config_error_is_one_clear_line(tmp_path, capsys):
    config = _yaml(tmp_path, 'batch_size: "32x"\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "x.jpg", "--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"Error: config file {config}: batch_size must be a whole number, got '32x'"


def test_build_config_on_a_plain_dataclass(tmp_path):
    sample = build_config(Sample, _yaml(tmp_path, "count: '3'\nnames: solo\n"))
    assert sample == Sample(count=3, names=["solo"])
