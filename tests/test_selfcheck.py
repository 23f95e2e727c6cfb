"""Self-check (`personalize.selfcheck`): each picture of a concept is the best of k samples
by the concept's own recognition; the kept sample's seed redraws it alone; the default k
is the checkpoint's, read the same way by every entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from assistant_helpers import TINY, make_ready_concept, tiny_backbone
from PIL import Image

from yoc_assistant.assistant import Assistant, PluginManager, Request
from yoc_assistant.errors import UserInputError
from yoc_assistant.library.core import Library
from yoc_assistant.personalize import selfcheck
from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors


@pytest.fixture(scope="module")
def wordy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint with the toy world's words: "Yes" and "No" are two tokens
    (in tiny-anole-a's byte-level vocabulary they start alike, and no check can tell)."""
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint
    from yoc_assistant.toyworld import language

    return write_tiny_checkpoint(tmp_path_factory.mktemp("wordy") / "ckpt", num_layers=1,
                                 words=language.vocabulary(), seed=3)


@pytest.fixture(scope="module")
def bb(wordy: Path):
    from yoc_assistant.backbone import Backbone

    return Backbone.load(str(wordy), precision="fp32", device="cpu")


def two_concepts(bb) -> ConceptSet:  # noqa: ANN001
    groups = {"generation": 4, "understanding": 4}
    return ConceptSet(bb, [ConceptVectors.initialize(bb, "a", groups, seed=1),
                           ConceptVectors.initialize(bb, "b", groups, seed=2)])


def by_sum(ids: torch.Tensor) -> torch.Tensor:
    """A stand-in judge that is easy to recompute: larger token ids score higher."""
    return ids.float().sum(1)


def test_one_candidate_is_plain_sampling(bb) -> None:  # noqa: ANN001
    prompt = bb.prompt_ids(["a red star"])
    plain = bb.generate_images(prompt, n=2, seed=7, cfg_scale=1.0)
    checked = selfcheck.draw_checked(bb, prompt, n=2, candidates=1, check=by_sum, seed=7, cfg_scale=1.0)
    assert torch.equal(plain.ids, checked.ids) and checked.seeds == [7, 8]


def test_each_picture_is_its_best_candidate_and_its_seed_redraws_it(bb) -> None:  # noqa: ANN001
    prompt = bb.prompt_ids(["a red star"])
    out = selfcheck.draw_checked(bb, prompt, n=2, candidates=3, check=by_sum, seed=10, cfg_scale=1.0,
                                 decoding="sequential")
    assert out.ids.shape[0] == 2 and len(out.images) == 2
    for i in range(2):
        drawn = bb.generate_images(prompt, n=3, seed=10 + 3 * i, cfg_scale=1.0, decoding="sequential",
                                   decode=False)
        best = int(torch.argmax(by_sum(drawn.ids)))
        assert torch.equal(out.ids[i], drawn.ids[best])
        assert out.seeds[i] == 10 + 3 * i + best
        alone = bb.generate_images(prompt, n=1, seed=out.seeds[i], cfg_scale=1.0, decoding="sequential",
                                   decode=False)
        assert torch.equal(alone.ids[0], out.ids[i])


def test_several_concepts_must_all_pass_the_check(bb) -> None:  # noqa: ANN001
    cs = two_concepts(bb)
    ids = bb.generate_images(bb.prompt_ids(["a red star"]), n=4, seed=3, cfg_scale=1.0, decode=False).ids
    a, b = selfcheck.concept_check(bb, cs, ["a"])(ids), selfcheck.concept_check(bb, cs, ["b"])(ids)
    both = selfcheck.concept_check(bb, cs, ["a", "b"])(ids)
    assert not torch.equal(a, b) and torch.equal(both, torch.minimum(a, b))
    with pytest.raises(ValueError):
        selfcheck.concept_check(bb, cs, [])


def test_the_check_asks_as_yoc_ask_does(bb) -> None:  # noqa: ANN001
    """A positive margin wherever the recognition answer `yoc ask` gives starts with Yes."""
    from yoc_assistant.personalize.evaluate import forced_recognition_prompt, said_yes

    cs = two_concepts(bb)
    ids = bb.generate_images(bb.prompt_ids(["a red star"]), n=6, seed=5, cfg_scale=1.0, decode=False).ids
    margins = selfcheck.concept_check(bb, cs, ["a"])(ids)
    prompts = [forced_recognition_prompt(bb, cs, "a", row.tolist()) for row in ids]
    direct = selfcheck.yes_margins(bb, prompts, cs.extra)
    assert torch.allclose(margins, direct)
    for yes, margin in zip(said_yes(bb, cs, "a", prompts), margins, strict=True):
        assert not yes or margin > 0


def test_a_concept_without_an_understanding_group_is_not_checked(bb) -> None:  # noqa: ANN001
    """A concept trained with the image modality alone cannot be asked about a photo: its
    pictures are drawn unchecked, not refused."""
    from yoc_assistant.personalize.evaluate import generate_concept_images, generation_prompt

    cs = ConceptSet(bb, [ConceptVectors.initialize(bb, "g", {"generation": 4}, seed=1), *two_concepts(bb).concepts])
    assert selfcheck.checkable(cs, ["g", "a", "missing"]) == ["a"] and selfcheck.checkable(None, ["a"]) == []
    images = generate_concept_images(bb, cs, "g", 2, seed=1, candidates=3)
    plain = bb.generate_images(generation_prompt(bb, cs, "g"), n=2, extra=cs.extra, seed=1)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in plain.images]


@pytest.mark.parametrize("bad", [0, -1, 65, 2.5, True, "4"])
def test_bad_candidate_counts_are_refused(bb, bad) -> None:  # noqa: ANN001
    with pytest.raises(UserInputError, match="candidates"):
        selfcheck.draw_checked(bb, bb.prompt_ids(["x"]), n=1, candidates=bad, check=by_sum)


def with_candidates(tmp_path: Path, value: object, source: Path = TINY) -> Path:
    folder = tmp_path / f"ckpt-{value!s}"
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "yoc_draw_candidates": value}))
    return folder


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (1, 1), (0, 1), (100, 1), ("8", 1), (True, 1)])
def test_the_default_is_the_checkpoints(tmp_path: Path, value: object, expected: int) -> None:
    from yoc_assistant.backbone.loading import draw_candidates_of

    assert draw_candidates_of(with_candidates(tmp_path, value)) == expected
    assert draw_candidates_of(TINY) == 1  # no key: plain sampling


def image_only() -> PluginManager:
    import yoc_image

    plugins = PluginManager(load=False)
    plugins.register(yoc_image, "image")
    return plugins


def test_a_drawing_request_uses_the_checkpoints_default(tmp_path: Path, yoc_home: Path, wordy: Path) -> None:
    """`Request.candidates` None: the checkpoint's k (here 3), so picture 2's candidates
    start at seed + 3; with `candidates=1` the kept pictures redraw exactly; without a
    concept nothing is checked."""
    from yoc_assistant.backbone import Backbone

    bb = Backbone.load(str(with_candidates(tmp_path, 3, wordy)), precision="fp32", device="cpu")
    assert selfcheck.default_candidates(bb) == 3
    with Library.open() as library:
        make_ready_concept(library, bb, "bo")
        assistant = Assistant(bb, library, image_only(), log_path=tmp_path / "router.jsonl")

        def draw(out: str) -> list[tuple[int, np.ndarray]]:
            request = Request("draw <bo> .", mode="image", seed=20, n=2, cfg_scale=1.0, out=tmp_path / out)
            pictures = []
            for path in assistant.respond(request).image_paths:
                with Image.open(path) as img:
                    pictures.append((int(img.text["seed"]), np.asarray(img.convert("RGB"))))
            return pictures

        checked = draw("checked")
        assert 20 <= checked[0][0] <= 22 and 23 <= checked[1][0] <= 25
        for seed, pixels in checked:  # each kept picture, drawn alone from its seed
            alone = Request("draw <bo> .", mode="image", seed=seed, n=1, cfg_scale=1.0,
                            out=tmp_path / f"alone-{seed}", candidates=1)
            (path,) = assistant.respond(alone).image_paths
            with Image.open(path) as img:  # decoded in a batch of 1, not 2: rounding may differ by 1
                diff = np.abs(np.asarray(img, np.int16) - np.asarray(pixels, np.int16))
                assert diff.max() <= 1
        plain = Request("draw a red star .", mode="image", seed=20, n=2, cfg_scale=1.0, out=tmp_path / "plain")
        seeds = []
        for path in assistant.respond(plain).image_paths:
            with Image.open(path) as img:
                seeds.append(int(img.text["seed"]))
        assert seeds == [20, 21]  # no concept, no check: plain samples


def test_no_check_where_yes_and_no_start_alike() -> None:
    tiny = tiny_backbone()
    with pytest.raises(UserInputError, match="same first token"):
        selfcheck.yes_margins(tiny, [tiny.prompt_ids(["x"])], None)


def test_draw_refuses_a_bad_candidates_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from yoc_assistant.cli import cli

    monkeypatch.setenv("YOC_BACKBONE", str(TINY))
    result = CliRunner().invoke(cli, ["draw", "x", "--candidates", "0"])
    assert result.exit_code == 2 and "candidates" in result.output
