"""A tiny random open_clip model written as a local folder, for tests and CPU demos.

The folder has the layout open_clip reads with `local-dir:` (the same layout a real
model saved locally has): `open_clip_config.json` ({"model_cfg", "preprocess_cfg"})
and `open_clip_model.safetensors`. It is loaded through exactly the code path real
weights take (`retrieval.load_clip`). Random weights: the embeddings mean nothing,
but they are deterministic under a seed and react to pixel content.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from yoc_assistant.atomic import atomic_path, atomic_write_text

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

TINY_MODEL_CFG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 8},
    # open_clip's BPE tokenizer has 49408 ids, so the text vocabulary keeps that size.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                 "layers": 1},
}
TINY_PREPROCESS_CFG: dict = {
    "size": 32, "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def write_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a random tiny CLIP into `folder` (created); returns the folder."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_MODEL_CFG)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    config = {"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2))
    return folder
