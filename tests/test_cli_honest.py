"""Honest answers on the embedded toy backbone, through the real `yoc` command:
its captioning for the usual wordings of "what is in this photo?", a one-line note
naming the words it does not know, answers that end."""

from __future__ import annotations

import json
from pathlib import Path

from cli_run import run_yoc
from conftest import small_random_backbone

from yoc_assistant.backbone.generation import repeating
from yoc_assistant.toyworld import world

ROOT = Path(__file__).resolve().parent.parent
PHOTO = sorted((ROOT / "concepts" / "sunny" / "held-out").glob("*.png"))[0]


def answer(text: str, photo: Path) -> str:
    done = run_yoc("ask", text, "--image", photo, "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["modality"] == "text"
    return data["text"].strip()


def test_the_usual_wordings_of_what_is_in_this_photo_get_the_toy_caption() -> None:
    photo = PHOTO
    caption = answer("describe this photo .", photo)  # the toy backbone's own caption prompt
    assert caption.endswith(".") and caption.split()[0] in ("a", "an")
    assert not caption.startswith(("yes", "no"))
    assert any(shape in caption.split() for shape in world.SHAPES)
    for wording in ("what is in this photo?", "What's in this picture?", "Describe the image."):
        assert answer(wording, photo) == caption, wording


def test_words_the_toy_backbone_does_not_know_get_a_note_not_garbage() -> None:
    done = run_yoc("ask", "What breed is my dachshund?")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'dachshund'" in lines[0] and "'breed'" not in lines[0]  # breed is a toy word
    assert "yoc pull" in lines[0] and "Anole-7b" in lines[0]

    done = run_yoc("draw", "a dog reading a book in a library")
    assert done.returncode == 2 and "'dog', 'reading'" in done.stderr and "yoc pull" in done.stderr


def test_an_answer_that_falls_into_a_loop_ends(tmp_path: Path) -> None:
    bb = small_random_backbone(tmp_path / "ckpt", 0)  # greedy, it loops on this prompt
    out = bb.generate_text(bb.prompt_ids(["hello there"]), temperature=0, max_new_tokens=256)
    assert out.finish_reason == "repeat" and len(out.ids) < 256 and repeating(out.ids)
    assert not repeating(bb.tokenize("the cat sat on the mat, and the dog sat on the rug."))
    assert repeating([5, 6, 7] * 4) and not repeating([5, 6, 7] * 3) and repeating([9] * 8)
