"""Widgets of the yoc app."""

from __future__ import annotations

from yoc_assistant.tui.widgets.image_view import ImageView
from yoc_assistant.tui.widgets.messages import AssistantBubble, MessageList, UserBubble
from yoc_assistant.tui.widgets.prompt import PromptInput
from yoc_assistant.tui.widgets.status import StatusLine
from yoc_assistant.tui.widgets.training import TrainingPanel, TrainingState

__all__ = ["AssistantBubble", "ImageView", "MessageList", "PromptInput", "StatusLine",
           "TrainingPanel", "TrainingState", "UserBubble"]
