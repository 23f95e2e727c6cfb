"""An answer's picture, drawn with textual-image, with the saved file's path under it.

textual-image picks Kitty graphics, Sixel or half-blocks from what the terminal
answers when it is first imported (run_app imports it before the app starts).
`YOC_IMAGE_RENDERER` = auto | tgp | sixel | halfcell | unicode forces one (tests
use halfcell/unicode, which need no terminal).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from yoc_assistant import settings


def image_widget_class() -> type[Widget]:
    """The textual-image widget class for this terminal (or as forced)."""
    from textual_image import widget as ti

    choice = settings.image_renderer()
    return {
        "tgp": ti.TGPImage,
        "kitty": ti.TGPImage,
        "sixel": ti.SixelImage,
        "halfcell": ti.HalfcellImage,
        "unicode": ti.UnicodeImage,
    }.get(choice, ti.Image)


class ImageView(Vertical):
    """One generated (or attached) picture and where it is on disk."""

    def __init__(self, path: Path) -> None:
        super().__init__(classes="image-view")
        self.path = Path(path)

    def compose(self) -> ComposeResult:
        yield image_widget_class()(str(self.path), classes="picture")
        yield Static(Text(f"saved: {self.path}", style="italic"), classes="image-path")
