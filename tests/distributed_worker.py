"""One process of a concept training run on the tiny checkpoint, for tests/test_distributed.py.

Run alone (one process) or under `accelerate launch --multi_gpu --num_processes 2`
(gloo on the CPU): the trainer deals each step's micro-batches to the processes. The
main process writes the trained rows to OUT; every process writes its pid to
RUN/pid-<rank> (the test kills one of them).

    python tests/distributed_worker.py RUN OUT --steps N --grad-accum G [--resume]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CHECKPOINT = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"


def train(run: Path, steps: int, grad_accum: int, resume: bool = False):
    """The run every process of the test makes (a TrainResult)."""
    import torch

    from yoc_assistant.backbone import Backbone
    from yoc_assistant.personalize.bench import synthetic_examples
    from yoc_assistant.personalize.concept import ConceptVectors
    from yoc_assistant.personalize.trainer import TrainConfig, train_concept

    torch.set_num_threads(1)
    bb = Backbone.load(str(CHECKPOINT), precision="fp32", device="cpu")
    vectors = ConceptVectors.initialize(bb, "dist", {"generation": 4, "understanding": 4}, seed=0)
    examples = synthetic_examples(bb, 24, 40, vectors.n_rows, seed=1)
    config = TrainConfig(max_steps=steps, batch_size=2, grad_accum=grad_accum, lr=1e-2, seed=0,
                         checkpoint_every=1, init_from_photos=False)
    return train_concept(bb, vectors, examples, config, run_dir=run / "ckpt", resume=resume)


def main() -> int:
    import torch
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    (args.run / f"pid-{rank}").write_text(str(os.getpid()))
    result = train(args.run, args.steps, args.grad_accum, args.resume)
    if rank == 0:
        save_file({"input": result.last.input_rows.contiguous(), "output": result.last.output_rows.contiguous(),
                   "losses": torch.tensor(result.losses)},
                  str(args.out), metadata={"step": str(result.step),
                                            "resumed_from": str(result.resumed_from)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
