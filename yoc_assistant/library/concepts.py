"""Adding a concept from photos: the steps shared by `yoc add-concept` and the app.

Order, for crash-safety: validate the name, validate and store the photo files,
then ONE transaction creates the concept row and its links. A kill before that
transaction leaves only unreferenced files; a kill after leaves a complete
'new' concept that re-adding continues.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from yoc_assistant.errors import UserInputError
from yoc_assistant.library.core import Library
from yoc_assistant.library.ingest import IngestReport, ProgressFn
from yoc_assistant.library.models import check_name, check_text_fields

MIN_PHOTOS = 1
RECOMMENDED_PHOTOS = 3
# Above this a folder most likely holds more than the one thing (other photos, a pool):
# every photo is taken as a positive, so say so.
MANY_PHOTOS = 20
BEST_PHOTOS_HINT = "3-5 different photos of the one thing work best"


class NoUsablePhotosError(UserInputError):
    """None of the given files can be used; `report` says why for each."""

    def __init__(self, name: str, report: IngestReport) -> None:
        if report.rejected or report.duplicates:
            why = "; ".join(f"{p.name}: {r}" for p, r in (report.rejected + report.duplicates)[:5])
            more = len(report.rejected) + len(report.duplicates) - 5
            msg = f"no usable photo for {name!r} ({why}{f'; and {more} more' if more > 0 else ''})"
        else:
            msg = f"no photos found for {name!r}: give image files or a folder that holds some"
        super().__init__(msg)
        self.report = report


def check_can_add(lib: Library, name: str, *, display_name: str | None = None,
                  about: str | None = None) -> None:
    """Raise before any work if `name` (or a text field) is invalid, or the name is taken by a
    concept that cannot be continued."""
    check_name(name)
    check_text_fields(display_name, about)
    existing = lib.get_concept(name)
    if existing is not None and not lib.can_resume(existing):
        raise UserInputError(
            f"a concept named {existing.name!r} already exists (status {existing.status}; names ignore "
            "case). Choose another name, or remove it first with `yoc concepts rm`."
        )


def add_concept_from_paths(
    lib: Library,
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    name: str,
    *,
    about: str | None = None,
    display_name: str | None = None,
    backbone: str | None = None,
    on_progress: ProgressFn | None = None,
    recursive: bool = False,
) -> IngestReport:
    """Validate and store the photos, then create (or continue) the concept.

    A folder gives the photos at its top; its subfolders only when `recursive` (a
    folder of photos often keeps others beside them: held-out ones, other things).

    Returns the report: `accepted` = photos newly linked, `rejected`/`duplicates`
    with reasons, `warnings`, and `concept`. Raises NoUsablePhotosError (exit 2)
    when not one photo can be used; nothing is created then.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    check_can_add(lib, name, display_name=display_name, about=about)
    staged = lib.ingest([Path(p) for p in paths], on_progress, recursive=recursive)
    existing = lib.get_concept(name)
    if not staged.accepted and (existing is None or existing.photos < MIN_PHOTOS):
        raise NoUsablePhotosError(name, staged)
    concept, linked = lib.add_concept(name, staged.accepted, display_name=display_name, about=about,
                                      backbone=backbone)
    report = IngestReport(accepted=linked.accepted, rejected=staged.rejected, notes=staged.notes,
                          duplicates=staged.duplicates + linked.duplicates, concept=concept,
                          skipped_folders=staged.skipped_folders, already=linked.already)
    if staged.skipped_folders:
        shown = ", ".join(f"{p.name}/" for p in staged.skipped_folders[:5])
        more = len(staged.skipped_folders) - 5
        report.warnings.append(
            f"subfolders not read: {shown}{f' and {more} more' if more > 0 else ''} "
            "(only the photos at the top of a folder are; pass --recursive to read subfolders too)"
        )
    if concept.photos < RECOMMENDED_PHOTOS:
        report.warnings.append(
            f"only {concept.photos} photo{'s' if concept.photos != 1 else ''} of {concept.name!r}: "
            f"{RECOMMENDED_PHOTOS}-5 different photos give much better results"
        )
    elif concept.photos > MANY_PHOTOS:
        report.warnings.append(
            f"{concept.photos} photos of {concept.name!r}, every one taken as a photo of it: "
            f"{BEST_PHOTOS_HINT}. If the folder holds other things, remove the concept "
            f"(`yoc concepts rm {concept.name}`) and add only its own photos"
        )
    return report


add_concept_from_folder = add_concept_from_paths  # the app's name for it
