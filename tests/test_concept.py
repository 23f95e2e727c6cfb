"""Concept vectors: initialization, files (round trip, wrong backbone, damage), ConceptSet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import small_random_backbone
from safetensors import safe_open
from safetensors.torch import save_file

from yoc_assistant import Backbone
from yoc_assistant.errors import IncompatibleError, NotFoundError, UserInputError
from yoc_assistant.personalize.concept import (
    DEFAULT_GROUPS,
    ConceptSet,
    ConceptVectors,
    load_concepts,
)


@pytest.fixture(scope="module")
def other_bb(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return small_random_backbone(tmp_path_factory.mktemp("other") / "narrow", 3)


def test_default_layout_is_identifier_plus_32_rows(bb: Backbone) -> None:
    vec = ConceptVectors.initialize(bb, "bo", seed=1)
    assert vec.groups == DEFAULT_GROUPS == {"generation": 16, "understanding": 16}
    assert vec.input_rows.shape == vec.output_rows.shape == (33, bb.hidden_size)
    assert vec.group_slice("generation") == slice(1, 17)
    assert vec.group_slice("understanding") == slice(17, 33)
    with pytest.raises(NotFoundError, match="audio"):
        vec.group_slice("audio")


def test_initialization_is_seeded_and_near_the_backbone_rows(bb: Backbone) -> None:
    a = ConceptVectors.initialize(bb, "bo", seed=7)
    b = ConceptVectors.initialize(bb, "bo", seed=7)
    c = ConceptVectors.initialize(bb, "bo", seed=8)
    assert torch.equal(a.input_rows, b.input_rows) and torch.equal(a.output_rows, b.output_rows)
    assert not torch.equal(a.input_rows, c.input_rows)
    # Rows differ from each other (noise), but sit near the mean head row: the new
    # tokens' logits are of the same size as the checkpoint's own.
    assert len({tuple(r.tolist()) for r in a.input_rows}) == a.n_rows
    hidden = torch.randn(8, bb.hidden_size, generator=torch.Generator().manual_seed(0))
    base = bb.model.lm_head(hidden).float()
    new = hidden @ a.output_rows.T
    assert new.abs().mean() < 3 * base.abs().mean()


def test_plugin_group_sizes(bb: Backbone) -> None:
    vec = ConceptVectors.initialize(bb, "bo", {"generation": 4, "understanding": 3, "audio": 2})
    assert vec.n_rows == 10 and vec.group_slice("audio") == slice(8, 10)
    with pytest.raises(UserInputError, match="size"):
        ConceptVectors.initialize(bb, "bo", {"generation": 0})


def test_save_load_round_trip(bb: Backbone, tmp_path: Path) -> None:
    vec = ConceptVectors.initialize(bb, "bo", {"generation": 4, "understanding": 5, "audio": 1}, seed=2)
    path = vec.save(tmp_path / "bo.safetensors", bb)
    back = ConceptVectors.load(path, bb)
    assert back.name == "bo" and back.groups == vec.groups
    assert list(back.groups) == ["generation", "understanding", "audio"]  # order kept
    assert torch.equal(back.input_rows, vec.input_rows)
    assert torch.equal(back.output_rows, vec.output_rows)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["backbone"] == bb.name and meta["backbone_fingerprint"] == bb.fingerprint
    assert meta["hidden_size"] == str(bb.hidden_size) and meta["vocab_size"] == str(bb.vocab_size)
    assert json.loads(meta["groups"]) == [["generation", 4], ["understanding", 5], ["audio", 1]]
    assert int(meta["format_version"]) >= 1
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_other_backbone_is_refused_naming_both(bb: Backbone, other_bb: Backbone, tmp_path: Path) -> None:
    path = ConceptVectors.initialize(other_bb, "bo").save(tmp_path / "bo.safetensors", other_bb)
    with pytest.raises(IncompatibleError) as err:
        ConceptVectors.load(path, bb)
    msg = str(err.value)
    assert str(path) in msg and other_bb.name in msg and bb.name in msg and "hidden size" in msg


def test_same_width_other_vocabulary_is_refused(bb: Backbone, tmp_path: Path) -> None:
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "words", hidden_size=bb.hidden_size,
                                   words=["cat", "dog", "is"], num_layers=1, seed=5)
    other = Backbone.load(str(folder), precision="fp32", device="cpu")
    path = ConceptVectors.initialize(other, "bo").save(tmp_path / "bo.safetensors", other)
    with pytest.raises(IncompatibleError, match="fingerprint"):
        ConceptVectors.load(path, bb)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_gives_clear_error(bb: Backbone, tmp_path: Path, damage: str) -> None:
    path = ConceptVectors.initialize(bb, "bo").save(tmp_path / "bo.safetensors", bb)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 100])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(UserInputError) as err:
        ConceptVectors.load(path, bb)
    assert str(path) in str(err.value)


def test_newer_format_and_foreign_files(bb: Backbone, tmp_path: Path) -> None:
    vec = ConceptVectors.initialize(bb, "bo")
    meta = vec.file_metadata(bb)
    meta["format_version"] = "99"
    newer = tmp_path / "newer.safetensors"
    save_file({"input_rows": vec.input_rows, "output_rows": vec.output_rows}, str(newer), metadata=meta)
    with pytest.raises(IncompatibleError, match="newer yoc"):
        ConceptVectors.load(newer, bb)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(UserInputError, match="not a yoc concept file"):
        ConceptVectors.load(foreign, bb)
    meta["format_version"] = "1"
    meta["groups"] = json.dumps([["generation", 3]])  # rows do not match the groups
    bad = tmp_path / "bad.safetensors"
    save_file({"input_rows": vec.input_rows, "output_rows": vec.output_rows}, str(bad), metadata=meta)
    with pytest.raises(UserInputError, match=str(bad)):
        ConceptVectors.load(bad, bb)
    with pytest.raises(NotFoundError):
        ConceptVectors.load(tmp_path / "missing.safetensors", bb)


def test_two_concepts_side_by_side(bb: Backbone, tmp_path: Path) -> None:
    groups = {"generation": 3, "understanding": 2}
    paths = [ConceptVectors.initialize(bb, name, groups, seed=s).save(tmp_path / f"{name}.safetensors", bb)
             for s, name in enumerate(["bo", "mug"])]
    cs = load_concepts(bb, paths)
    V = bb.vocab_size
    assert cs.identifier_id("bo") == V and cs.identifier_id("mug") == V + 6
    assert cs.group_ids("bo", "generation") == [V + 1, V + 2, V + 3]
    assert cs.group_ids("mug", "understanding") == [V + 10, V + 11]
    assert cs.group_first_ids("mug") == {"generation": V + 7, "understanding": V + 10}
    all_ids = [cs.identifier_id(n) for n in cs.names] + [
        i for n in cs.names for g in ("generation", "understanding") for i in cs.group_ids(n, g)]
    assert len(all_ids) == len(set(all_ids)) == cs.n_rows == 12

    is_id, dot = bb.tokenize(" is"), bb.tokenize(".")
    assert cs.prompt_ids("bo") == [V, *is_id, V + 1, V + 2, V + 3, V + 4, V + 5, *dot]
    assert cs.prompt_ids("mug") == [V + 6, *is_id, *range(V + 7, V + 12), *dot]

    ref = cs.lookup(V + 8)
    assert (ref.concept, ref.group, ref.index) == ("mug", "generation", 1)
    assert cs.display(V + 6) == "<mug>" and cs.lookup(5) is None

    # One prompt mentioning both: each id embeds as its own concept's row.
    extra = cs.extra
    assert len(extra) == 12
    prompt = torch.tensor(cs.prompt_ids("bo") + cs.prompt_ids("mug"))
    emb = bb.embed(prompt, extra)
    mug = cs.get("mug")
    assert torch.equal(emb[len(cs.prompt_ids("bo"))], mug.input_rows[0])
    assert torch.equal(emb[0], cs.get("bo").input_rows[0])
    logits = bb.logits(emb[-1:], extra)
    assert logits.shape[-1] == V + 12

    with pytest.raises(UserInputError, match="twice"):
        ConceptSet(bb, [cs.get("bo"), cs.get("bo")])
    with pytest.raises(NotFoundError, match="mug"):
        cs.identifier_id("cat")


def test_extra_carries_gradients_to_the_rows(bb: Backbone) -> None:
    vec = ConceptVectors.initialize(bb, "bo", {"generation": 2, "understanding": 2})
    vec.input_rows.requires_grad_(True)
    vec.output_rows.requires_grad_(True)
    cs = ConceptSet(bb, [vec])
    logits, _ = bb.forward(torch.tensor([[bb.special.bos, cs.identifier_id("bo"), 3]]), extra=cs.extra)
    logits[0, -1, cs.group_ids("bo", "understanding")[0]].backward()
    assert vec.input_rows.grad is not None and vec.input_rows.grad[0].abs().sum() > 0
    assert vec.output_rows.grad is not None and vec.output_rows.grad[3].abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())


# -- the reference photo ------------------------------------------------------------------------
def test_a_reference_photo_is_shown_in_the_prompt_and_kept_in_the_file(bb: Backbone, tmp_path: Path) -> None:
    photo = bb.image_vocab.bpe_ids[: bb.image_seq_length].tolist()
    vec = ConceptVectors.initialize(bb, "bo", seed=1)
    plain = ConceptSet(bb, [vec]).prompt_ids("bo")
    vec.reference = list(photo)
    ids = ConceptSet(bb, [vec]).prompt_ids("bo")
    sp = bb.special
    # <bo> is <rows> BOI photo EOI .  -- the rows' prompt with the photo before the full stop
    stop = len(bb.tokenize("."))
    assert ids[:-stop] == plain[:-stop] + [sp.boi, *photo, sp.eoi] and ids[-stop:] == plain[-stop:]
    saved = vec.save(tmp_path / "bo.safetensors", bb)
    from yoc_assistant.library.vectorfile import check_concept_file

    check_concept_file(saved)  # the library's torch-free check calls it usable ("ready")
    back = ConceptVectors.load(saved, bb)
    assert back.reference == photo
    assert ConceptSet(bb, [back]).prompt_ids("bo") == ids
    assert back.clone().reference == photo and back.with_rows(back.input_rows, back.output_rows).reference == photo
    assert ConceptVectors.load(ConceptVectors.initialize(bb, "x").save(tmp_path / "x.safetensors", bb), bb).reference == []


@pytest.mark.parametrize("bad", ["text ids", "negative", "floats"])
def test_a_damaged_reference_photo_is_refused_naming_the_file(bb: Backbone, tmp_path: Path, bad: str) -> None:
    vec = ConceptVectors.initialize(bb, "bo", seed=1)
    path = vec.save(tmp_path / "bo.safetensors", bb)
    with safe_open(str(path), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    tensors["reference"] = {"text ids": torch.tensor([1, 2, 3]), "negative": torch.tensor([-5]),
                            "floats": torch.tensor([0.5])}[bad]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(UserInputError, match="bo.safetensors.*reference photo"):
        ConceptVectors.load(path, bb)
    if bad == "floats":
        from yoc_assistant.library.vectorfile import VectorFileError, check_concept_file

        with pytest.raises(VectorFileError, match="bo.safetensors.*reference photo"):
            check_concept_file(path)


def test_the_training_photos_are_kept_in_the_file_for_the_witness(bb: Backbone, tmp_path: Path) -> None:
    ids = bb.image_vocab.bpe_ids.tolist()
    n = bb.image_seq_length
    photos = [ids[k:k + n] for k in range(3)]
    vec = ConceptVectors.initialize(bb, "bo", seed=1)
    vec.reference, vec.photos = list(photos[0]), [list(p) for p in photos]
    plain = ConceptSet(bb, [vec]).prompt_ids("bo")
    saved = vec.save(tmp_path / "bo.safetensors", bb)
    from yoc_assistant.library.vectorfile import MAX_PHOTOS, check_concept_file
    from yoc_assistant.personalize.concept import MAX_WITNESS_PHOTOS

    assert MAX_PHOTOS == MAX_WITNESS_PHOTOS  # the library's torch-free check reads what yoc writes
    check_concept_file(saved)
    back = ConceptVectors.load(saved, bb)
    assert back.photos == photos and back.reference == photos[0]
    assert ConceptSet(bb, [back]).prompt_ids("bo") == plain  # the prompt shows the reference only
    assert back.clone().photos == photos and back.with_rows(back.input_rows, back.output_rows).photos == photos
    vec.photos = [photos[0], photos[1][:-1]]  # photos of two backbones: refused, nothing written
    with pytest.raises(UserInputError, match="witness photos"):
        vec.save(tmp_path / "odd.safetensors", bb)
    assert not (tmp_path / "odd.safetensors").exists()


@pytest.mark.parametrize("bad", ["one row", "negative", "floats", "not image ids"])
def test_damaged_witness_photos_are_refused_naming_the_file(bb: Backbone, tmp_path: Path, bad: str) -> None:
    vec = ConceptVectors.initialize(bb, "bo", seed=1)
    path = vec.save(tmp_path / "bo.safetensors", bb)
    with safe_open(str(path), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    tensors["photos"] = {"one row": torch.tensor([1, 2, 3]), "negative": torch.tensor([[-5, 1]]),
                         "floats": torch.tensor([[0.5]]), "not image ids": torch.tensor([[1, 2, 3]])}[bad]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(UserInputError, match="bo.safetensors.*witness photos"):
        ConceptVectors.load(path, bb)
    if bad in ("one row", "floats"):
        from yoc_assistant.library.vectorfile import VectorFileError, check_concept_file

        with pytest.raises(VectorFileError, match="bo.safetensors.*witness photos"):
            check_concept_file(path)


def test_the_toy_backbones_recipe_shows_a_reference_photo_unless_told_not_to() -> None:
    from yoc_assistant.app.training import config_from_options
    from yoc_assistant.backbone.loading import recipe_of
    from yoc_assistant.personalize.trainer import TrainConfig
    from yoc_assistant.toyworld.common import BACKBONE_DIR
    from yoc_assistant.toyworld.train_backbone import RECIPE

    recipe = recipe_of(BACKBONE_DIR)
    assert recipe == RECIPE  # the shipped checkpoint carries the recipe its exporter writes
    assert TrainConfig().reference_photo is False  # the paper's default elsewhere
    assert config_from_options({}, recipe=recipe).reference_photo is True
    assert config_from_options({"reference_photo": False}, recipe=recipe).reference_photo is False


def test_the_toy_backbones_recipe_takes_its_hard_negatives_from_the_top_of_the_ranking() -> None:
    from yoc_assistant.app.training import config_from_options
    from yoc_assistant.backbone.loading import recipe_of
    from yoc_assistant.personalize.trainer import TrainConfig
    from yoc_assistant.toyworld.common import BACKBONE_DIR

    recipe = recipe_of(BACKBONE_DIR)
    assert TrainConfig().hard_negatives == "after-soft"  # unmeasured elsewhere: unchanged
    assert config_from_options({}, recipe=recipe).hard_negatives == "shared-top"
    assert config_from_options({"hard_negatives": "top"}, recipe=recipe).hard_negatives == "top"
