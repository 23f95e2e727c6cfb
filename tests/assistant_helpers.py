"""Shared by the assistant/plugin/router/CLI-chat tests: the tiny backbone, a way to
read the router position's hidden state, ready concepts, and throwaway plugins
installed the way pip would (a module plus a `*.dist-info` with entry points)."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path
from typing import Any

import torch

TINY = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"

AUDIO_PLUGIN = '''
from __future__ import annotations

from yoc_assistant.assistant import Modality, Response, hookimpl, output_paths


class Audio(Modality):
    """A throwaway third-party modality: 'speaks' by writing a file."""

    def build_examples(self, ctx):
        return []

    def respond(self, request, ctx):
        path = output_paths(ctx.out, 1, prompt=request.text, suffix=".wav")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        forced = ctx.group_ids(self.group)
        path.write_text(f"audio for {request.text!r}; forced {forced}; prompt {len(ctx.prompt_ids)}")
        return Response(modality=self.name, text=f"spoke into {path.name}", files=[path])


@hookimpl
def yoc_modalities():
    return [Audio(name="audio", group="audio", group_size=4, description="speaks (test plugin)")]
'''

BROKEN_PLUGIN = '''
raise RuntimeError("this plugin is broken on purpose")
'''


def install_plugin(site: Path, module: str, source: str, entry_point: str,
                   dist: str | None = None) -> Path:
    """Write `module.py` and a dist-info declaring `entry_point = module` in group `yoc`
    into `site` (a folder to put on sys.path / PYTHONPATH)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = dist or module.replace("_", "-")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[yoc]\n{entry_point} = {module}\n")
    return site


@functools.lru_cache(maxsize=1)
def tiny_backbone() -> Any:
    """The tiny-anole-a checkpoint, loaded once per test session (fp32, CPU).
    Tests that change its weights must restore them."""
    from yoc_assistant.backbone import Backbone

    return Backbone.load(str(TINY), precision="fp32", device="cpu")


def final_hidden(bb: Any, prompt_ids: list[int], extra: Any = None) -> torch.Tensor:
    """The final hidden state after `prompt_ids`, read through the head itself: extra
    output rows = the identity make the appended logits equal the hidden state."""
    from yoc_assistant.backbone import ExtraTokens

    hidden = int(bb.hidden_size)
    eye = torch.eye(hidden)
    if extra is None or len(extra) == 0:
        probe, offset = ExtraTokens(torch.zeros(hidden, hidden), eye), 0
    else:
        probe = ExtraTokens(torch.cat([extra.input_rows.detach(), torch.zeros(hidden, hidden)]),
                            torch.cat([extra.output_rows.detach(), eye]))
        offset = len(extra)
    logits = bb.next_token_logits(prompt_ids, extra=probe)
    start = int(bb.vocab_size) + offset
    return logits[start:start + hidden].clone()


def steer(hidden: torch.Tensor, logit: float) -> torch.Tensor:
    """An output row whose logit against `hidden` is exactly `logit`."""
    return hidden * (logit / float(hidden.dot(hidden)))


def make_ready_concept(library: Any, bb: Any, name: str, groups: dict[str, int] | None = None,
                       seed: int = 0) -> Any:
    """A concept row with status ready and a vector file (random init, not trained)."""
    from yoc_assistant.personalize.concept import ConceptVectors

    library.create_concept(name)
    vec = ConceptVectors.initialize(bb, name, groups or {"generation": 16, "understanding": 16},
                                    seed=seed)
    path = vec.save(library.concept_dir(name) / "vectors.safetensors", bb)
    library.set_vectors(name, path)
    return vec
