"""Evaluation of a trained concept: recognition, CLIP-I, face similarity, multiple-choice QA.

* Recognition: asked exactly as `yoc ask "Is <name> in this photo?" --image PHOTO`
  asks it: the same prompt layout as the router builds (concept prompt, the photo,
  then the question; `forced_recognition_prompt`), the understanding group forced after the
  separator (as the text modality answers), and the first answer token chosen the
  way the text modality chooses it (greedily among the tokens a text answer may
  use, `backbone.generation.text_decision`); "yes" when that token is the first
  token of a Yes answer. One forward pass per image, no sampling: cheap and
  deterministic, and the same decision a user is shown; with the checkpoint's photo
  witness (`personalize/witness.py`), one more pass per image, as `yoc ask` runs it. Accuracy on positives, on
  negatives, and weighted = the mean of the two (the paper's metric).
* CLIP-I: mean cosine similarity (CLIP image embeddings) over every (generated, real)
  pair of images.
* Face similarity: the same with insightface face embeddings; only when insightface
  and its `buffalo_l` model are installed, else skipped with the reason.
* QA: a Yo'LLaVA-style multiple-choice file (schema in `load_qa`); each option is
  scored by the mean log-probability of its tokens after the question (understanding
  group forced), the highest wins.

`recognition_accuracy` and `clip_i` are also the trainer's checkpoint selectors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant.errors import UserInputError
from yoc_assistant.personalize import data
from yoc_assistant.personalize import phrasings as P

if TYPE_CHECKING:
    from PIL import Image

UNDERSTANDING = "understanding"
GENERATION = "generation"


def _as_tokens(bb: Any, images: Sequence[Any]) -> list[list[int]]:
    """Image-token id lists; PIL images are VQ-encoded (in one batch)."""
    from PIL import Image as PILImage

    pils = [(k, im) for k, im in enumerate(images) if isinstance(im, PILImage.Image)]
    out: list[Any] = list(images)
    if pils:
        encoded = bb.encode_images([im for _, im in pils])
        for (k, _), row in zip(pils, encoded, strict=True):
            out[k] = row.tolist()
    return [[int(t) for t in im] for im in out]


@torch.no_grad()
def _last_logits(bb: Any, prompts: Sequence[Sequence[int]], extra: Any,
                 batch_size: int = 8) -> torch.Tensor:
    """Next-token logits [N, V+E] after each prompt; equal-length prompts share a pass
    and only the last position goes through the head (the full [T, V] logits of a 7B
    vocabulary would be hundreds of MB per image)."""
    rows: list[torch.Tensor | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for k, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(k)
    for idx in by_len.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            ids = torch.tensor([list(prompts[k]) for k in chunk], dtype=torch.long, device=bb.device)
            # rows of one question share their start (the concept's prompt, a witness's
            # photo definition): it runs once (float rounding only)
            hidden = bb.hidden_states(bb.embed(ids, extra), share_prefix_of=ids)
            logits = bb.logits(hidden[:, -1], extra).float().cpu()
            for k, row in zip(chunk, logits, strict=True):
                rows[k] = row
    return torch.stack([r for r in rows if r is not None]) if prompts else torch.zeros(0)


def forced_recognition_prompt(bb: Any, concepts: Any, name: str, image: Sequence[int],
                              question: str = P.RECOGNITION_QUESTIONS[0],
                              group: str = UNDERSTANDING) -> list[int]:
    """The evaluation prompt, ending with the forced understanding group: the layout
    of the router's request prompt (concept prompt, the photo, then the question)."""
    q = data.text_ids(bb, question, concepts.identifier_id(name))
    prompt = data.recognition_prompt(bb, concepts.prompt_ids(name), image, q, image_first=True)
    return prompt + list(concepts.group_ids(name, group))


def said_yes(bb: Any, concept_set: Any, name: str, prompts: Sequence[Sequence[int]],
             witness_margins: torch.Tensor | None = None) -> list[bool]:
    """Per prompt: does the text modality's answer start with Yes? (see the module docs)
    `witness_margins` [N]: the photo witness's weighted margins (`witness.recognition_margins`),
    added to Yes where the answer is a Yes or a No, as the text modality adds them."""
    from yoc_assistant.backbone.generation import text_decision
    from yoc_assistant.personalize.witness import yes_no_bias

    if not prompts:
        return []
    yes_id, no_id = data.answer_first_token(bb, True), data.answer_first_token(bb, False)
    if yes_id == no_id:
        raise UserInputError("this backbone's tokenizer gives 'Yes' and 'No' the same first token")
    logits = _last_logits(bb, prompts, concept_set.extra)
    # The text modality lets an answer name the mentioned concept ("Yes, <bo> is ...").
    first = text_decision(bb, logits, concept_set.extra, [concept_set.identifier_id(name)],
                          decisive_ids=[yes_id, no_id], decisive_bias=yes_no_bias(witness_margins))
    return (first == yes_id).tolist()


def recognition_accuracy(bb: Any, concept_set: Any, name: str, positives: Sequence[Any],
                         negatives: Sequence[Any], *, group: str = UNDERSTANDING,
                         question: str = P.RECOGNITION_QUESTIONS[0]) -> dict[str, Any]:
    """{"positive", "negative", "weighted", "n_positive", "n_negative"}; images are PIL
    images or image-token lists. A missing side leaves its accuracy None and the
    weighted score is then the other side's."""
    from yoc_assistant.personalize.witness import recognition_margins

    pos, neg = _as_tokens(bb, positives), _as_tokens(bb, negatives)
    prompts = [forced_recognition_prompt(bb, concept_set, name, im, question, group) for im in pos + neg]
    yes = said_yes(bb, concept_set, name, prompts,
                   recognition_margins(bb, concept_set, name, pos + neg, question))
    acc_pos = sum(yes[: len(pos)]) / len(pos) if pos else None
    acc_neg = sum(not y for y in yes[len(pos):]) / len(neg) if neg else None
    present = [a for a in (acc_pos, acc_neg) if a is not None]
    return {"positive": acc_pos, "negative": acc_neg,
            "weighted": sum(present) / len(present) if present else None,
            "n_positive": len(pos), "n_negative": len(neg)}


# --- CLIP-I ---------------------------------------------------------------------------


def clip_i(clip: Any, generated: Sequence[Image.Image] | torch.Tensor,
           real: Sequence[Image.Image] | torch.Tensor) -> float:
    """Mean cosine similarity over all (generated, real) pairs. Either side may be
    given as already-computed embeddings [N, D] (e.g. the real photos, once per run)."""
    gen = generated if isinstance(generated, torch.Tensor) else clip.embed_images(list(generated))
    ref = real if isinstance(real, torch.Tensor) else clip.embed_images(list(real))
    if len(gen) == 0 or len(ref) == 0:
        raise UserInputError("CLIP-I needs at least one generated and one real image")
    gen = torch.nn.functional.normalize(gen.float(), dim=-1)
    ref = torch.nn.functional.normalize(ref.float(), dim=-1)
    return float((gen @ ref.T).mean())


def generation_prompt(bb: Any, concepts: Any, name: str, phrasing: str = P.GENERATION_PROMPTS[0],
                      group: str = GENERATION) -> list[int]:
    """ "A photo of <name>." with the generation group forced (generate_images adds BOI)."""
    text = data.text_ids(bb, phrasing, concepts.identifier_id(name))
    return bb.prompt_ids([list(concepts.prompt_ids(name)), text]) + list(concepts.group_ids(name, group))


def generate_concept_images(bb: Any, concepts: Any, name: str, n: int = 4, *, seed: int = 0,
                            cfg_scale: float | None = None, candidates: int | None = None,
                            on_progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
    """Pictures as `yoc draw` draws them: each the best of `candidates` samples by the
    concept's own check (`selfcheck`; None: the backbone's recommended number)."""
    from yoc_assistant.personalize.selfcheck import draw_for_concepts

    out = draw_for_concepts(bb, generation_prompt(bb, concepts, name), concepts, [name], n=n,
                            candidates=candidates, cfg_scale=cfg_scale, seed=seed, on_progress=on_progress)
    return list(out.images)


def _judge_scores(report: dict[str, Any], judge: Any, note: str | None, generated: list[Image.Image],
                  real: list[Image.Image]) -> None:
    from yoc_assistant.personalize.judge import (
        DinoJudge,
        ToyJudge,
        drawn_right,
        instance_similarity,
    )

    keys = ("dino",) if judge is None or isinstance(judge, DinoJudge) else ("instance_similarity", "drawn_right")
    reason = (note or "no instance judge") if judge is None else None
    if reason is None and not generated:
        reason = report["skipped"].get("clip_i") or "no generated images"
    if reason is not None:
        for key in keys:
            report["skipped"][key] = reason
        return
    if isinstance(judge, ToyJudge):
        report["instance_similarity"] = instance_similarity(judge, generated, real)
        report["drawn_right"] = drawn_right(judge, generated, real)
    else:
        report["dino"] = instance_similarity(judge, generated, real)


# --- face similarity (optional) ----------------------------------------------------------


def _insightface_root() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface"))


def face_unavailable_reason(model: str = "buffalo_l") -> str | None:
    import importlib.util

    if importlib.util.find_spec("insightface") is None:
        return "insightface is not installed (pip install insightface onnxruntime)"
    folder = _insightface_root() / "models" / model
    if not folder.is_dir() or not any(folder.glob("*.onnx")):
        return f"the insightface model {model!r} is not in {folder} (it is never downloaded here)"
    return None


def face_similarity(generated: Sequence[Image.Image], real: Sequence[Image.Image],
                    model: str = "buffalo_l") -> float | None:
    """Mean cosine similarity of face embeddings over (generated, real) pairs where both
    show a face; None when no pair does. Call only when `face_unavailable_reason()` is None."""
    import numpy as np
    from insightface.app import FaceAnalysis

    app = FaceAnalysis(name=model, root=str(_insightface_root()),
                       allowed_modules=["detection", "recognition"], providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(640, 640))

    def embed(images: Sequence[Image.Image]) -> list[Any]:
        found = []
        for im in images:
            faces = app.get(np.asarray(im.convert("RGB"))[:, :, ::-1])
            if faces:
                best = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
                found.append(best.normed_embedding)
        return found

    gen, ref = embed(generated), embed(real)
    if not gen or not ref:
        return None
    return float(np.mean([float(np.dot(g, r)) for g in gen for r in ref]))


# --- multiple-choice QA ---------------------------------------------------------------------


@dataclass
class QAItem:
    question: str
    options: dict[str, str]
    answer: str
    image: Path | None = None


def load_qa(path: str | os.PathLike[str]) -> list[QAItem]:
    """Read a Yo'LLaVA-style multiple-choice file. Schema (JSON):

        [{"question": "What colour is <bo>'s collar?",
          "options": {"A": "Red", "B": "Blue"},
          "answer": "A",
          "image": "photos/1.png"}, ...]          # "image" optional, relative to the file

    Yo'LLaVA's own layout is accepted too: an object mapping an image path to
    {"question", "option": {...}, "correct_answer"}. In questions, `<name>` or the
    concept's plain name both mean the concept.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"QA file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"QA file {path} is not valid JSON: {err}") from None
    entries = ([{**v, "image": k} for k, v in raw.items()] if isinstance(raw, dict) else raw)
    if not isinstance(entries, list) or not entries:
        raise UserInputError(f"QA file {path}: expected a non-empty list of questions")
    return [_qa_item(path, k, e) for k, e in enumerate(entries)]


def _qa_item(path: Path, k: int, entry: Any) -> QAItem:
    where = f"QA file {path}, item {k}"
    if not isinstance(entry, dict):
        raise UserInputError(f"{where}: expected an object with question, options, answer")
    question = entry.get("question")
    options = entry.get("options", entry.get("option"))
    answer = entry.get("answer", entry.get("correct_answer"))
    if not isinstance(question, str) or not question.strip():
        raise UserInputError(f"{where}: 'question' must be a non-empty string")
    if not isinstance(options, dict) or len(options) < 2 or \
            not all(isinstance(v, str) and v for v in options.values()):
        raise UserInputError(f"{where}: 'options' must map at least two letters to texts")
    if answer not in options:
        raise UserInputError(f"{where}: 'answer' {answer!r} is not one of the options "
                             f"{', '.join(map(str, options))}")
    image = entry.get("image")
    if image is not None and not isinstance(image, str):
        raise UserInputError(f"{where}: 'image' must be a path")
    img_path = None
    if image:
        img_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not img_path.is_file():
            raise UserInputError(f"{where}: image {img_path} does not exist")
    return QAItem(question.strip(), {str(a): str(v) for a, v in options.items()}, str(answer), img_path)


@torch.no_grad()
def _option_score(bb: Any, prompt: list[int], option: list[int], extra: Any) -> float:
    if not option:
        return float("-inf")
    ids = torch.tensor([prompt + option], dtype=torch.long, device=bb.device)
    hidden = bb.hidden_states(bb.embed(ids, extra))
    states = hidden[0, len(prompt) - 1:-1]
    logp = torch.log_softmax(bb.logits(states, extra).float(), dim=-1)
    target = torch.tensor(option, device=logp.device)
    return float(logp.gather(1, target[:, None]).mean())


def qa_accuracy(bb: Any, concept_set: Any, name: str, items: Sequence[QAItem], *,
                group: str = UNDERSTANDING,
                on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    correct = 0
    ident = concept_set.identifier_id(name)
    for k, item in enumerate(items):
        parts: list[Any] = [list(concept_set.prompt_ids(name))]
        if item.image is not None:
            from PIL import Image as PILImage

            with PILImage.open(item.image) as im:
                parts.append(data.image_block(bb, _as_tokens(bb, [im.convert("RGB")])[0]))
        parts.append(data.text_ids(bb, data.mark_name(item.question, name), ident))
        prompt = bb.prompt_ids(parts) + list(concept_set.group_ids(name, group))
        scores = {letter: _option_score(bb, prompt, data.text_ids(bb, data.mark_name(text, name), ident),
                                        concept_set.extra)
                  for letter, text in item.options.items() if text}
        correct += max(scores, key=lambda a: scores[a]) == item.answer
        if on_progress is not None:
            on_progress(k + 1, len(items))
    return {"accuracy": correct / len(items) if items else None, "n": len(items)}


# --- the whole report (`yoc eval`) ---------------------------------------------------------


def evaluate_concept(bb: Any, concept_set: Any, name: str, *, positives: Sequence[Any],
                     negatives: Sequence[Any], real: Sequence[Image.Image], clip: Any = None,
                     clip_note: str | None = None, n_images: int = 4, qa_items: Sequence[QAItem] = (),
                     seed: int = 0, on_progress: Callable[[int, int], None] | None = None,
                     judge: Any = None, judge_note: str | None = None,
                     ) -> dict[str, Any]:
    """Every metric that can run here; the ones that cannot say why under "skipped".

    `judge` (personalize.judge): the toy world's instance judge gives "instance_similarity"
    and "drawn_right" (the exact instance, its unnamed detail included); DINOv2 gives
    "dino" (DreamBench's subject score)."""
    report: dict[str, Any] = {"concept": name, "backbone": getattr(bb, "name", "?"),
                              "skipped": {}, "notes": []}
    from yoc_assistant.personalize.witness import applied_veto, applied_weight

    report["recognition"] = recognition_accuracy(bb, concept_set, name, positives, negatives)
    witness = applied_weight(bb, concept_set, [name])
    if witness:
        report["photo_witness"] = witness
        report["notes"].append(f"yes/no answers about a photo add the mean answer of the concept's own "
                               f"photos (weight {witness:g}), as `yoc ask` does (docs/usage.md, The photo witness)")
        veto = applied_veto(bb, concept_set, [name])
        if veto is not None:
            report["description_veto"] = veto
            report["notes"].append("a Yes that the concept's own description clearly denies is a No, as "
                                   "`yoc ask` answers (docs/usage.md, The photo witness)")
    generated: list[Image.Image] = []
    if not real:
        report["skipped"]["clip_i"] = "no real photos to compare with"
    elif not getattr(bb, "has_decoder", True):
        report["skipped"]["clip_i"] = "the backbone has no VQ decoder, so it cannot draw"
    elif clip is None:
        report["skipped"]["clip_i"] = clip_note or "no CLIP model"
    elif GENERATION not in concept_set.get(name).groups:
        report["skipped"]["clip_i"] = "the concept has no generation group"
    else:
        from yoc_assistant.personalize.selfcheck import effective_candidates

        generated = generate_concept_images(bb, concept_set, name, n_images, seed=seed,
                                            on_progress=on_progress)
        report["clip_i"] = clip_i(clip, generated, list(real))
        report["n_generated"] = len(generated)
        k = effective_candidates(bb, concept_set, [name])
        report["draw_candidates"] = k
        if k > 1:  # say how the pictures were made: the figures are what `yoc draw` gives
            report["notes"].append(f"each picture is the best of {k} samples by the concept's own "
                                   "check, as `yoc draw` draws it (docs/usage.md, Self-check)")
    _judge_scores(report, judge, judge_note, generated, list(real))
    reason = face_unavailable_reason()
    if reason is None and not generated:
        reason = "no generated images"
    if reason is None:
        report["face_similarity"] = face_similarity(generated, list(real))
        if report["face_similarity"] is None:
            report["notes"].append("face similarity: no face found in the images")
    else:
        report["skipped"]["face_similarity"] = reason
    if qa_items:
        report["qa"] = qa_accuracy(bb, concept_set, name, qa_items)
    else:
        report["skipped"]["qa"] = "no QA file (--qa FILE)"
    return report
