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


# -- item 15: numbers checked up front, before torch ------------------------------------------
OPTION_CASES = [
    (["train", "bo", "--seed", str(2**64)], "--seed"),
    (["train", "bo", "--seed", "-1"], "--seed"),
    (["draw", "a red ball", "--seed", str(2**64)], "--seed"),
    (["ask", "hello", "--seed", str(2**64)], "--seed"),
    (["draw", "a red ball", "--cfg", "inf"], "--cfg"),
    (["draw", "a red ball", "--cfg", "nan"], "--cfg"),
]


@pytest.mark.parametrize(("args", "needle"), OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_bad_numbers_are_refused_before_torch_loads(tmp_path: Path, args: list[str], needle: str) -> None:
    from test_cli_failfast import yoc_probe

    photos(tmp_path / "bo", 1)
    assert yoc("add-concept", tmp_path / "bo", "--name", "bo", "--no-train").exit_code == 0
    done = yoc_probe(*args)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert "torch imported: False" in done.stderr


def test_train_config_refuses_a_seed_torch_cannot_take() -> None:
    from yoc_assistant.personalize.trainer import TrainConfig

    with pytest.raises(UserInputError, match="seed"):
        TrainConfig(seed=2**64).validate()
