"""What yoc is and its keys (F1 or ? opens it, Esc closes it)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

HELP = """\
# yoc

Teach yoc about your things from a few photos, then ask about them or for
pictures of them: `is <bo> in this photo?`, `/draw <bo> on a boat`.

## Chat
- **Enter** send · **<** then **Tab** or **→** complete a concept name
- **Ctrl+O** attach an image to the next question
- **Ctrl+R** show which modality answered, with the router's probabilities
- **/draw TEXT** ask for a picture · **/text TEXT** ask for words · **/clear**

## Concepts (F3)
- **a** add from a folder of photos (then it trains) · **t** train again
- **x** cancel training · **r** rename · **d** delete · **e** export

## Anywhere
- **F2** chat · **F3** concepts · **Ctrl+T** light/dark · **F1** or **?** help
- **Ctrl+P** all commands · **Ctrl+Q** quit. Training goes on while you chat.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "close", "Close")]

    def __init__(self) -> None:
        super().__init__(id="help")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="help-body"):
            yield Markdown(HELP)
        yield Footer(compact=True, show_command_palette=False)

    def action_close(self) -> None:
        self.dismiss(None)
