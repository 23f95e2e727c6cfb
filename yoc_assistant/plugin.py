"""The published plugin contract: everything a modality plugin needs, from one module.

    from yoc_assistant.plugin import Modality, Response, hookimpl, output_paths

A plugin is a module named by an entry point in the group `yoc` (see docs/plugins.md).
It implements `yoc_modalities()` (required for a modality) and may implement
`yoc_commands()` (click commands added to the `yoc` command line). First-party
modalities (plugins/yoc-text, plugins/yoc-image) import from here only.

Importing this module does not import torch.
"""

from __future__ import annotations

from yoc_assistant.assistant.hookspecs import hookimpl
from yoc_assistant.assistant.modality import (
    Modality,
    ProgressFn,
    Request,
    RespondContext,
    Response,
    TextFn,
)
from yoc_assistant.assistant.outputs import output_paths, slug, write_png
from yoc_assistant.personalize import phrasings
from yoc_assistant.personalize.data import (
    BuildContext,
    Example,
    generation_examples,
    make_example,
    qa_examples,
    recognition_examples,
    routing_examples,
    text_ids,
    understanding_examples,
)

__all__ = [
    "BuildContext", "Example", "Modality", "ProgressFn", "Request", "RespondContext", "Response",
    "TextFn", "generation_examples", "hookimpl", "make_example", "output_paths", "phrasings", "qa_examples",
    "recognition_examples", "routing_examples", "slug", "text_ids", "understanding_examples",
    "write_png",
]
