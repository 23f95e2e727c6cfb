"""yoc: a personal multimodal assistant on a frozen Chameleon-family backbone.

`Backbone` is imported lazily so that parts which must not import torch (the
library, the CLI's fast paths) can import this package cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from yoc_assistant.backbone import Backbone

__all__ = ["Backbone", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Backbone":
        from yoc_assistant.backbone import Backbone

        return Backbone
    raise AttributeError(name)
