"""Training-data builders: self-prompting targets, loss masks, groups, balance, image-token cache."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize import data
from yoc_assistant.personalize import phrasings as P
from yoc_assistant.personalize.data import IGNORE, BuildContext

K = H = 16


@pytest.fixture(scope="module")
def bb(tmp_path_factory: pytest.TempPathFactory):
    from yoc_assistant import Backbone
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("bb") / "tiny", seed=0)
    return Backbone.load(str(path), precision="fp32", device="cpu")


def _img(bb, seed: int) -> list[int]:
    """Random image-token ids (any valid ones will do for the builders)."""
    rng = random.Random(seed)
    ids = bb.image_vocab.bpe_ids.tolist()
    return [rng.choice(ids) for _ in range(bb.image_seq_length)]


def _ctx(bb, *, n_pos=4, n_easy=120, n_hard=100, n_soft=30, about=None, seed=0) -> BuildContext:
    """By hand, as a ConceptSet lays it out: id V = <name>, V+1..V+16 generation, V+17..V+32 understanding."""
    v = bb.vocab_size
    gen = list(range(v + 1, v + 1 + K))
    und = list(range(v + 1 + K, v + 1 + K + H))
    prompt = [v, *bb.tokenize(" is"), *gen, *und, *bb.tokenize(".")]
    return BuildContext(
        backbone=bb, name="bo", identifier_id=v, prompt_ids=prompt,
        groups={"generation": gen, "understanding": und},
        positives=[_img(bb, i) for i in range(n_pos)],
        easy_negatives=[_img(bb, 100 + i) for i in range(n_easy)],
        hard_negatives=[_img(bb, 1000 + i) for i in range(n_hard)],
        soft_positives=[_img(bb, 5000 + i) for i in range(n_soft)],
        about=about, rng=random.Random(seed))


def _split(ex: data.Example) -> tuple[list[int], list[int]]:
    """(prompt, target); asserts the loss mask is exactly -100 then the target ids."""
    n_prompt = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE)
    assert all(lab == IGNORE for lab in ex.labels[:n_prompt])
    assert ex.labels[n_prompt:] == ex.ids[n_prompt:]  # every target position supervised
    return ex.ids[:n_prompt], ex.ids[n_prompt:]


def _contains(seq: list[int], sub: list[int]) -> bool:
    n = len(sub)
    return any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


# --- recognition ------------------------------------------------------------------------


def test_thirty_recognition_phrasings_with_the_name() -> None:
    assert len(set(P.RECOGNITION_QUESTIONS)) == 30
    assert all("{name}" in q for q in P.RECOGNITION_QUESTIONS)
    assert all(a.startswith("Yes") for a in P.YES_ANSWERS) and len(P.YES_ANSWERS) >= 3
    assert all(a.startswith("No") for a in P.NO_ANSWERS) and len(P.NO_ANSWERS) >= 3


def test_recognition_targets_masks_and_balance(bb) -> None:
    ctx = _ctx(bb)
    exs = data.recognition_examples(ctx)
    und, sp = ctx.groups["understanding"], bb.special
    yes, no = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    assert yes != no
    n_yes = n_no = image_first = 0
    negatives = ctx.easy_negatives[:100] + ctx.hard_negatives[:100]
    for ex in exs:
        assert ex.task == "recognition"
        prompt, target = _split(ex)
        # prompt: BOS + personalized prompt + (image, question | question, image) + SEP
        assert prompt[0] == sp.bos and prompt[-1] == sp.sep
        assert prompt[1:1 + len(ctx.prompt_ids)] == ctx.prompt_ids
        assert prompt.count(sp.boi) == 1 and prompt.count(sp.eoi) == 1
        image = prompt[prompt.index(sp.boi) + 1:prompt.index(sp.eoi)]
        assert len(image) == bb.image_seq_length
        assert ctx.identifier_id in prompt[1 + len(ctx.prompt_ids):]  # the question names <bo>
        image_first += prompt.index(sp.boi) == 1 + len(ctx.prompt_ids)
        # target: understanding group FIRST, then the Yes/No answer, then EOS
        assert target[:H] == und and target[-1] == sp.eos
        if image in ctx.positives:
            assert target[H] == yes
            n_yes += 1
        else:
            assert image in negatives and target[H] == no
            n_no += 1
    # positives repeated to balance 100 easy + 100 hard negatives (extra easy ones unused)
    assert n_no == 200 and n_yes == 200
    assert 0 < image_first < len(exs)
    questions = {tuple(ex.ids) for ex in exs}
    assert len(questions) > 150  # phrasings vary


def test_decisive_tokens_weigh_as_much_as_the_rest_of_their_answer(bb) -> None:
    """The router's token and the Yes/No carry the decision; the rest follows from them."""
    ctx = _ctx(bb)
    yes, no = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    rec = data.recognition_examples(ctx)[0]
    prompt, target = _split(rec)
    w = rec.weights
    assert w is not None and len(w) == len(rec.ids)
    tw = w[len(prompt):]
    assert target[H] in (yes, no)
    assert tw[0] == tw[H] and tw[0] > 1  # first group token and the answer's first word
    assert tw[0] + tw[H] == pytest.approx(len(target) - 2)  # together: as much as the rest
    assert all(x == 1.0 for k, x in enumerate(tw) if k not in (0, H))
    route = data.routing_examples(ctx, "understanding", ["Tell me about {name}."])[0]
    _, rt = _split(route)
    assert route.weights[-len(rt):][0] == pytest.approx(len(rt) - 1)
    gen = data.generation_examples(ctx)[0]
    assert gen.weights is None  # its route token would outweigh the 66 image tokens
    fact = data.qa_examples(_ctx(bb, about="colour: orange"))[0]
    _, ft = _split(fact)
    fw = fact.weights[-len(ft):]
    answer = range(H, len(ft) - 1)  # every answer word decides, as the route token does
    assert fw[0] == fw[H] >= 1 and all(fw[k] == fw[0] for k in answer)
    assert sum(fw[k] for k in (0, *answer)) >= len(ft) - 1 - len(answer)  # at least the rest's weight
    assert all(fw[k] == 1.0 for k in range(1, H)) and fw[-1] == 1.0
    plain = data.make_example([1, 2], [3], "x", decisive=(0,))  # nothing else to weigh against
    assert plain.weights is None


def test_weights_change_the_loss_only_where_they_are_set() -> None:
    from yoc_assistant.personalize.batches import collate, per_task_loss

    exs = [data.make_example([5, 6], [1, 2, 3], "a", decisive=(0,)), data.Example([5, 6, 2], [IGNORE, 6, 2], "b")]
    batch = collate(exs, 0, ["a", "b"], torch.device("cpu"))
    assert batch["weight"][0].tolist() == [0.0, 0.0, 2.0, 1.0, 1.0] and batch["weight"][1].tolist()[:3] == [1, 1, 1]
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    _, means, _ = per_task_loss(hidden, batch["labels"], batch["task"], 2, lambda h: h, batch["weight"])
    ce = F.cross_entropy(hidden[0, 1:4], torch.tensor([1, 2, 3]), reduction="none")
    assert means[0] == pytest.approx(float((2 * ce[0] + ce[1] + ce[2]) / 4), rel=1e-5)
    _, plain, _ = per_task_loss(hidden, batch["labels"], batch["task"], 2, lambda h: h)
    assert plain[0] == pytest.approx(float(ce.mean()), rel=1e-5) and plain[1] == pytest.approx(float(means[1]))


def test_pair_examples_ask_about_each_name_with_both_prompts_present(bb) -> None:
    ctx = _ctx(bb)
    v = bb.vocab_size
    other_prompt = [v + 40, *bb.tokenize(" is"), *range(v + 41, v + 45), *bb.tokenize(".")]
    other_photo = _img(bb, 777)
    ctx.others = [data.Other(v + 40, other_prompt, other_photo)]
    exs = data.pair_examples(ctx)
    assert len(exs) >= 0.3 * 2 * 200
    yes, no = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    seen = set()
    for ex in exs:
        assert ex.task == "pair"
        prompt, target = _split(ex)
        assert _contains(prompt, ctx.prompt_ids) and _contains(prompt, other_prompt)
        image = prompt[prompt.index(bb.special.boi) + 1:prompt.index(bb.special.eoi)]
        assert target[:H] == ctx.groups["understanding"]  # the trained concept's group answers
        answer = target[H:-1]
        which = [t for t in answer if t in (v, v + 40)]
        named = [t for t in (v, v + 40) if prompt.count(t) >= 2]  # defined once, then asked about
        if len(named) == 1:  # "Is <x> in this photo?"
            asked = named[0]
            shown = image in ctx.positives if asked == v else image == other_photo
            assert answer[0] == (yes if shown else no)
            seen.add(("mine" if asked == v else "theirs", shown))
        else:  # "Which of <a> and <b>?": names exactly the one shown, or neither
            if image in ctx.positives:
                assert which == [v]
            elif image == other_photo:
                assert which == [v + 40]
            else:
                assert which == [] and "Neither" in bb.detokenize(answer)
            seen.add(("which", image in ctx.positives))
        assert ex.weights is not None and ex.weights[len(prompt) + H] > 1  # the answer's first word decides
    assert {("mine", True), ("mine", False), ("theirs", True), ("theirs", False), ("which", True)} <= seen
    assert data.pair_examples(_ctx(bb)) == []  # no other concept: nothing to pair with


def test_recognition_with_few_negatives_and_none(bb) -> None:
    ctx = _ctx(bb, n_pos=3, n_easy=2, n_hard=1)
    exs = data.recognition_examples(ctx)
    assert len(exs) == 3 + 3  # max(len(negatives), len(positives)) positives
    ctx = _ctx(bb, n_pos=3, n_easy=0, n_hard=0)
    exs = data.recognition_examples(ctx)
    assert len(exs) == 3 and any("no negative" in n for n in ctx.notes)
    assert data.recognition_examples(_ctx(bb, n_pos=0)) == []


def test_recognition_is_deterministic_under_the_seed(bb) -> None:
    a = data.recognition_examples(_ctx(bb, seed=1))
    b = data.recognition_examples(_ctx(bb, seed=1))
    c = data.recognition_examples(_ctx(bb, seed=2))
    assert [e.ids for e in a] == [e.ids for e in b]
    assert [e.ids for e in a] != [e.ids for e in c]


# --- QA ------------------------------------------------------------------------------------


def test_parse_about_formats() -> None:
    pairs = data.parse_about("breed: corgi\n# a comment\n\nBo loves <bo>'s red ball. He is 3 years old.\n"
                             "favourite food: Carrots.", "bo")
    facts = [p for p in pairs if "breed" in p[0]]
    assert len(facts) == len(P.FACT_QUESTIONS)
    assert facts[0] == ("What is {name}'s breed?", "{name}'s breed is corgi.")
    assert ("Tell me {name}'s favourite food.", "{name}'s favourite food is Carrots.") in pairs
    answers = [a for _, a in pairs]
    assert "{name} loves {name}'s red ball." in answers and "He is 3 years old." in answers
    assert "{name} loves {name}'s red ball. He is 3 years old." in answers  # all sentences together
    assert data.parse_about(None, "bo") == [] and data.parse_about("  \n", "bo") == []


def test_qa_examples_self_prompting(bb) -> None:
    ctx = _ctx(bb, about="colour: brown\nbo likes the beach.")
    ctx.qa_pairs.append(("What does {name} look like?", "A small brown dog."))
    exs = data.qa_examples(ctx)
    assert len(exs) == len(P.FACT_QUESTIONS) + 1 + 1
    und, sp = ctx.groups["understanding"], bb.special
    for ex in exs:
        prompt, target = _split(ex)
        assert ex.task == "qa"
        assert prompt[0] == sp.bos and prompt[-1] == sp.sep and sp.boi not in prompt
        assert prompt[1:1 + len(ctx.prompt_ids)] == ctx.prompt_ids
        assert target[:H] == und and target[-1] == sp.eos and len(target) > H + 1
    first_prompt, first_target = _split(exs[0])
    assert first_target[H:-1] == data.text_ids(bb, "{name}'s colour is brown.", ctx.identifier_id)
    assert first_target[H] == ctx.identifier_id  # the name is the identifier token, not text
    _, last_target = _split(exs[-1])
    assert bb.detokenize(last_target[H:-1]) == "A small brown dog."


def test_captions_from_backbone_become_qa_pairs(bb) -> None:
    ctx = _ctx(bb, n_pos=2)
    pairs = data.captions_from_backbone(bb, ctx.positives, max_new_tokens=6)
    assert pairs == data.captions_from_backbone(bb, ctx.positives, max_new_tokens=6)  # greedy
    assert all(q in P.LOOK_QUESTIONS and isinstance(a, str) and a for q, a in pairs)
    ctx.qa_pairs += pairs
    assert len(data.qa_examples(ctx)) == len(pairs)


# --- generation ---------------------------------------------------------------------------


def test_soft_positive_groups_more_similar_gets_more_tokens() -> None:
    groups = data.soft_positive_groups(list(range(30)), 16)
    assert [n for n, _ in groups] == list(range(16, 1, -1))  # groups k-1 .. 1 get k .. 2 tokens
    assert [items for _, items in groups][:2] == [[0, 1], [2, 3]]  # most similar first
    assert sum(len(items) for _, items in groups) == 30
    uneven = data.soft_positive_groups(list(range(17)), 16)  # 15 groups: sizes 2,2,1,...
    assert [len(i) for _, i in uneven] == [2, 2] + [1] * 13 and uneven[0] == (16, [0, 1])
    few = data.soft_positive_groups(["a", "b", "c"], 16)
    assert few == [(16, ["a"]), (15, ["b"]), (14, ["c"])]
    assert data.soft_positive_groups(["a"], 1) == [] and data.soft_positive_groups([], 16) == []


def test_generation_targets_real_photos_and_soft_positives(bb) -> None:
    ctx = _ctx(bb, n_pos=4, n_soft=30)
    exs = data.generation_examples(ctx)
    assert len(exs) == 4 + 30
    gen, und, sp = ctx.groups["generation"], ctx.groups["understanding"], bb.special
    counts = []
    for k, ex in enumerate(exs):
        assert ex.task == "generation"
        prompt, target = _split(ex)
        # the target is assigned (the authors' code forgot): g1..gn, BOI, image, EOI, EOS
        n = target.index(sp.boi)
        assert target[:n] == gen[:n] and n >= 2
        image = target[n + 1:-2]
        assert target[-2:] == [sp.eoi, sp.eos] and len(image) == bb.image_seq_length
        expected = ctx.positives[k] if k < 4 else ctx.soft_positives[k - 4]
        assert image == expected
        # the prompt names the concept and lists exactly the generation tokens its target uses
        assert prompt[0] == sp.bos and prompt[-1] == sp.sep and sp.boi not in prompt
        assert [t for t in prompt if t in gen] == gen[:n]
        assert [t for t in prompt if t in und] == und
        assert prompt.count(ctx.identifier_id) == 2  # personalized prompt + "A photo of <bo>."
        counts.append(n)
    assert counts[:4] == [K] * 4  # real photos: all k tokens
    soft = counts[4:]
    assert soft == sorted(soft, reverse=True)  # more similar -> more tokens
    assert soft[0] == K and soft[-1] == 2 and soft.count(2) == 2


# --- everything --------------------------------------------------------------------------


def test_build_training_set_by_modality(bb) -> None:
    from yoc_assistant.personalize.trainer import check_examples

    ctx = _ctx(bb, n_pos=3, n_easy=5, n_hard=5, n_soft=15, about="colour: brown")
    exs = data.build_training_set(ctx)
    assert {e.task for e in exs} == {"recognition", "qa", "generation"}
    assert check_examples(exs, bb, n_rows=1 + K + H) == ["generation", "qa", "recognition"]
    text = data.build_training_set(_ctx(bb, n_pos=3, n_easy=5, n_hard=5, about="a: b"), ["recognition", "qa"])
    assert {e.task for e in text} == {"recognition", "qa"}
    image = data.build_training_set(_ctx(bb, n_pos=3), ["generation"])
    assert {e.task for e in image} == {"generation"}
    assert data.understanding_examples(_ctx(bb, n_pos=2, n_easy=1, n_hard=1, about="a: b"))
    with pytest.raises(UserInputError, match="audio"):
        data.build_training_set(ctx, ["audio"])
    ctx.groups.pop("understanding")
    assert {e.task for e in data.build_training_set(ctx)} == {"generation"}
    assert any("no 'understanding' group" in n for n in ctx.notes)
    with pytest.raises(UserInputError, match="no 'understanding' token group"):
        data.recognition_examples(ctx)


def test_context_from_a_concept_set(bb) -> None:
    from yoc_assistant.personalize.concept import ConceptSet, ConceptVectors

    other = ConceptVectors.initialize(bb, "mug")
    vec = ConceptVectors.initialize(bb, "bo")
    cs = ConceptSet(bb, [other, vec])
    ctx = BuildContext.from_concepts(bb, cs, "bo", positives=[_img(bb, 0)])
    assert ctx.identifier_id == cs.identifier_id("bo") and ctx.prompt_ids == cs.prompt_ids("bo")
    assert ctx.groups["generation"] == cs.group_ids("bo", "generation")
    exs = data.generation_examples(ctx)
    assert _split(exs[0])[1][:K] == cs.group_ids("bo", "generation")


# --- image tokens, cached ------------------------------------------------------------------


def test_image_tokens_are_encoded_once_ever(bb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yoc_assistant.library import Library

    lib = Library.open()
    lib.create_concept("bo")
    for i in range(3):
        arr = np.random.RandomState(i).randint(0, 255, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"p{i}.png")
    lib.add_images("bo", sorted(tmp_path.glob("*.png")))
    shas = [r.sha256 for r in lib.concept_images("bo")]

    encoded: list[int] = []
    real = type(bb).encode_images

    def counting(self, images):
        encoded.append(len(images))
        return real(self, images)

    monkeypatch.setattr(type(bb), "encode_images", counting)
    first = data.image_tokens(lib, bb, shas)
    assert sum(encoded) == 3
    load = lambda s: Image.open(lib.image_path(s)).convert("RGB")  # noqa: E731
    direct = real(bb, [load(s) for s in shas])
    assert [first[s] for s in shas] == direct.tolist()
    again = data.image_tokens(Library.open(), bb, shas + shas[:1])
    assert sum(encoded) == 3  # nothing re-encoded, even from a reopened library
    assert again == first

    from PIL import ImageOps

    from yoc_assistant.personalize.imagetokens import mirrored

    flipped = data.image_tokens(lib, bb, [mirrored(s) for s in shas])
    assert sum(encoded) == 6  # a mirror image is one more image, cached under its own key
    assert [flipped[mirrored(s)] for s in shas] == real(bb, [ImageOps.mirror(load(s)) for s in shas]).tolist()
    assert flipped[mirrored(shas[0])] != first[shas[0]]


def test_image_token_cache_key_follows_the_vq_encoder(bb) -> None:
    from types import SimpleNamespace

    import torch

    from yoc_assistant.backbone.imaging import vq_digest
    from yoc_assistant.personalize.imagetokens import vq_id

    def fake(seed: int, decoder_seed: int = 0) -> SimpleNamespace:
        torch.manual_seed(seed)
        vq = torch.nn.Module()
        vq.encoder = torch.nn.Conv2d(3, 4, 3)
        torch.manual_seed(decoder_seed)
        vq.decoder = torch.nn.Conv2d(4, 3, 3)
        return SimpleNamespace(model=SimpleNamespace(model=SimpleNamespace(vqmodel=vq)),
                               fingerprint=bb.fingerprint, image_size=32, image_seq_length=64)

    assert vq_digest(fake(0)) == vq_digest(fake(0)) == vq_digest(fake(0, decoder_seed=5))  # decoder irrelevant
    assert vq_digest(fake(0)) != vq_digest(fake(1))  # another encoder: other tokens, other cache
    assert vq_id(bb) == vq_id(bb) and vq_id(bb).startswith(bb.fingerprint[:16])


def test_small_tasks_are_repeated_to_their_share_of_the_largest() -> None:
    def made(task: str, n: int) -> list[data.Example]:
        return [data.Example([k], [k], task) for k in range(n)]

    examples = made("recognition", 400) + made("qa", 9) + made("routing", 30)
    balanced = data.balance_tasks(examples)
    count = {t: sum(ex.task == t for ex in balanced) for t in ("recognition", "qa", "routing")}
    assert count["recognition"] == 400  # the largest task is never repeated
    assert count["qa"] == 9 * 23 and count["qa"] >= data.TASK_SHARES["qa"] * 400  # the facts: half
    assert count["routing"] == 30 * 4 and count["routing"] >= data.MIN_TASK_SHARE * 400  # others: a quarter
    even = data.balance_tasks(examples, shares={})
    assert sum(ex.task == "qa" for ex in even) == 9 * 12
