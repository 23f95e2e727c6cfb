"""How good a trained concept is, measured once when its training ends and stored with
it (the concept row's `quality`): what `yoc train`, `yoc concepts list` and `show` say.

* recognition: "Is <name> in this photo?" answered Yes/No (the first answer token, as
  `yoc eval` reads it) on photos the training never saw: the held-out photo(s), else
  views of the training photos it did not train on (a centre crop), against held-out
  pool images, else pool images, else plain pictures (grey, noise) when there is no
  pool. Weighted accuracy: chance is 0.5.
* routing: whether the router picks the text modality for questions about the concept
  and the image modality for requests to draw it. Chance is 0.5.

A concept at or under NEAR_CHANCE on either is flagged with what to do about it.
Importing this module does not import torch (the listing commands use `summary`).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from yoc_assistant.assistant.modality import Request
from yoc_assistant.assistant.router import Router
from yoc_assistant.personalize import phrasings as P

NEAR_CHANCE = 0.6  # both measures are 0.5 at chance
GOOD = 0.8
# Held-out phrasings of the bank (never trained on), so routing says whether the concept
# learnt what a request wants, not its wording.
TEXT_REQUESTS = P.HELD_OUT_TEXT_REQUESTS[:5]  # the first three ask about a photo
IMAGE_REQUESTS = tuple(t.replace("{place}", "sand") for t in P.HELD_OUT_GENERATION_PROMPTS[:6])
PHOTO_REQUESTS = 3  # the first TEXT_REQUESTS carry a photo of the concept
MAX_EVAL_PHOTOS = 4


def verdict(quality: dict[str, Any] | None) -> str | None:
    """"good", "fair" or "near chance" (None: nothing measured)."""
    if not quality:
        return None
    scores = [quality[k] for k in ("recognition", "routing") if isinstance(quality.get(k), float)]
    if not scores:
        return None
    worst = min(scores)
    return "near chance" if worst <= NEAR_CHANCE else "good" if worst >= GOOD else "fair"


def advice(name: str) -> str:
    return (f"train longer (`yoc train {name} --steps 3000`), add generic photos of similar "
            f"things for negatives (`yoc pool add FOLDER`), and give it 3-5 different photos")


def _centre_crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    box = (round(w * 0.08), round(h * 0.08), round(w * 0.92), round(h * 0.92))
    return image.crop(box).resize((w, h), Image.Resampling.BICUBIC)


def _plain_pictures(size: int, seed: int) -> list[Image.Image]:
    rng = random.Random(seed)
    noise = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    return [Image.new("RGB", (size, size), (128, 128, 128)), noise]


def measure_quality(bb: Any, library: Any, name: str, vectors: Any, job: Any, plugins: Any,
                    *, seed: int = 0) -> dict[str, Any]:
    """{"recognition", "positives", "negatives", "positives_from", "negatives_from",
    "routing", "routed", "verdict"} for the trained `vectors` of concept `name`."""
    from yoc_assistant.personalize import data, evaluate
    from yoc_assistant.personalize.concept import ConceptSet
    from yoc_assistant.personalize.imagetokens import SHIFTED, variant_loader
    from yoc_assistant.personalize.retrieval import library_loader

    load = variant_loader(library_loader(library))
    concepts = ConceptSet(bb, [vectors])
    out: dict[str, Any] = {}
    if job.held_positives:
        positives: list[Any] = [load(s) for s in job.held_positives[:MAX_EVAL_PHOTOS]]
        views = all(s.endswith(SHIFTED) for s in job.held_positives)
        out["positives_from"] = "unseen views of the training photos" if views else "held-out photos"
    else:
        positives = [_centre_crop(load(s)) for s in job.train_positives[:MAX_EVAL_PHOTOS]]
        out["positives_from"] = "unseen views of the training photos"
    pool_negatives = job.held_negatives or job.hard or job.easy
    if pool_negatives:
        negatives: list[Any] = [load(s) for s in pool_negatives[:MAX_EVAL_PHOTOS]]
        out["negatives_from"] = "held-out pool photos" if job.held_negatives else "pool photos"
    else:
        negatives = _plain_pictures(int(bb.image_size), seed)
        out["negatives_from"] = "plain pictures (no pool)"
    if data.answer_first_token(bb, True) != data.answer_first_token(bb, False):
        rec = evaluate.recognition_accuracy(bb, concepts, name, positives, negatives)
        out.update(recognition=float(rec["weighted"]), positives=rec["n_positive"],
                   negatives=rec["n_negative"])
    out.update(_routing(bb, plugins, concepts, name, positives[0]))
    out["verdict"] = verdict(out)
    return out


def _routing(bb: Any, plugins: Any, concepts: Any, name: str, photo: Image.Image) -> dict[str, Any]:
    by_group = {m.group: m.name for m in plugins.get_modalities()}
    text, image = by_group.get("understanding"), by_group.get("generation")
    if text is None or image is None:
        return {}
    router = Router(bb, plugins)  # no log file: these are not the user's requests
    mention = f"<{name}>"
    requests = [(Request(text=t.format(name=mention), images=[photo] if i < PHOTO_REQUESTS else []), text)
                for i, t in enumerate(TEXT_REQUESTS)]
    requests += [(Request(text=t.format(name=mention)), image) for t in IMAGE_REQUESTS]
    # Prompt built here: the check for unknown words is for what users type, and these
    # are the training data's own wordings.
    right = sum(router.route(r, concepts, prompt_ids=router.build_prompt(r, concepts)).modality == want
                for r, want in requests)
    return {"routing": right / len(requests), "routed": len(requests)}


def summary(quality: dict[str, Any] | None) -> str:
    """One line for people: "recognition 0.92, routing 1.00: good"."""
    if not quality:
        return ""
    parts = [f"{key} {quality[key]:.2f}" for key in ("recognition", "routing")
             if isinstance(quality.get(key), float)]
    return ", ".join(parts) + (f": {quality['verdict']}" if quality.get("verdict") else "")


__all__ = ["GOOD", "NEAR_CHANCE", "advice", "measure_quality", "summary", "verdict"]
