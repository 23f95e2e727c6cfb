"""The assistant: mentioned concepts -> ConceptSet -> route -> the modality's responder."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.assistant.modality import ProgressFn, Request, RespondContext, Response, TextFn
from yoc_assistant.assistant.plugins import PluginManager
from yoc_assistant.assistant.router import RouteDecision, Router, concept_names, default_log_path
from yoc_assistant.errors import NotFoundError, UserInputError, YocError

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

log = logging.getLogger(__name__)

READY = "ready"


def ready_concept(library: Any, name: str) -> Any:
    """The library row of concept `name`, refused unless it exists and is trained."""
    if library is None:
        raise NotFoundError(f"unknown concept <{name}>: no concept library is open")
    row = library.get_concept(name)
    if row is None:
        known = ", ".join(f"<{c.name}>" for c in library.list_concepts()) or "none yet"
        raise NotFoundError(f"unknown concept <{name}>; known concepts: {known} "
                            f"(add one with `yoc add-concept PHOTOS --name NAME`)")
    if row.status != READY or not row.vectors_path:
        raise UserInputError(f"concept <{row.name}> is not trained yet (status: {row.status}); "
                             f"train it with `yoc train {row.name}`")
    return row


def check_mentions(library: Any, request: Request) -> list[str]:
    """Refuse a request whose `<name>`s are unknown or untrained, before any backbone is
    loaded (the library alone knows); returns the mentioned names."""
    names = request.mentions().names
    for name in names:
        ready_concept(library, name)
    return names


class Assistant:
    """`respond(request)` answers one request. `library` is a library.Library (or None:
    no concepts can be mentioned); `plugins` defaults to a PluginManager loading entry points."""

    def __init__(self, backbone: Backbone, library: Any = None,
                 plugins: PluginManager | None = None, *, log_path: Path | None = None,
                 out_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.library = library
        self.plugins = plugins if plugins is not None else PluginManager()
        self.router = Router(backbone, self.plugins,
                             log_path=log_path if log_path is not None else default_log_path())
        self.out_dir = out_dir
        self._cache: dict[tuple[str, str, float], Any] = {}

    # -- concepts ------------------------------------------------------------------
    def load_concepts(self, names: list[str]) -> Any:
        """A ConceptSet of the named READY concepts (None when `names` is empty)."""
        if not names:
            return None
        from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

        vectors = []
        for name in names:
            row = self._ready_row(name)
            path = Path(row.vectors_path)
            key = (row.name, str(path), path.stat().st_mtime if path.exists() else 0.0)
            if key not in self._cache:
                vec = ConceptVectors.load(path, self.backbone)
                if vec.name != row.name:  # renamed since training: the library's name counts
                    vec = dataclasses.replace(vec, name=row.name)
                self._cache[key] = vec
            vectors.append(self._cache[key])
        return ConceptSet(self.backbone, vectors)

    def _ready_row(self, name: str) -> Any:
        return ready_concept(self.library, name)

    # -- answering -----------------------------------------------------------------
    def route(self, request: Request, *, score: bool = False) -> tuple[RouteDecision, Any]:
        concepts = self.load_concepts(request.mentions().names)
        return self.router.route(request, concepts, score=score), concepts

    def respond(self, request: Request, *, on_text: TextFn | None = None,
                on_progress: ProgressFn | None = None,
                on_route: Callable[[RouteDecision], None] | None = None,
                score: bool = False) -> Response:
        """Route and answer `request`. `score`: with `request.mode` set, still run the
        routing pass (for `--explain`); the responder continues from it either way."""
        decision, concepts = self.route(request, score=score)
        if on_route is not None:
            on_route(decision)
        modality = self.plugins.modality(decision.modality)
        prompt_pass, decision.prompt_pass = decision.prompt_pass, None
        if prompt_pass is not None and not modality.uses_prompt_pass:
            prompt_pass.take_cache()  # its KV cache would only hold memory while this answers
        names = concept_names(request.mentions(), concepts)
        ctx = RespondContext(
            backbone=self.backbone, prompt_ids=list(decision.prompt_ids), concepts=concepts,
            concept=decision.concept, concept_names=names,
            decision=decision, out=self._out(request), on_text=on_text, on_progress=on_progress,
            metadata=self._metadata(request, names), prompt_pass=prompt_pass,
            witness=self._witness(request, decision, concepts, names),
        )
        try:
            response = modality.respond(request, ctx)
        except (YocError, KeyboardInterrupt):
            raise
        except BaseException as err:  # noqa: BLE001 - a plugin's bug (even sys.exit()) must not end yoc
            log.exception("modality %s failed", modality.name)
            raise YocError(f"the {modality.name!r} modality failed: "
                           f"{type(err).__name__}: {err}") from err
        response.modality = modality.name
        response.probabilities = dict(decision.probabilities)
        response.forced = decision.forced
        response.concept = decision.concept
        return response

    def _witness(self, request: Request, decision: RouteDecision, concepts: Any, names: list[str]) -> Any:
        """The photo witness of a request about a photo (token lists only; its pass runs
        when a responder asks, `RespondContext.yes_no_bias`)."""
        from yoc_assistant.personalize import witness

        return witness.for_request(self.backbone, decision.prompt_ids, concepts, names,
                                   has_photo=bool(request.images))

    def _out(self, request: Request) -> Path:
        if request.out is not None:
            return Path(request.out)
        if self.out_dir is not None:
            return self.out_dir
        from yoc_assistant.library import paths

        return paths.pictures_dir()

    def _metadata(self, request: Request, names: list[str]) -> dict[str, str]:
        from yoc_assistant import __version__

        return {
            "prompt": request.text,
            "concepts": ",".join(names),
            "backbone": str(getattr(self.backbone, "name", "")),
            "backbone_fingerprint": str(getattr(self.backbone, "fingerprint", "")),
            "software": f"yoc {__version__}",
        }
