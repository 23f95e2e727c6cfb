"""The assistant: concept mentions, the self-prompting router, the plugin manager.

Public API for plugins: `Modality`, `Request`, `Response`, `RespondContext`,
`hookimpl`, `output_paths`, `write_png`. Importing this package does not import torch.
"""

from __future__ import annotations

from yoc_assistant.assistant.assistant import Assistant
from yoc_assistant.assistant.conversation import Conversation, Turn
from yoc_assistant.assistant.hookspecs import hookimpl, hookspec
from yoc_assistant.assistant.mentions import Mention, find_mentions, mentioned_names, split_mentions
from yoc_assistant.assistant.modality import Modality, Request, RespondContext, Response
from yoc_assistant.assistant.outputs import output_paths, slug, write_png
from yoc_assistant.assistant.plugins import PluginFailure, PluginInfo, PluginManager
from yoc_assistant.assistant.router import RouteDecision, Router, request_parts

__all__ = [
    "Assistant", "Conversation", "Mention", "Modality", "PluginFailure", "PluginInfo",
    "PluginManager", "Request", "RespondContext", "Response", "RouteDecision", "Router", "Turn",
    "find_mentions", "hookimpl", "hookspec", "mentioned_names", "output_paths", "request_parts",
    "slug", "split_mentions", "write_png",
]
