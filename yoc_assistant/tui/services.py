"""The app's one door to the other parts of yoc.

Screens call these methods from thread workers and show what comes back; no
logic the library needs lives here, only the glue: the application layer's backbone
(opened for "training", as `yoc train` opens it, since the app trains with the copy it
chats with), its training job, a fresh library connection per call (SQLite
connections belong to the thread that opened them), and plain rows for tables.

`YOC_SEED` makes answers repeatable (tests read them off the screen).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant import settings
from yoc_assistant.errors import UserInputError

if TYPE_CHECKING:
    from yoc_assistant.library import Concept, IngestReport

# The library (sqlite-utils pulls in numpy), torch and the assistant are imported
# inside the methods, which run in workers: the app must be on screen first.

TextFn = Callable[[str], None]
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ConceptRow:
    """One line of the concepts table."""

    name: str
    status: str
    photos: int
    last_trained: str  # "" when never trained
    metrics: str  # short "recog 0.84 · clip-i 0.71", "" when none


@dataclass
class Answer:
    """What the assistant answered, flattened for the chat view."""

    modality: str
    text: str
    image_paths: list[Path] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # other files a modality wrote


@dataclass(frozen=True)
class BackboneChoice:
    source: str
    is_noise: bool

    @property
    def label(self) -> str:
        """A short name for the status line: the folder or hub id's last part."""
        return Path(self.source.rstrip("/")).name or self.source


class Services:
    """Blocking calls into the library, backbone, assistant and trainer.

    Safe to call from several worker threads: the backbone is loaded once under
    a lock; each call opens its own library connection.
    """

    def __init__(self, backbone_source: str | None = None, *, precision: str | None = None,
                 device: str | None = None, train_config: Any = None,
                 seed: int | None = None) -> None:
        self._source = backbone_source
        self._precision = precision
        self._device = device
        self.train_config = train_config
        self.seed = seed if seed is not None else settings.chat_seed()
        self._lock = threading.Lock()
        self._choice: BackboneChoice | None = None
        self._backbone: Any = None
        self._conversation: Any = None
        self._plugins: Any = None

    # -- backbone --------------------------------------------------------------------
    def backbone_choice(self) -> BackboneChoice:
        """Which backbone the app will load (may write the tiny fallback checkpoint)."""
        if self._choice is None:
            if self._source:
                self._choice = BackboneChoice(self._source, is_noise=False)
            else:
                from yoc_assistant.app.backbones import default_backbone

                source, is_noise = default_backbone()
                self._choice = BackboneChoice(str(source), bool(is_noise))
        return self._choice

    def load_backbone(self) -> Any:
        """Load (once) and return the Backbone; later calls wait for the first."""
        with self._lock:
            if self._backbone is None:
                self._backbone = _load_cached(self.backbone_choice().source,
                                              self._precision, self._device)
            return self._backbone

    # -- library -----------------------------------------------------------------------
    def concepts(self) -> list[ConceptRow]:
        from yoc_assistant.library import Library

        with Library.open() as lib:
            return [_row(concept) for concept in lib.list_concepts(check_files=True)]

    def concept_names(self) -> list[str]:
        return [row.name for row in self.concepts()]

    def add_concept(self, folder: Path, name: str, description: str) -> str:
        """Create the concept from a folder of photos (as `yoc add-concept` does);
        returns a one-line summary for a notification."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UserInputError(f"not a folder: {folder}")
        from yoc_assistant.library import Library
        from yoc_assistant.library.concepts import add_concept_from_folder

        with Library.open() as lib:
            report = add_concept_from_folder(lib, folder, name, about=description or None)
        return _summary(report, name)

    def rename(self, old: str, new: str) -> None:
        from yoc_assistant.library import Library

        with Library.open() as lib:
            lib.rename(old, new)

    def remove(self, name: str) -> None:
        from yoc_assistant.library import Library

        with Library.open() as lib:
            lib.remove(name)

    def export(self, name: str, dest: Path) -> Path:
        from yoc_assistant.library import Library
        from yoc_assistant.library.bundle import export_bundle

        with Library.open() as lib:
            return Path(export_bundle(lib, name, Path(dest).expanduser()))

    # -- training ----------------------------------------------------------------------
    def train(self, name: str, *, on_event: Callable[[Any], None],
              cancel: threading.Event) -> Any:
        """Train `name` (blocking). Events go to `on_event`; set `cancel` to stop."""
        from yoc_assistant.app.training import train_concept_job
        from yoc_assistant.library import Library

        backbone = self.load_backbone()
        with Library.open() as lib:
            return train_concept_job(lib, name, backbone=backbone, on_event=on_event,
                                     cancel=cancel, config=self.train_config)

    # -- chat ----------------------------------------------------------------------------
    def ask(self, text: str, *, image: Path | None = None, mode: str | None = None,
            on_text: TextFn | None = None, on_progress: ProgressFn | None = None) -> Answer:
        """Answer one chat turn (blocking); streamed text goes to `on_text`.
        `mode` forces a modality by name (None: the router picks)."""
        from yoc_assistant.app.conversation_log import log_request, with_seed
        from yoc_assistant.assistant import Request
        from yoc_assistant.library import Library
        from yoc_assistant.library.ingest import normalize_file

        images = [normalize_file(Path(image).expanduser()).image] if image is not None else []
        backbone = self.load_backbone()
        conversation = self._conversation_for(backbone)
        request = with_seed(Request(text=text, images=images, mode=mode, seed=self.seed))
        with Library.open() as lib:
            # The assistant outlives this call (it caches loaded concepts), but an
            # SQLite connection belongs to the thread that opened it: lend it this one.
            conversation.assistant.library = lib
            try:
                with log_request(lib, request, source="chat", backbone=backbone) as entry:
                    turn = conversation.ask(request, on_text=on_text, on_progress=on_progress)
                    entry.response = turn.response
            finally:
                conversation.assistant.library = None
        response = turn.response
        return Answer(modality=response.modality, text=response.text,
                      image_paths=list(response.image_paths),
                      probabilities=dict(response.probabilities), files=list(response.files))

    def plugins(self) -> Any:
        """The installed modality plugins (found once; no torch)."""
        with self._lock:
            if self._plugins is None:
                from yoc_assistant.app.plugins import load_plugins

                self._plugins = load_plugins()
            return self._plugins

    def chat_commands(self) -> dict[str, str]:
        """'/name' (and '/alias') -> modality name, for every installed modality."""
        commands: dict[str, str] = {}
        for modality in self.plugins().get_modalities():
            for word in (modality.name, *modality.aliases):
                commands.setdefault(f"/{word}", modality.name)
        return commands

    def _conversation_for(self, backbone: Any) -> Any:
        from yoc_assistant.assistant import Assistant, Conversation

        plugins = self.plugins()
        with self._lock:
            if self._conversation is None:
                self._conversation = Conversation(Assistant(backbone, None, plugins))
            return self._conversation


# One loaded copy per (source, precision, device) for the whole process: the
# Pilot tests open many apps on the same tiny checkpoint.
_LOADED: dict[tuple[str, str, str], Any] = {}
_LOADED_LOCK = threading.Lock()


def _load_cached(source: str, precision: str | None, device: str | None) -> Any:
    from yoc_assistant.app.backbones import plan_backbone

    plan = plan_backbone("training", source=source, precision=precision or "auto", device=device)
    key = (plan.source, plan.precision, plan.device)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = plan.load()
        return _LOADED[key]


def _row(concept: Concept) -> ConceptRow:
    return ConceptRow(name=concept.name, status=concept.status, photos=concept.photos,
                      last_trained=_short_time(concept.last_trained or ""),
                      metrics=quality_summary(concept.quality) or format_metrics(concept.metrics))


def quality_summary(quality: dict[str, Any] | None) -> str:
    """The measured quality for the table, as `yoc concepts` shows it ("near chance" too)."""
    from yoc_assistant.app.quality import summary

    return summary(quality)


def _short_time(stamp: str) -> str:
    """'2025-06-01T12:34:56+00:00' -> '2025-06-01 12:34'."""
    return str(stamp).replace("T", " ")[:16]


# metric key (as the trainer writes it) -> short column label
METRIC_LABELS = {"recognition": "recog", "clip_i": "clip-i"}


def format_metrics(metrics: Any) -> str:
    """A short text for the table: 'recog 0.84 clip-i 0.71', else 'loss 6.02', else ''."""
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            return ""
    if not isinstance(metrics, dict):
        return ""
    parts = [f"{label} {float(metrics[key]):.2f}" for key, label in METRIC_LABELS.items()
             if isinstance(metrics.get(key), int | float)]
    if not parts and isinstance(metrics.get("final_loss"), int | float):
        parts.append(f"loss {float(metrics['final_loss']):.2f}")
    return " ".join(parts)


def _summary(report: IngestReport, name: str) -> str:
    count = len(report.accepted)
    text = f"added <{name}> with {count} photo{'s' if count != 1 else ''}"
    if report.skipped:
        text += f"; skipped {len(report.skipped)}: " + "; ".join(
            f"{path.name}: {why}" for path, why in report.skipped[:2])
    if report.warnings:
        text += f" ({report.warnings[0]})"
    return text
