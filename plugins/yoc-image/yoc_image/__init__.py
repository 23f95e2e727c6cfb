"""yoc's image modality: draws pictures, owns every concept's "generation" group.

A plugin like any other: found through the `yoc` entry-point group, uses only
yoc's public API.
"""

from __future__ import annotations

from typing import Any

from yoc_assistant.plugin import (
    BuildContext,
    Example,
    Modality,
    Request,
    RespondContext,
    Response,
    generation_examples,
    hookimpl,
    output_paths,
    phrasings,
    write_png,
)

GROUP = "generation"
GROUP_SIZE = 16
TEMPERATURE = 1.0


class ImageModality(Modality):
    def build_examples(self, ctx: BuildContext) -> list[Example]:
        """Generation examples (real photos and soft positives), generation group."""
        return generation_examples(ctx, group=self.group)

    def no_concept_token(self, backbone: Any) -> int | None:
        return int(backbone.special.boi)

    def respond(self, request: Request, ctx: RespondContext) -> Response:
        n = max(1, int(request.n))
        paths = output_paths(ctx.out, n, prompt=request.text, suffix=".png")
        # Self-prompting: the concept's generation tokens come first, then the image; each
        # picture is the candidate the mentioned concepts recognize best (their self-check).
        result = ctx.draw_images(
            ctx.forced_prompt(self.group), n=n, candidates=getattr(request, "candidates", None),
            cfg_scale=request.cfg_scale,
            temperature=TEMPERATURE if request.temperature is None else request.temperature,
            seed=request.seed, on_progress=ctx.on_progress, decoding=getattr(request, "decoding", None),
        )
        seeds = list(result.seeds) or [request.seed] * n
        for i, (image, path) in enumerate(zip(result.images, paths, strict=True)):
            seed = seeds[i] if i < len(seeds) else None
            write_png(image, path, {**ctx.metadata, "seed": "" if seed is None else str(seed)})
        return Response(modality=self.name, image_paths=paths)


@hookimpl
def yoc_modalities() -> list[Modality]:
    return [ImageModality(name="image", group=GROUP, group_size=GROUP_SIZE,
                          description="draws pictures (PNG files)", aliases=("draw",),
                          example_requests=phrasings.IMAGE_REQUESTS, uses_prompt_pass=True)]
