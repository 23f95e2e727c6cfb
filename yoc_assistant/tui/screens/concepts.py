"""The library as a table: add, train, rename, delete, export concepts."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from yoc_assistant.tui.screens.add_concept import AddConceptScreen, NewConcept
from yoc_assistant.tui.screens.confirm import ConfirmScreen
from yoc_assistant.tui.screens.text_prompt import TextPromptScreen
from yoc_assistant.tui.services import ConceptRow
from yoc_assistant.tui.widgets import StatusLine, TrainingPanel

COLUMNS = ("name", "photos", "status", "last trained", "metrics")


class ConceptsScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "add", "Add"),
        Binding("t", "train", "Train"),
        Binding("x", "cancel_training", "Cancel"),
        Binding("r", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
        Binding("e", "export", "Export"),
    ]

    def __init__(self) -> None:
        super().__init__(id="concepts")

    def compose(self) -> ComposeResult:
        yield StatusLine(classes="status-line")
        table: DataTable[str] = DataTable(id="concept-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Label("No concepts yet: press a to add one from a folder of photos.",
                    id="empty-hint")
        yield TrainingPanel(classes="training-panel")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    # -- table ---------------------------------------------------------------------------
    @work(thread=True, group="concepts-list", exclusive=True, exit_on_error=False)
    def reload(self) -> None:
        app = self.app
        try:
            rows = app.services.concepts()
        except Exception as err:
            app.call_from_thread(app.show_error, err)
            return
        app.call_from_thread(self.show_rows, rows)

    def show_rows(self, rows: list[ConceptRow]) -> None:
        self.app.set_concept_names([row.name for row in rows])
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        training = self.app.training.name if self.app.training is not None else None
        for row in rows:
            status = "training" if row.name == training else row.status
            table.add_row(row.name, str(row.photos), status, row.last_trained or "never",
                          row.metrics or "-", key=row.name)
        self.query_one("#empty-hint").display = not rows
        if selected is not None and selected in {row.name for row in rows}:
            table.move_cursor(row=table.get_row_index(selected))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def _need_selection(self) -> str | None:
        name = self.selected()
        if name is None:
            self.notify("no concept selected", severity="warning")
        return name

    # -- actions -------------------------------------------------------------------------
    def action_add(self) -> None:
        def chosen(new: NewConcept | None) -> None:
            if new is not None:
                self.add_concept(new)

        self.app.push_screen(AddConceptScreen(), chosen)

    @work(thread=True, group="concepts-edit", exit_on_error=False)
    def add_concept(self, new: NewConcept) -> None:
        app = self.app
        app.call_from_thread(self.notify, f"adding <{new.name}>…", timeout=3)
        try:
            summary = app.services.add_concept(new.folder, new.name, new.description)
        except Exception as err:
            app.call_from_thread(app.show_error, err)
            return
        app.call_from_thread(self.notify, summary, markup=False)
        app.call_from_thread(self.reload)
        app.call_from_thread(app.start_training, new.name)

    def action_train(self) -> None:
        name = self._need_selection()
        if name is not None:
            self.app.start_training(name)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_training":
            return self.app.training is not None
        return True

    def action_cancel_training(self) -> None:
        self.app.action_cancel_training()

    def action_rename(self) -> None:
        old = self._need_selection()
        if old is None:
            return

        def renamed(new: str | None) -> None:
            if new and new.strip("<>") != old:
                self._edit("rename", old, new.strip("<>"))

        self.app.push_screen(TextPromptScreen(f"Rename <{old}> to:", value=old), renamed)

    def action_delete(self) -> None:
        name = self._need_selection()
        if name is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._edit("remove", name)

        self.app.push_screen(ConfirmScreen(f"Delete <{name}> and its learned vectors?",
                                           yes="Delete"), confirmed)

    def action_export(self) -> None:
        name = self._need_selection()
        if name is None:
            return

        def chosen(dest: str | None) -> None:
            if dest:
                self._edit("export", name, dest)

        self.app.push_screen(TextPromptScreen(f"Export <{name}> to folder:", value=str(Path.cwd())),
                             chosen)

    @work(thread=True, group="concepts-edit", exit_on_error=False)
    def _edit(self, what: str, name: str, arg: str = "") -> None:
        app = self.app
        services = app.services
        try:
            if what == "rename":
                services.rename(name, arg)
                message = f"renamed <{name}> to <{arg}>"
            elif what == "remove":
                services.remove(name)
                message = f"deleted <{name}>"
            else:
                message = f"exported <{name}> to {services.export(name, Path(arg))}"
        except Exception as err:
            app.call_from_thread(app.show_error, err)
            return
        app.call_from_thread(self.notify, message, markup=False)
        app.call_from_thread(self.reload)
