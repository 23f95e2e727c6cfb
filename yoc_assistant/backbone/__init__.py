"""The frozen Chameleon-family model: loading, image tokens in and out, decoding.

Knows nothing of concepts: learned tokens reach it only as `ExtraTokens`
(extra input-embedding rows and extra head rows, addressed by ids >= vocab_size).
"""

from __future__ import annotations

from yoc_assistant.backbone.core import Backbone, ExtraTokens, GeneratedImages, GeneratedText
from yoc_assistant.backbone.quantize import quiet_torchao_log

quiet_torchao_log()

__all__ = ["Backbone", "ExtraTokens", "GeneratedImages", "GeneratedText"]
