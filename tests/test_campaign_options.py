"""Campaign, category "options": names and numbers checked up front, with clear messages
(issue 14, items 15 and 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from library_images import photos
from test_cli_concepts import yoc

from yoc_assistant.errors import UserInputError
from yoc_assistant.library import Library
from yoc_assistant.library.models import check_name


# -- item 16: a full match for names ---------------------------------------------------------
@pytest.mark.parametrize("name", ["bo\n", "bo\r\n", "\nbo", "bo\t", "bo "])
def test_a_name_with_whitespace_around_it_is_refused(name: str) -> None:
    with pytest.raises(UserInputError, match="not allowed"):
        check_name(name)


def test_add_concept_with_a_trailing_newline_adds_no_second_concept(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    photos(folder, 1)
    assert yoc("add-concept", folder, "--name", "bo", "--no-train").exit_code == 0
    again = yoc("add-concept", folder, "--name", "bo\n", "--no-train")
    assert again.exit_code == 2 and "not allowed" in again.stderr
    with Library.open() as lib:
        assert [c.name for c in lib.list_concepts()] == ["bo"]
