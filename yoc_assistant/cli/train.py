"""`yoc train NAME`: (re)train a concept's vectors from its photos."""

from __future__ import annotations

import click

from yoc_assistant.cli.output import json_option, print_json, quiet_option

PRECISIONS = ("auto", "int8", "nf4", "bf16", "fp32")


@click.command("train")
@click.argument("name")
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the training examples (default 15).")
@click.option("--steps", type=click.IntRange(min=1),
              help="Stop after this many optimizer steps (overrides epochs).")
@click.option("--lr", type=click.FloatRange(min=0, max=1, min_open=True),
              help="AdamW learning rate (default 1e-4).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per step (default 4).")
@click.option("--grad-accum", type=click.IntRange(min=1),
              help="Micro-batches per optimizer step (default 1).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in the backward pass: less memory, ~35% slower.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Backbone weights while training: auto = bf16 on a GPU with room, else int8; fp32 on a CPU.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of an interrupted run.")
@click.option("--seed", type=int, help="Random seed (data order, initialization; default 0).")
@click.option("--blank-init", is_flag=True,
              help="Start every concept row blank, not from the words the backbone uses for the photos.")
@click.option("--no-mirror", is_flag=True,
              help="Do not add mirror images of the photos (for things with text or a left/right side).")
@json_option
@quiet_option
def train(name: str, epochs: int | None, steps: int | None, lr: float | None, batch_size: int | None,
          grad_accum: int | None, gradient_checkpointing: bool | None, precision: str, resume: bool,
          seed: int | None, blank_init: bool, no_mirror: bool, as_json: bool, quiet: bool) -> None:
    """Train (or retrain) concept NAME. Ctrl-C stops after the current step; --resume continues."""
    from yoc_assistant.errors import UserInputError
    from yoc_assistant.library import Library

    lib = Library.open()
    try:
        # What the library knows is checked before torch and the backbone load.
        concept = lib.require_concept(name)
        if concept.photos == 0:
            raise UserInputError(f"{concept.name!r} has no photos to train on; add some with "
                                 f"`yoc add-concept PHOTOS --name {concept.name}`")
        from yoc_assistant.personalize.train import train_from_cli

        outcome = train_from_cli(
            lib, name, resume=resume, quiet=quiet or as_json, epochs=epochs, steps=steps, lr=lr,
            batch_size=batch_size, grad_accum=grad_accum, gradient_checkpointing=gradient_checkpointing,
            precision=precision, seed=seed, init_from_photos=False if blank_init else None,
            mirror_photos=False if no_mirror else None)
    finally:
        lib.close()
    if as_json:
        print_json(outcome.to_json())
        return
    if outcome.cancelled:
        click.echo(f"Stopped {outcome.name!r} at step {outcome.steps}/{outcome.total_steps}; "
                   f"continue with: yoc train {outcome.name} --resume")
        return
    metrics = outcome.metrics
    parts = [f"{outcome.steps} steps"]
    if isinstance(metrics.get("final_loss"), float):
        parts.append(f"final loss {metrics['final_loss']:.3f}")
    for key in ("recognition", "clip_i"):
        if isinstance(metrics.get(key), float):
            parts.append(f"{key.replace('_', '-')} {metrics[key]:.3f}")
    click.echo(f"Trained {outcome.name!r} ({', '.join(parts)}, {outcome.seconds:.0f} s, "
               f"{outcome.precision}): {outcome.vectors_path}")
