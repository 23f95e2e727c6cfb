"""yoc's text modality: answers in words, owns every concept's "understanding" group.

A plugin like any other: found through the `yoc` entry-point group, uses only
yoc's public API.
"""

from __future__ import annotations

from yoc_assistant.plugin import (
    BuildContext,
    Example,
    Modality,
    Request,
    RespondContext,
    Response,
    hookimpl,
    phrasings,
    understanding_examples,
)

GROUP = "understanding"
GROUP_SIZE = 16
TEMPERATURE = 0.7


class TextModality(Modality):
    def build_examples(self, ctx: BuildContext) -> list[Example]:
        """Recognition ("Is <name> in this photo?") and QA examples, understanding group."""
        return understanding_examples(ctx, group=self.group)

    def respond(self, request: Request, ctx: RespondContext) -> Response:
        # Self-prompting: the concept's understanding tokens come first, then the answer.
        # A Yes/No answer is decided greedily, as `yoc eval` scores it (one code path),
        # seconded by the concept's reference photo where the checkpoint says so.
        from yoc_assistant.personalize.data import answer_first_token

        names = ctx.concept_words()
        bb = ctx.backbone
        result = bb.generate_text(
            ctx.forced_prompt(self.group), extra=ctx.extra, max_new_tokens=request.max_tokens,
            temperature=TEMPERATURE if request.temperature is None else request.temperature,
            seed=request.seed, on_token=ctx.on_text, allow_ids=list(names), extra_names=names,
            prefix=ctx.prompt_pass,  # the router already ran the prompt: continue from there
            decisive_ids=[answer_first_token(bb, True), answer_first_token(bb, False)],
            decisive_bias=ctx.yes_no_bias(),
        )
        return Response(modality=self.name, text=result.text)


@hookimpl
def yoc_modalities() -> list[Modality]:
    return [TextModality(name="text", group=GROUP, group_size=GROUP_SIZE,
                         description="answers in text (streamed)", fallback=True,
                         example_requests=phrasings.TEXT_REQUESTS,
                         aliases=("ask",), uses_prompt_pass=True)]
