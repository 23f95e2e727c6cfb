"""Instance judges: image models that say whether a picture shows *this* thing.

CLIP-I says a picture looks like the concept's kind of thing; an instance judge says
whether it is the same instance, the way DreamBench scores subjects with DINO and the
paper scores faces with a face model. Two judges, one interface (`embed` -> unit
vectors; `instance_similarity` = mean cosine of generated vs real):

* `ToyJudge`: the toy world's judge (`toyworld/weights/judge/`, trained by
  `python -m yoc_assistant.toyworld.train_judge`): a small CNN that names a photo's
  shape, colour, pattern *and accent* (the unnamed instance attribute), so it can also
  say a picture is "drawn right" (its exact instance is the concept's).
* `DinoJudge`: DINOv2 through transformers (`Dinov2Model`), from a local directory or
  the local HF cache (`facebook/dinov2-small` by default; `YOC_DINO_MODEL` to change);
  never downloaded. A missing model is a `JudgeUnavailable` with a note, not a crash.

Weights are safetensors only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

TOY_JUDGE_DIR = Path(__file__).resolve().parent.parent / "toyworld" / "weights" / "judge"
JUDGE_CONFIG = "judge_config.json"
JUDGE_WEIGHTS = "judge.safetensors"
DEFAULT_DINO = "facebook/dinov2-small"


class JudgeUnavailable(Exception):
    """No judge model on this machine; `str(err)` is the note to show."""


class JudgeNet(nn.Module):
    """Conv stem -> 3 stride-2 stages -> global mean -> an embedding and one head per
    attribute (`heads`: attribute -> its values, in order)."""

    def __init__(self, heads: dict[str, list[str]], width: int = 32, dim: int = 128,
                 resolution: int = 32) -> None:
        super().__init__()
        self.heads_spec, self.resolution = heads, resolution
        w = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.GELU())

        self.features = nn.Sequential(block(3, w, 1), block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1),
                                      block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 2))
        self.embed = nn.Linear(4 * w, dim)
        self.heads = nn.ModuleDict({k: nn.Linear(dim, len(v)) for k, v in heads.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.embed(self.features(x).mean(dim=(2, 3)))
        return h, {k: head(F.gelu(h)) for k, head in self.heads.items()}


def to_input(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """PIL images -> [N, 3, R, R] in -1..1 (resized with bilinear filtering if needed)."""
    import numpy as np

    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), 2)
        arrays.append(np.asarray(img, dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


@dataclass
class ToyJudge:
    """The toy world's instance judge (see the module docs)."""

    net: JudgeNet
    folder: Path
    name: str = "toy-judge"

    @classmethod
    def load(cls, folder: str | os.PathLike[str] = TOY_JUDGE_DIR) -> ToyJudge:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_file, weights = folder / JUDGE_CONFIG, folder / JUDGE_WEIGHTS
        if not cfg_file.is_file() or not weights.is_file():
            raise JudgeUnavailable(f"no instance judge in {folder} (needs {JUDGE_CONFIG} and {JUDGE_WEIGHTS})")
        try:
            cfg = json.loads(cfg_file.read_text())
            net = JudgeNet(cfg["heads"], cfg["width"], cfg["dim"], cfg["resolution"])
            net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
            raise JudgeUnavailable(f"instance judge in {folder} is unreadable: {str(err)[:300]}") from err
        return cls(net.eval(), folder)

    @torch.no_grad()
    def _run(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.net(to_input(images, self.net.resolution))

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return F.normalize(self._run(images)[0], dim=-1)

    def attributes(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        """Per image, the judge's value for every attribute it knows."""
        _, logits = self._run(images)
        out: list[dict[str, str]] = [{} for _ in images]
        for key, values in self.net.heads_spec.items():
            for i, k in enumerate(logits[key].argmax(-1).tolist()):
                out[i][key] = values[k]
        return out


@dataclass
class DinoJudge:
    """DINOv2's CLS embedding (DreamBench's DINO score)."""

    model: Any
    processor: Any
    name: str

    @classmethod
    def load(cls, name_or_dir: str | None = None) -> DinoJudge:
        from transformers import AutoImageProcessor, Dinov2Model

        from yoc_assistant import settings

        name = name_or_dir or settings.dino_model() or DEFAULT_DINO
        local = Path(name).expanduser()
        source = str(local) if local.is_dir() else name
        try:
            model = Dinov2Model.from_pretrained(source, local_files_only=True, use_safetensors=True)
            try:
                processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
            except (OSError, ValueError):
                processor = None  # a bare model folder: resize and normalize ourselves
        except (OSError, ValueError) as err:
            raise JudgeUnavailable(
                f"no DINOv2 model {name!r} on this machine (a local folder or the HF cache; "
                f"`yoc pull {DEFAULT_DINO}` fetches one): DINO score skipped") from err
        return cls(model.eval(), processor, name)

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.processor is not None:
            pixels = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]
        else:
            size = int(self.model.config.image_size)
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            pixels = ((to_input(images, size) + 1) / 2 - mean) / std
        out = self.model(pixel_values=pixels.to(self.model.dtype))
        return F.normalize(out.last_hidden_state[:, 0].float(), dim=-1)


def instance_similarity(judge: Any, generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> float:
    """Mean cosine similarity of the judge's embeddings, every generated vs every real image."""
    if not generated or not real:
        return float("nan")
    return float((judge.embed(generated) @ judge.embed(real).T).mean())


def drawn_right(judge: ToyJudge, generated: Sequence[Image.Image], real: Sequence[Image.Image]) -> float:
    """Share of generated pictures whose every attribute (the accent included) is the one
    the judge reads from most of the real photos: the concept's exact instance."""
    if not generated or not real:
        return float("nan")
    from collections import Counter

    truth = Counter(tuple(sorted(a.items())) for a in judge.attributes(real)).most_common(1)[0][0]
    return sum(tuple(sorted(a.items())) == truth for a in judge.attributes(generated)) / len(generated)


def load_judge(backbone_is_toy: bool) -> ToyJudge | DinoJudge:
    """The toy judge for the toy backbone, DINOv2 for every other backbone."""
    return ToyJudge.load() if backbone_is_toy else DinoJudge.load()
