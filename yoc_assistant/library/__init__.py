"""The user's library: concepts, photos, training runs, caches (SQLite + files).

Never imports torch: the CLI's library commands must start fast.

    from yoc_assistant.library import Library
    with Library.open() as lib:                       # $YOC_HOME or the user data dir
        report = add_concept_from_paths(lib, ["photos/"], "bo")   # library.concepts
        lib.concept_images("bo", role="positive")     # [ImageRecord(sha256, path, width, height, role)]

API of `Library` (every write is one transaction; files are written before rows):
* concepts: create_concept(name, display_name, about, backbone), get_concept(name) -> Concept | None
  (case-insensitive), require_concept(name) (NotFoundError with close names), list_concepts(),
  rename(old, new), remove(name), update_concept(name, ...), set_status(name, status),
  set_vectors(name, path, metrics, status="ready", backbone=, backbone_fingerprint=),
  concept_dir(name) (vector files), concept_runs_dir(name) (checkpoints), can_resume(concept).
* photos: ingest(paths) -> IngestReport (store only), add_concept(name, stored_images, ...),
  add_images(name, paths, role), link_images(name, sha256s, role), unlink_images(...),
  concept_images(name, role=None), image_path(sha256), get_image(sha256).
* pool: add_pool_images(paths), pool_images(), pool_count(), remove_pool_images(sha256s).
* runs: start_run(name, config, total_steps) -> id, update_run(id, step=, loss=, metrics=,
  checkpoint_path=, total_steps=), finish_run(id, status, metrics=, error=), latest_run(name),
  runs(name), get_run(id), recover_stale_runs() (done by open()).
* caches: cache_path(kind, key, model), cache_get(kind, key, model) -> Path | None,
  cache_put(kind, key, model, path), cache_get_many / cache_put_many, cache_clear().
* upkeep: collect_garbage() (store files no row refers to, left by a killed ingest).
Bundles: `library.bundle.export_bundle(lib, name, out)`, `import_bundle(lib, file, ...)`.
"""

from __future__ import annotations

from yoc_assistant.library.core import Library
from yoc_assistant.library.db import LibraryError
from yoc_assistant.library.ingest import ImageRejected, IngestReport, StoredImage
from yoc_assistant.library.models import Concept, ImageRecord, TrainingRun, check_name

__all__ = [
    "Concept",
    "ImageRecord",
    "ImageRejected",
    "IngestReport",
    "Library",
    "LibraryError",
    "StoredImage",
    "TrainingRun",
    "check_name",
]
