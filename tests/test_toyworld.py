"""The toy world, its training scripts (quick mode) and the shipped toy models."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from yoc_assistant.errors import UserInputError
from yoc_assistant.toyworld import language, world
from yoc_assistant.toyworld.common import BACKBONE_DIR, CLIP_DIR


def _arrays(scenes: list[world.Scene]) -> np.ndarray:
    return world.render_array(scenes)


def test_world_is_deterministic_per_seed() -> None:
    a, b = world.random_scenes(6, seed=3), world.random_scenes(6, seed=3)
    assert a == b
    assert np.array_equal(_arrays(a), _arrays(b))
    c = world.random_scenes(6, seed=4)
    assert not np.array_equal(_arrays(a), _arrays(c))
    img = world.render(a[0])
    assert img.mode == "RGB" and img.size == (world.SIZE, world.SIZE)


def test_things_differ_in_pixels_not_only_in_name() -> None:
    base = world.Scene(world.EXAMPLE_THING, "big", "sand", 16, 16, seed=9)
    pixels = np.asarray(world.render(base), dtype=np.float32)
    for other in world.lookalikes(world.EXAMPLE_THING, 1):
        moved = world.Scene(other, "big", "sand", 16, 16, seed=9)
        diff = np.abs(np.asarray(world.render(moved), dtype=np.float32) - pixels)
        assert diff.max() > 60, other


def test_lookalikes_are_exactly_one_or_two_attributes_away() -> None:
    thing = world.EXAMPLE_THING
    near, far = world.lookalikes(thing, 1), world.lookalikes(thing, 2)
    n_shape, n_colour, n_pattern = len(world.SHAPES) - 1, len(world.COLOURS) - 1, len(world.PATTERNS) - 1
    assert len(near) == n_shape + n_colour + n_pattern
    assert len(far) == n_shape * n_colour + n_shape * n_pattern + n_colour * n_pattern
    assert all(thing.distance(t) == 1 for t in near)
    assert all(thing.distance(t) == 2 for t in far)
    assert len(set(near) | set(far)) == len(near) + len(far)
    with pytest.raises(UserInputError, match="distance"):
        world.lookalikes(thing, 3)


def test_photos_of_a_thing_vary_but_show_the_same_thing() -> None:
    photos = world.photos_of(world.EXAMPLE_THING, 8, seed=1)
    assert all(p.thing == world.EXAMPLE_THING for p in photos)
    assert len({(p.background, p.x, p.y, p.size) for p in photos}) > 4
    assert world.photos_of(world.EXAMPLE_THING, 8, seed=1) == photos


@pytest.mark.parametrize("seed", [0, 1, 101, 1001])
def test_photos_of_a_thing_are_near_and_far_on_different_backgrounds(seed: int) -> None:
    # One seed's independently drawn photos were once all small: a concept trained on
    # them missed big photos of itself.
    photos = world.photos_of(world.Thing("heart", "blue", "striped", "ink"), 5, seed=seed)
    sizes = [p.size for p in photos]
    assert {sizes.count("big"), sizes.count("small")} == {2, 3}
    assert len({p.background for p in photos}) == 5


def test_held_out_things_never_appear_in_pretraining_scenes() -> None:
    assert world.EXAMPLE_THING in world.HELD_OUT
    scenes = world.random_scenes(3000, seed=0)
    assert not {s.thing for s in scenes} & world.HELD_OUT


def test_thing_parse_and_bad_names() -> None:
    assert world.Thing.parse("orange dotted star").kind() == world.EXAMPLE_THING.kind()
    assert world.Thing.parse("orange dotted star", accent="cyan") == world.EXAMPLE_THING
    assert world.Thing.parse("cyan orange dotted star") == world.EXAMPLE_THING
    assert world.Thing.parse("Blue heart") == world.Thing("heart", "blue", "plain")
    with pytest.raises(UserInputError, match="cannot read a thing"):
        world.Thing.parse("a very nice thing")
    with pytest.raises(UserInputError, match="unknown colour"):
        world.Thing("star", "teal", "plain")


def _text_parts(ex: language.Example) -> list[str]:
    return [p for p in [*ex.prompt, *ex.answer] if isinstance(p, str)]


def test_every_task_uses_only_vocabulary_words() -> None:
    vocab = set(language.vocabulary())
    rng = np.random.default_rng(0)
    pool = language.ScenePool(world.random_scenes(400, seed=2, pairs=0.25))
    for task in language.TASKS:
        for _ in range(60):
            for part in _text_parts(language.make_example(task, pool, rng)):
                words = set(re.findall(r"[a-z]+", part.lower()))
                assert words <= vocab, (task, part, words - vocab)


def test_the_phrasing_bank_is_in_the_toy_vocabulary() -> None:
    from yoc_assistant.personalize import phrasings as P

    vocab = set(language.vocabulary())
    for template in P.all_phrasings():
        assert set(P.words_of(template)) <= vocab, (template, set(P.words_of(template)) - vocab)


def test_no_text_ever_names_an_accent() -> None:
    """The instance attribute is seen in every picture and said in no sentence."""
    from yoc_assistant.personalize import phrasings as P

    accents = set(world.ACCENTS)
    assert not accents & set(language.vocabulary())
    assert not any(set(P.words_of(t)) & accents for t in P.all_phrasings())
    rng = np.random.default_rng(1)
    pool = language.ScenePool(world.random_scenes(400, seed=3, pairs=0.25))
    for task in language.TASKS:
        for _ in range(40):
            for part in _text_parts(language.make_example(task, pool, rng)):
                assert not set(re.findall(r"[a-z]+", part.lower())) & accents, (task, part)
    for scene in pool.scenes[:50]:
        assert not set(scene.caption().split()) & accents


def test_accents_are_visible_and_change_only_the_pattern_pixels() -> None:
    for pattern in world.PATTERNS:
        thing = world.Thing("square", "orange", pattern)
        base = world.Scene(thing, "big", "sand", 16, 16, seed=9)
        pixels = np.asarray(world.render(base), dtype=np.float32)
        for other in world.same_named(thing):
            moved = world.Scene(other, "big", "sand", 16, 16, seed=9)
            assert moved.caption() == base.caption()  # words cannot tell them apart
            diff = np.abs(np.asarray(world.render(moved), dtype=np.float32) - pixels).max(-1)
            assert diff.max() > 60, (pattern, other.accent)  # ...the eye can
            assert (diff > 30).sum() >= 4


def test_same_named_others_and_lookalikes_of_an_instance() -> None:
    thing = world.EXAMPLE_THING
    others = world.same_named(thing)
    assert len(others) == len(world.ACCENTS) - 1
    assert all(o.kind() == thing.kind() and o.accent != thing.accent for o in others)
    assert all(t.accent == thing.accent for t in world.lookalikes(thing, 1))
    assert len(world.ALL_THINGS) == len(world.KINDS) * len(world.ACCENTS)


def test_two_object_scenes_show_both_things() -> None:
    rng = np.random.default_rng(4)
    a, b = world.Thing("star", "red", "plain"), world.Thing("heart", "blue", "striped", "mint")
    scene = world.random_pair_scene(rng, a, b)
    assert set(scene.things()) == {a, b} and scene.shows(b) and scene.shows_kind(world.Thing("heart", "blue", "striped"))
    assert " and " in scene.caption() and scene.caption().endswith(f"on {scene.background}")
    one = world.Scene(scene.thing, "small", scene.background, scene.x, scene.y, scene.seed)
    diff = np.abs(np.asarray(world.render(scene), np.float32) - np.asarray(world.render(one), np.float32))
    assert diff.max() > 60  # the second thing is drawn


def test_caption_answers_describe_the_scene() -> None:
    scene = world.Scene(world.Thing("heart", "blue", "striped"), "small", "grass", 10, 12, 0)
    assert scene.caption() == "a small striped blue heart on grass"
    pool = language.ScenePool([scene])
    ex = language.make_example("caption", pool, np.random.default_rng(0))
    assert ex.answer == ["a small striped blue heart on grass ."]


def test_named_tasks_define_the_thing_and_refer_to_it_by_name() -> None:
    rng = np.random.default_rng(3)
    pool = language.ScenePool(world.random_scenes(600, seed=4, pairs=0.25))
    for task in language.NAMED_TASKS:
        for _ in range(20):
            ex = language.make_example(task, pool, rng)
            assert ex.prompt[0] == language.Name(0) and ex.prompt[1] == "is"
            fillers = [p.n for p in ex.prompt[:7] if isinstance(p, language.Filler)]
            assert sum(fillers[:2]) <= language.MAX_PREFIX_FILLERS
            assert isinstance(ex.answer[0], language.Filler)
            assert ex.answer[0].n <= language.MAX_ANSWER_FILLERS
            end = ex.prompt.index(".") + 1
            assert any(isinstance(p, language.Name) for p in ex.prompt[end:])  # asked about by name only
    said = {language.make_example("named-recognize", pool, rng).answer[1] for _ in range(60)}
    assert {w.split(",")[0] for w in said} == {"Yes", "No"}


def test_photo_definitions_tell_instances_apart() -> None:
    """With a photo in the definition, a same-named thing of another accent is a 'No';
    with words only it cannot be (the words are the same), so it never is."""
    rng = np.random.default_rng(8)
    pool = language.ScenePool(world.random_scenes(3000, seed=6))
    seen_accent_no = 0
    for _ in range(400):
        ex = language.make_example("named-recognize", pool, rng)
        photos = [p for p in ex.prompt if isinstance(p, language.Photo)]
        defined = photos[0] if len(photos) == 2 else None
        asked = pool.scenes[photos[-1].index]
        yes = ex.answer[1].startswith("Yes")
        if defined is None:
            continue
        ref = pool.scenes[defined.index].thing
        assert yes == asked.shows(ref)
        if not yes and asked.shows_kind(ref):
            seen_accent_no += 1
    assert seen_accent_no > 40


def test_the_instance_task_asks_what_only_a_comparison_of_photos_decides() -> None:
    """`named-instance`: a photo definition, and a question photo that shows that instance
    (half), the same named thing in another accent, or a lookalike one named attribute
    away with the same accent: of another colour, or of another shape or pattern (the
    negatives' shares in `INSTANCE_NEGATIVES`)."""
    rng = np.random.default_rng(9)
    pool = language.ScenePool(world.random_scenes(3000, seed=7, pairs=0.25))
    kinds = []
    for _ in range(800):
        ex = language.make_example("named-instance", pool, rng)
        photos = [p for p in ex.prompt if isinstance(p, language.Photo)]
        assert len(photos) == 2
        ref, asked = pool.scenes[photos[0].index].thing, pool.scenes[photos[1].index]
        assert photos[0].index != photos[1].index
        yes = ex.answer[1].startswith("Yes")
        assert yes == asked.shows(ref)
        if yes:
            kinds.append("same")
        elif asked.shows_kind(ref):
            kinds.append("other accent")
        else:  # a lookalike: one named attribute away, drawn in the defined accent
            near = [t for t in asked.things() if t.distance(ref) == 1 and t.accent == ref.accent]
            assert near, (ref, asked)
            kinds.append("colour lookalike" if near[0].colour != ref.colour else "lookalike")
    share = {k: kinds.count(k) / len(kinds) for k in ("same", "other accent", "colour lookalike", "lookalike")}
    other_accent, colour = language.INSTANCE_NEGATIVES
    assert 0.4 < share["same"] < 0.6
    for kind, expected in (("other accent", other_accent), ("colour lookalike", colour),
                           ("lookalike", 1 - other_accent - colour)):
        assert abs(share[kind] - expected / 2) < 0.035, (kind, share)


def test_unconditional_photos_start_as_cfgs_unconditional_branch(shipped) -> None:
    # classifier-free guidance subtracts the logits after [BOS, BOI]: the pretraining
    # task that teaches that prior must lay its photo out exactly so, with no SEP
    from yoc_assistant.toyworld.train_backbone import Batcher, encode_scenes

    scenes = world.random_scenes(20, seed=3, pairs=0.0)
    batcher = Batcher(shipped, scenes, encode_scenes(shipped, scenes))
    ex = language.make_example("unconditional", batcher.pool, np.random.default_rng(0))
    assert ex.prompt == [] and len(ex.answer) == 1
    ids, start = batcher.example_ids(ex)
    assert ids[:2] == [shipped.special.bos, shipped.special.boi] and start == 1
    assert shipped.special.sep not in ids and ids[-1] == shipped.special.eos


def test_bucketed_losses_and_gradients_are_the_single_pass_ones(shipped) -> None:
    """Pretraining runs a mixed batch in passes over rows of similar length: the same
    per-token losses and the same gradient as one padded pass (fp32)."""
    from yoc_assistant.toyworld.train_backbone import (
        Batcher,
        bucketed_token_losses,
        encode_scenes,
        example_balanced_loss,
        token_losses,
    )

    scenes = world.random_scenes(80, seed=6, pairs=0.25)
    batcher = Batcher(shipped, scenes, encode_scenes(shipped, scenes))
    tasks = ("caption", "named-instance", "named-pair", "qa")
    batch = batcher.batch(np.random.default_rng(1), 2, tasks, decision_weight=1.0)
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.min()) < int(lengths.max())  # there is padding to save
    head = shipped.model.lm_head.weight
    grads = []
    for losses in (lambda: token_losses(shipped, batch, bf16=False)[:2],
                   lambda: bucketed_token_losses(shipped, batch, bf16=False, buckets=3)):
        head.grad = None
        head.requires_grad_(True)
        ce, mask = losses()
        loss, _ = example_balanced_loss(ce, mask, batch["task"], len(tasks), batch["weight"][:, 1:])
        loss.backward()
        grads.append((ce.detach(), mask, head.grad.clone()))
    head.requires_grad_(False)
    head.grad = None
    (ce1, mask1, g1), (ce2, mask2, g2) = grads
    assert torch.equal(mask1, mask2)
    assert torch.allclose(ce1, ce2, atol=1e-4) and torch.allclose(g1, g2, atol=1e-5)
    # the head runs on target positions only: the same losses and argmax as full logits
    with torch.no_grad():
        full, _ = shipped.forward(batch["ids"], attention_mask=batch["attention_mask"],
                                  extra=batch.get("extra"))
        _, _, pred = token_losses(shipped, batch, bf16=False)
    full = full[:, :-1]
    want = torch.nn.functional.cross_entropy(full.reshape(-1, full.shape[-1]),
                                             batch["ids"][:, 1:].reshape(-1), reduction="none")
    assert torch.allclose(ce1, want.view(mask1.shape) * mask1, atol=1e-4)
    assert torch.equal(pred[mask1], full.argmax(-1)[mask1])


def test_quick_pipeline_trains_and_loads(tmp_path, monkeypatch) -> None:
    """train_vq --quick then train_backbone --quick: a checkpoint Backbone.load reads."""
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.toyworld import train_backbone, train_vq

    monkeypatch.setenv("YOC_TOY_WORK", str(tmp_path / "work"))
    train_vq.main(["--quick"])
    assert (tmp_path / "work" / "vq" / "vq.safetensors").exists()
    out = tmp_path / "bb"
    train_backbone.main(["--quick", "--out", str(out)])
    bb = Backbone.load(str(out), precision="fp32", device="cpu")
    assert bb.image_size == world.SIZE and bb.has_decoder
    meta = json.loads((out / "toyworld.json").read_text())
    assert meta["step"] == 6
    ids = bb.encode_images([world.render(world.random_scenes(1, seed=0)[0])])
    assert ids.shape == (1, bb.image_seq_length)
    # the trained VQ weights, not the skeleton's random ones, are in the checkpoint
    vq = train_vq.load_vq(tmp_path / "work" / "vq")
    expected = bb.image_vocab.to_bpe(vq.encode_codes(
        train_vq.to_pixels(world.render_array(world.random_scenes(1, seed=0)))))
    assert torch.equal(ids, expected)


def test_make_concept_layout(tmp_path) -> None:
    from yoc_assistant.toyworld.make_concept import write_concept

    out = write_concept(tmp_path / "bluey", "bluey", world.Thing("heart", "blue", "striped"),
                        photos=4, held_out=3, others=3, seed=5)
    assert len(list(out.glob("photo-*.png"))) == 4
    assert len(list((out / "held-out").glob("*.png"))) == 3
    assert len(list((out / "others").glob("*.png"))) == 3
    about = (out / "about.txt").read_text()
    assert "colour: blue" in about and "bluey is a striped blue heart." in about


def test_judge_names_the_instance_and_clusters_its_photos(tmp_path) -> None:
    """The shipped instance judge reads accents (what no word says) on new photos."""
    from yoc_assistant.personalize.judge import ToyJudge, drawn_right, instance_similarity
    from yoc_assistant.toyworld.common import JUDGE_DIR

    judge = ToyJudge.load(JUDGE_DIR)
    thing = world.EXAMPLE_THING
    mine = [world.render(s) for s in world.photos_of(thing, 6, seed=40)]
    other = [world.render(s) for s in world.photos_of(world.same_named(thing)[0], 6, seed=41)]
    assert [a["accent"] for a in judge.attributes(mine)].count(thing.accent) >= 5
    assert drawn_right(judge, mine[3:], mine[:3]) >= 0.66
    assert drawn_right(judge, other, mine[:3]) <= 0.34
    assert instance_similarity(judge, mine[3:], mine[:3]) > instance_similarity(judge, other, mine[:3])


def test_judge_quick_training_writes_a_loadable_judge(tmp_path) -> None:
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.toyworld import train_judge

    train_judge.main(["--quick", "--no-vq", "--out", str(tmp_path / "judge")])
    judge = ToyJudge.load(tmp_path / "judge")
    emb = judge.embed([world.render(s) for s in world.random_scenes(3, seed=1)])
    assert emb.shape == (3, 128) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-4)


def test_shipped_example_concept_is_the_example_thing() -> None:
    from yoc_assistant.toyworld.common import CONCEPTS_DIR

    folder = CONCEPTS_DIR / "sunny"
    photos = sorted(folder.glob("photo-*.png"))
    assert 3 <= len(photos) <= 5
    expected = world.photos_of(world.EXAMPLE_THING, len(photos), seed=1)
    for path, scene in zip(photos, expected, strict=True):
        from PIL import Image

        with Image.open(path) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(world.render(scene)))


# -- the shipped weights ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    from yoc_assistant.backbone.core import Backbone

    assert (BACKBONE_DIR / "config.json").exists(), f"no shipped toy backbone in {BACKBONE_DIR}"
    return Backbone.load(str(BACKBONE_DIR), precision="fp32", device="cpu")


def test_shipped_backbone_round_trips_scenes(shipped) -> None:
    scenes = world.random_scenes(16, seed=123, pool=world.ALL_THINGS)
    images = [world.render(s) for s in scenes]
    out = shipped.decode_images(shipped.encode_images(images))
    err = np.mean([np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
                   for a, b in zip(images, out, strict=True)])
    assert err < 16.0, f"mean absolute round-trip error {err:.1f} / 255"
    noise = world.render(world.random_scenes(1, seed=9)[0])
    far = np.abs(np.asarray(noise, np.float32) - np.asarray(out[0], np.float32)).mean()
    assert far > err


def test_shipped_backbone_recommends_its_training_scripts_settings(shipped) -> None:
    """The shipped config.json carries what `train_backbone` writes (its settings were
    added to the shipped file by hand when measured, so a drift would go unseen)."""
    from yoc_assistant.personalize.selfcheck import default_candidates
    from yoc_assistant.toyworld.train_backbone import DRAW_CANDIDATES, YOC_SETTINGS

    config = json.loads((BACKBONE_DIR / "config.json").read_text())
    assert {k: config.get(k) for k in YOC_SETTINGS} == YOC_SETTINGS
    assert default_candidates(shipped) == DRAW_CANDIDATES > 1


def test_shipped_backbone_knows_the_world_words(shipped) -> None:
    unk = shipped.tokenizer.convert_tokens_to_ids("<unk>")
    for word in language.vocabulary():
        assert shipped.tokenize(word) != [unk], word


def test_shipped_backbone_reads_scenes(shipped) -> None:
    """Attribute questions and captions about new scenes, read by greedy (teacher-forced
    argmax) decoding; far above what a model that ignores the image could score."""
    from yoc_assistant.toyworld.train_backbone import Batcher, evaluate

    scenes = world.random_scenes(40, seed=777)
    batcher = Batcher(shipped, scenes, shipped.encode_images([world.render(s) for s in scenes]))
    metrics = evaluate(shipped, batcher, 40, seed=777, tasks=("qa", "caption"))
    assert metrics["qa_exact"] >= 0.45, metrics
    assert metrics["caption_exact"] >= 0.05, metrics


def test_shipped_clip_loads_and_groups_photos_of_a_thing() -> None:
    from yoc_assistant.personalize.retrieval import ClipSpec, load_clip

    clip = load_clip(ClipSpec(str(CLIP_DIR)))
    a = world.photos_of(world.EXAMPLE_THING, 4, seed=2)
    b = world.photos_of(world.Thing("square", "green", "striped"), 4, seed=3)
    emb = clip.embed_images([world.render(s) for s in a + b])
    sim = emb @ emb.T
    same = (sim[:4, :4].sum() - 4) / 12 + (sim[4:, 4:].sum() - 4) / 12
    other = sim[:4, 4:].mean() * 2
    assert same > other


def test_figure_puts_real_photos_above_drawn_ones(tmp_path) -> None:
    from PIL import Image

    from yoc_assistant.toyworld import figure

    for folder, colour, n in (("real", "red", 5), ("drawn", "blue", 3)):
        (tmp_path / folder).mkdir()
        for k in range(n):
            Image.new("RGB", (32, 32), colour).save(tmp_path / folder / f"{k}.png")
    out = tmp_path / "sheet.png"
    figure.main([str(tmp_path / "real"), str(tmp_path / "drawn"), str(out)])
    sheet = Image.open(out)
    assert sheet.size == (5 * 128 + 6 * 8, 2 * 128 + 3 * 8)
    assert sheet.getpixel((8 + 64, 8 + 64)) == (255, 0, 0)  # first real photo
    assert sheet.getpixel((8 + 64, 16 + 128 + 64)) == (0, 0, 255)  # first drawn picture
    assert sheet.getpixel((8 + 4 * 136 + 64, 16 + 128 + 64)) == (255, 255, 255)  # only 3 drawn


def test_measure_compares_a_photo_definition_with_other_accents_and_lookalikes(shipped) -> None:
    from yoc_assistant.personalize.judge import ToyJudge
    from yoc_assistant.toyworld.common import JUDGE_DIR
    from yoc_assistant.toyworld.measure import instances

    report = instances(shipped, ToyJudge.load(JUDGE_DIR), n=4, draw=1, seed=5,
                       pool=world.PRETRAIN_THINGS)
    for key in ("same_instance_yes_no", "vs_lookalike_yes_no"):
        assert 0.0 <= report[key] <= 1.0
    assert report["pictures"] == 1 and report["real_photos (judge ceiling)"]["accent"] == 1.0


def test_collages_put_each_photo_in_its_half() -> None:
    from PIL import Image

    from yoc_assistant.toyworld.probe import collage

    red, blue = Image.new("RGB", (32, 32), (200, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 200))
    blue.paste((0, 200, 0), (0, 0, 8, 32))  # its left quarter: cut by `crop`, kept by `squash`
    for how in ("squash", "crop"):
        a = np.asarray(collage(red, blue, how)).astype(int)
        assert a.shape == (32, 32, 3)
        assert (a[:, :16] == (200, 0, 0)).all()
        assert a[:, 16:, 2].mean() > 100
        assert (a[:, 16:, 1] > 100).any() == (how == "squash")


def test_pair_probe_reads_every_kind_of_photo(shipped) -> None:
    from yoc_assistant.toyworld.probe import PAIR_PHOTOS, pair_reading

    report = pair_reading(shipped, n=2)
    assert list(report) == list(PAIR_PHOTOS)
    assert all(0.0 <= v <= 1.0 for row in report.values() for v in row.values())


def test_a_grown_backbone_computes_what_its_source_did(tmp_path) -> None:
    """init_from into a skeleton with twice the layers: the source's layers land at the
    even depths, the new ones start as the identity, so the logits are the source's."""
    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint
    from yoc_assistant.toyworld.train_backbone import init_from

    words = language.vocabulary()
    source = write_tiny_checkpoint(tmp_path / "src", num_layers=2, words=words, seed=1)
    grown = write_tiny_checkpoint(tmp_path / "grown", num_layers=4, words=words, seed=2)
    before = Backbone.load(str(grown), precision="fp32", device="cpu")
    init_from(grown, source)
    a = Backbone.load(str(source), precision="fp32", device="cpu")
    b = Backbone.load(str(grown), precision="fp32", device="cpu")
    ids = a.prompt_ids(["a dotted orange star on sand ."])
    want, got = a.next_token_logits(ids), b.next_token_logits(ids)
    assert torch.allclose(want, got, atol=1e-5)
    assert not torch.allclose(before.next_token_logits(ids), got, atol=1e-3)  # not a skeleton
    # the new layers are real layers, only silent: their other weights are the skeleton's
    new_q = b.model.model.layers[1].self_attn.q_proj.weight
    assert new_q.abs().sum() > 0 and b.model.model.layers[1].mlp.down_proj.weight.abs().sum() == 0


def test_growing_needs_a_whole_multiple_of_the_layers(tmp_path) -> None:
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint
    from yoc_assistant.toyworld.train_backbone import init_from

    words = language.vocabulary()
    source = write_tiny_checkpoint(tmp_path / "src", num_layers=2, words=words)
    odd = write_tiny_checkpoint(tmp_path / "odd", num_layers=3, words=words)
    with pytest.raises(RuntimeError, match="2 layers cannot grow to 3"):
        init_from(odd, source)


def test_object_patches_cover_the_object_and_not_the_background() -> None:
    small = world.Scene(world.Thing.parse("plain red circle"), "small", "grass", 6, 6, seed=1)
    patches = world.object_patches(small, 8).reshape(8, 8)
    assert patches[1, 1] and not patches[6, 6]  # the object sits top left
    assert 9 <= patches.sum() <= 25  # a 14-pixel object spans 4-5 patches of 4 pixels
    big = world.Scene(world.Thing.parse("plain red square"), "big", "sand", 16, 16, seed=1)
    assert world.object_patches(big, 8).sum() > patches.sum()


def test_object_weight_falls_on_the_drawn_objects_image_tokens(shipped) -> None:
    from yoc_assistant.toyworld.train_backbone import Batcher, encode_scenes

    scenes = world.random_scenes(30, seed=3, pairs=0.25)
    batcher = Batcher(shipped, scenes, encode_scenes(shipped, scenes))
    rng = np.random.default_rng(0)
    for task in ("generate", "named-generate", "caption"):
        ex = language.make_example(task, batcher.pool, rng)
        ids, start = batcher.example_ids(ex)
        weights = batcher.object_multipliers(ex, len(ids), 2.0)
        heavy = [i for i, w in enumerate(weights) if w != 1.0]
        if task == "caption":  # a text answer: nothing is an object
            assert heavy == []
            continue
        photo = next(p for p in ex.answer if isinstance(p, language.Photo))
        boi = ids.index(shipped.special.boi, start)
        want = [boi + 1 + k for k, v in enumerate(world.object_patches(scenes[photo.index], 8)) if v]
        assert heavy == want and all(weights[i] == 3.0 for i in heavy)
    batch = batcher.batch(rng, 2, ("generate",), object_weight=2.0)
    assert float(batch["weight"].max()) == 3.0 and float(batch["weight"][batch["target"]].min()) == 1.0


def test_a_grown_models_new_layers_learn_at_the_full_rate(tmp_path) -> None:
    import argparse

    from yoc_assistant.backbone.core import Backbone
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint
    from yoc_assistant.toyworld.train_backbone import param_groups, trainable

    bb = Backbone.load(str(write_tiny_checkpoint(tmp_path / "g", num_layers=4, words=language.vocabulary())),
                       precision="fp32", device="cpu")
    params = trainable(bb)
    args = argparse.Namespace(quick=False, layers=4, trained_lr_scale=0.2, grown_stride=2)
    new, trained = param_groups(params, args)
    layers = {n: p for n, p in params}
    assert new["scale"] == 1.0 and trained["scale"] == 0.2
    assert {id(layers["model.layers.1.mlp.down_proj.weight"]), id(layers["model.layers.3.self_attn.q_proj.weight"])} \
        <= {id(p) for p in new["params"]}
    assert id(layers["model.layers.2.mlp.down_proj.weight"]) in {id(p) for p in trained["params"]}
    assert id(layers["lm_head.weight"]) in {id(p) for p in trained["params"]}
    assert len(new["params"]) + len(trained["params"]) == len(params)
    same = argparse.Namespace(quick=False, layers=0, trained_lr_scale=0.2, grown_stride=1)
    (only,) = param_groups(params, same)  # not grown: one group, full rate
    assert only["scale"] == 1.0 and len(only["params"]) == len(params)
