"""``oodfilter finetune``: train CLIPN's no-branch on your image-caption data and write a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from oodfilter.cli.options import explicit_options


@click.command("finetune")
@click.option("--model", "-m", help="Base model: open_clip name (ViT-B-16), bundle folder, or test-tiny.")
@click.option("--pretrained", help="Pretrained tag or weights file for an open_clip name.")
@click.option("--data", help="Caption table (.csv/.tsv/.jsonl with path, caption) or image-folder tree.")
@click.option("--out", "-o", help="Output folder: the bundle, plus training/ (checkpoints, metrics.jsonl).")
@click.option("--steps", type=int, help="Optimizer steps to run (or --epochs).")
@click.option("--epochs", type=int, help="Passes over the training pairs (or --steps).")
@click.option("--batch-size", type=int, help="Global batch size (256); split across torchrun processes.")
@click.option("--lr", type=float, help="Peak learning rate (3e-4).")
@click.option("--weight-decay", type=float, help="AdamW weight decay on matrices (0.2).")
@click.option("--warmup-steps", type=int, help="Linear warm-up steps before the cosine decay (0).")
@click.option("--grad-accum", type=int, help="Micro-batches per step (1).")
@click.option("--grad-clip", type=float, help="Clip the gradient norm to this value.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), help="Autocast on CUDA (auto).")
@click.option("--seed", type=int, help="Seed of data order, augmentation and prompt draws (0).")
@click.option("--val-fraction", type=float, help="Held-out share of the pairs (0.05).")
@click.option("--val-every", type=int, help="Validate every N steps (0: at start and end).")
@click.option("--checkpoint-every", type=int, help="Checkpoint every N steps (0: at the end).")
@click.option("--workers", type=int, help="Data-loading worker processes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train (auto).")
@click.option("--templates", help="Caption templates for image-folder data: ensemble (default) or photo.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of option defaults.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def finetune_command(ctx: click.Context, **options: Any) -> None:
    """Fine-tune the no-branch (no-text tower and prompts) on a new domain or vocabulary.

    The image tower, yes tower and logit scale stay frozen. Under `torchrun --nproc_per_node N` the
    features are gathered across processes. The result in --out loads with `oodfilter scan --model OUT`.
    """
    from oodfilter.cli.progress import TaskProgress
    from oodfilter.train import finetune, load_finetune_config

    config = load_finetune_config(options["config_file"], explicit_options(ctx, options, skip=("config_file", "quiet")))
    with TaskProgress("training", quiet=options["quiet"]) as progress:
        result = finetune(config, progress=progress)
    if not options["quiet"]:
        shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("val_")}
        click.echo(f"trained {result.steps} steps; bundle in {Path(result.bundle)}; validation {shown}", err=True)
