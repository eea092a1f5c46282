"""``oodfilter finetune``: train CLIPN's no-branch on your image-caption data and write a bundle."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from oodfilter.cli.options import config_option, explicit_options, model_options, quiet_asked

FINETUNE_CONFIG = "oodfilter.train.config:FinetuneConfig"
option = functools.partial(config_option, FINETUNE_CONFIG)


@click.command("finetune")
@model_options(
    FINETUNE_CONFIG,
    model="Base model: open_clip name, bundle folder, or test-tiny ({default}).",
    device="Where to train ({default}).",
    batch_size="Global batch size ({default}); split across torchrun processes.",
    precision="Autocast on CUDA ({default}): auto = bf16, or fp16 on GPUs without it; training on the CPU "
              "runs in fp32 (int8 is for scoring only).",
)
@option("--data", needed=True, help="Caption table (.csv/.tsv/.jsonl with path, caption) or image-folder tree.")
@option("--out", "-o", needed=True, help="Output folder: the bundle, plus training/ (checkpoints, metrics.jsonl).")
@option("--steps", help="Optimizer steps to run (this or --epochs is required).")
@option("--epochs", help="Passes over the training pairs (this or --steps is required).")
@option("--lr", help="Peak learning rate ({default}).")
@option("--weight-decay", help="AdamW weight decay on matrices ({default}).")
@option("--warmup-steps", help="Linear warm-up steps before the cosine decay ({default}).")
@option("--grad-accum", help="Micro-batches per step ({default}).")
@option("--grad-clip", help="Clip the gradient norm to this value.")
@option("--seed", help="Seed of data order, augmentation and prompt draws ({default}).")
@option("--val-fraction", help="Held-out share of the pairs ({default}).")
@option("--val-every", help="Validate every N steps ({default}: at start and end).")
@option("--checkpoint-every", help="Checkpoint every N steps ({default}: at the end).")
@option("--workers", help="Data-loading worker processes.")
@option("--templates", help="Caption templates for image-folder data: ensemble or photo ({default}).")
@option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of option defaults.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def finetune_command(ctx: click.Context, **options: Any) -> None:
    """Fine-tune the no-branch (no-text tower and prompts) on a new domain or vocabulary.

    The image tower, yes tower and logit scale stay frozen. Under `torchrun --nproc_per_node N` the
    features are gathered across processes. The result in --out loads with `oodfilter scan --model OUT`.
    """
    from oodfilter.train.config import load_finetune_config

    options["quiet"] = quiet_asked(options["quiet"])  # also `oodfilter -q finetune`
    config = load_finetune_config(options["config_file"], explicit_options(ctx, options, skip=("config_file", "quiet")))
    config.validate()  # option errors before torch is imported
    from oodfilter.cli.progress import TaskProgress
    from oodfilter.train.loop import finetune

    with TaskProgress("training", quiet=options["quiet"]) as progress:
        result = finetune(config, progress=progress)
    if not options["quiet"]:
        click.echo(f"trained {result.steps} steps; bundle in {Path(result.bundle)}; "
                   f"{validation_text(result.metrics, config.val_fraction)}", err=True)


def validation_text(metrics: dict[str, float], val_fraction: float) -> str:
    """Describe the last held-out metrics (``val_loss 0.1234, ...``), or why there are none."""
    shown = [f"{name} {value:.4f}" for name, value in metrics.items() if name.startswith("val_")]
    if shown:
        return "validation: " + ", ".join(shown)
    if val_fraction <= 0:
        return "no validation (--val-fraction 0 holds no pairs out)"
    return f"no validation (--val-fraction {val_fraction} held out no pair: too few pairs)"
