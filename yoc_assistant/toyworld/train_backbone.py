"""Pretrain the toy Chameleon text+image model on world scenes.

The checkpoint starts as `backbone.tiny.write_tiny_checkpoint` (a complete
Anole-format directory with the world's word-level tokenizer), takes the trained
VQ-VAE from `train_vq`, and is trained through yoc's own `Backbone.embed` /
`Backbone.forward` (the same calls personalization makes) on five tasks in
Anole's turn format: captioning, caption -> image, recognition ("is the X in this
photo ?"), existence ("is there a red star ?") and attribute QA. The loss is
averaged per example, then per task, then over tasks: with one average over all
target tokens the 66-token image answers drown the one-word answers.

    python -m yoc_assistant.toyworld.train_backbone [--minutes M] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from yoc_assistant.personalize.batches import task_balanced_loss
from yoc_assistant.toyworld import language, world
from yoc_assistant.toyworld.common import (
    BACKBONE_DIR,
    Progress,
    cpu_bf16_is_fast,
    load_tensors,
    lr_at,
    save_tensors,
    set_threads,
    work_dir,
    write_json,
)

# yoc's keys in the exported config.json: the display name, and the guidance it draws
# best with (it never saw a prompt-less example, so CFG's unconditional branch is noise
# to it: unguided pictures of "a dotted orange star" matched real photos with CLIP-I
# 0.50 and the right colour 0.75 of the time; at CFG 3, 0.06 and 0.00).
# `yoc_caption_prompt`: one of the caption task's prompts (language.py), which yoc sends
# for "what is in this photo?" and its other wordings, which this model never saw.
# `yoc_draw_candidates`: samples per picture for a concept's self-check to pick from
# (`personalize.selfcheck`; measured with the harness, docs/toyworld.md "Self-check").
# `yoc_photo_witness`: the weight of the reference photo's own answer in a yes/no about a
# photo (`personalize.witness`; measured with the harness, docs/toyworld.md "The photo witness").
# `yoc_description_veto`: how clearly the concept's own description ("sunny is a dotted orange
# star.") must say No to turn a witnessed Yes into No (a margin of at most minus this;
# docs/toyworld.md "Every photo as witness, and the description's veto").
# `yoc_recipe`: how concepts are trained on this backbone by every entry point (add-concept,
# train, the chat app, the demo), measured with the ablation harness (docs/toyworld.md).
RECIPE: dict[str, Any] = {"steps": 1600, "lr": 0.001, "batch_size": 4, "checkpoint_every": 200,
                          "eval_every": 800, "reference_photo": True, "hard_negatives": "shared-top"}
DRAW_CANDIDATES = 8
PHOTO_WITNESS = 1.0
DESCRIPTION_VETO = 1.0
YOC_SETTINGS: dict[str, Any] = {"yoc_name": "yoc-toy", "yoc_cfg_scale": 1.0, "yoc_draw_candidates": DRAW_CANDIDATES,
                                "yoc_photo_witness": PHOTO_WITNESS, "yoc_description_veto": DESCRIPTION_VETO,
                                "yoc_caption_prompt": "describe this photo .",
                                "yoc_recipe": RECIPE}

MODEL: dict[str, int] = {"hidden_size": 192, "num_layers": 4, "num_heads": 4, "intermediate_size": 512}
QUICK_MODEL: dict[str, int] = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}


# -- the checkpoint ------------------------------------------------------------------------

def build_skeleton(folder: Path, vq_dir: Path, model: dict[str, int], seed: int) -> Path:
    """A complete checkpoint: random text model, the trained VQ-VAE (encoder, codebook, decoder)."""
    from safetensors.torch import save_file

    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    vq_cfg = json.loads((vq_dir / "vq_config.json").read_text())
    write_tiny_checkpoint(folder, hidden_size=model["hidden_size"], num_layers=model["num_layers"],
                          num_heads=model["num_heads"], intermediate_size=model["intermediate_size"],
                          words=language.vocabulary(), vq=vq_cfg, seed=seed)
    tensors = load_tensors(folder / "model.safetensors")
    trained = load_tensors(vq_dir / "vq.safetensors")
    for key, value in trained.items():
        name = f"model.vqmodel.{key}"
        if name not in tensors or tensors[name].shape != value.shape:
            raise RuntimeError(f"{vq_dir}: VQ tensor {key} does not fit the checkpoint skeleton")
        tensors[name] = value
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def init_from(skeleton: Path, source: Path) -> None:
    """Start the skeleton's text model from a trained toy backbone (`source`): every
    tensor but the VQ-VAE's is copied; embedding and head rows follow their token's
    *name*, so words added to the vocabulary (which shifts every id after them) get a
    fresh row at the mean of the old text rows and all others keep what they learnt.

    A skeleton with k times the source's layers is *grown*: source layer i becomes layer
    k*i, and each layer in between starts as the identity (its attention output and MLP
    down projections zero, so it adds nothing to the residual stream): the grown model
    computes exactly what the source did, and training gives the new layers work only as
    far as they lower the loss. Why: continued pretraining of the 4-layer model had
    stalled (generation loss 3.4 nats a token from v9 to v12, docs/toyworld.md), and a
    model trained from scratch needs far more CPU hours than growing one does."""
    from safetensors.torch import save_file

    def config(folder: Path) -> dict[str, Any]:
        return json.loads((folder / "config.json").read_text())

    new, old = load_tensors(skeleton / "model.safetensors"), load_tensors(source / "model.safetensors")
    new_cfg, old_cfg = config(skeleton), config(source)
    new_vocab, old_vocab = new_cfg["vocabulary_map"], old_cfg["vocabulary_map"]
    stride = layer_stride(int(old_cfg["num_hidden_layers"]), int(new_cfg["num_hidden_layers"]), source)
    row_tensors = ("model.embed_tokens.weight", "lm_head.weight")
    for key, value in old.items():
        if key.startswith("model.vqmodel."):
            continue
        key_new = _moved_layer(key, stride)
        if key_new not in new:
            continue
        if key in row_tensors:
            text_rows = [i for n, i in old_vocab.items() if not n.startswith("IMGIMG") and not n.startswith("<")]
            rows = value[text_rows].mean(0).expand_as(new[key]).clone()
            for name, i in new_vocab.items():
                if name in old_vocab:
                    rows[i] = value[old_vocab[name]]
            new[key] = rows
        elif new[key_new].shape == value.shape:
            new[key_new] = value
        else:
            raise RuntimeError(f"{source}: tensor {key} has shape {tuple(value.shape)}, "
                               f"the skeleton {tuple(new[key_new].shape)}")
    for layer in range(int(new_cfg["num_hidden_layers"])):
        if layer % stride:  # a new layer: the identity until trained
            for part in IDENTITY_ZEROED:
                key = f"model.layers.{layer}.{part}"
                new[key] = torch.zeros_like(new[key])
    save_file(new, str(skeleton / "model.safetensors"), metadata={"format": "pt"})


# The projections that write into the residual stream: zero, a pre-norm layer is the identity.
IDENTITY_ZEROED = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def layer_stride(old_layers: int, new_layers: int, source: Path) -> int:
    """How far apart the source's layers land in the grown model (1: same depth)."""
    if new_layers < old_layers or new_layers % old_layers:
        raise RuntimeError(f"{source}: {old_layers} layers cannot grow to {new_layers} "
                           f"(a whole multiple of {old_layers} is needed)")
    return new_layers // old_layers


_LAYERS = "model.layers."


def _layer_index(key: str) -> int | None:
    """'model.layers.3.mlp.down_proj.weight' -> 3; None for a tensor outside the layers."""
    return int(key[len(_LAYERS):].split(".", 1)[0]) if key.startswith(_LAYERS) else None


def _moved_layer(key: str, stride: int) -> str:
    """'model.layers.1.mlp...' -> 'model.layers.{stride}.mlp...'; other keys unchanged."""
    index = _layer_index(key)
    return key if index is None else f"{_LAYERS}{index * stride}.{key.split('.', 3)[3]}"


def export(bb: Any, skeleton: Path, dest: Path, meta: dict[str, Any]) -> None:
    """Write `bb` as an ordinary HF directory at `dest`, replacing it atomically (dir swap)."""
    from yoc_assistant.backbone.vqgan import DECODER_PREFIX

    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(skeleton, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = {k: v.float() for k, v in bb.model.state_dict().items()}
    skeleton_tensors = load_tensors(skeleton / "model.safetensors")
    tensors.update({k: v for k, v in skeleton_tensors.items() if k.startswith(DECODER_PREFIX)})
    save_tensors(tmp / "model.safetensors", tensors, {"format": "pt"})
    config = json.loads((tmp / "config.json").read_text())
    write_json(tmp / "config.json", {**config, **YOC_SETTINGS})
    write_json(tmp / "toyworld.json", meta)
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


# -- data --------------------------------------------------------------------------------

def encode_scenes(bb: Any, scenes: list[world.Scene], chunk: int = 256) -> torch.Tensor:
    """Image-token BPE ids [N, image_seq_length] through the backbone's own encoder."""
    out = []
    for i in range(0, len(scenes), chunk):
        out.append(bb.encode_images([world.render(s) for s in scenes[i:i + chunk]]))
    return torch.cat(out)


class Batcher:
    """Builds padded batches of examples with target masks; equal examples per task.

    Named tasks' names and fillers take fresh extra rows (ids from `vocab_size` on),
    drawn per batch the way `ConceptVectors.initialize` draws a new concept's rows,
    with more spread; they are never targets."""

    def __init__(self, bb: Any, scenes: list[world.Scene], image_ids: torch.Tensor) -> None:
        self.bb, self.scenes, self.image_ids = bb, scenes, image_ids
        self.pool = language.ScenePool(scenes)
        self.sp = bb.special
        self._cache: dict[str, list[int]] = {}
        self._patches: dict[int, list[bool]] = {}
        self._extra = 0  # extra rows handed out in the batch being built

    def _text(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.bb.tokenize(text)
        return self._cache[text]

    def _fresh(self, n: int) -> list[int]:
        first = int(self.bb.vocab_size) + self._extra
        self._extra += n
        return list(range(first, first + n))

    def _parts(self, parts: list, names: dict[int, int]) -> list[int]:
        out: list[int] = []
        for part in parts:
            if isinstance(part, language.Photo):
                out += [self.sp.boi, *self.image_ids[part.index].tolist(), self.sp.eoi]
            elif isinstance(part, language.Name):
                if part.k not in names:
                    names[part.k] = self._fresh(1)[0]
                out.append(names[part.k])
            elif isinstance(part, language.Filler):
                out += self._fresh(part.n)
            else:
                out += self._text(part)
        return out

    def example_ids(self, ex: language.Example) -> tuple[list[int], int]:
        """(ids, answer start): BOS + prompt + SEP + answer + EOS; an empty prompt is BOS
        alone, so that a prompt-less photo reads as CFG's unconditional [BOS, BOI]."""
        names: dict[int, int] = {}
        prompt = [self.sp.bos, *self._parts(ex.prompt, names), self.sp.sep] if ex.prompt else [self.sp.bos]
        return prompt + self._parts(ex.answer, names) + [self.sp.eos], len(prompt)

    def object_multipliers(self, ex: language.Example, length: int, object_weight: float) -> list[float]:
        """Per token of `example_ids(ex)` (length `length`): 1 + `object_weight` on the image
        tokens of an answer's photo whose patch shows part of an object, else 1."""
        out = [1.0] * length
        at = length - 1 - sum(self._length(part) for part in ex.answer)  # the answer's first token
        for part in ex.answer:
            if isinstance(part, language.Photo):
                shown = self._object_patches(part.index)
                for k, is_object in enumerate(shown):
                    if is_object:
                        out[at + 1 + k] += object_weight  # after BOI
            at += self._length(part)
        return out

    def _length(self, part: Any) -> int:
        """Tokens `_parts` gives a part (without handing out extra rows)."""
        if isinstance(part, language.Photo):
            return len(self.image_ids[part.index]) + 2
        if isinstance(part, language.Name):
            return 1
        if isinstance(part, language.Filler):
            return part.n
        return len(self._text(part))

    def _object_patches(self, index: int) -> list[bool]:
        if index not in self._patches:
            grid = int(round(len(self.image_ids[index]) ** 0.5))
            self._patches[index] = world.object_patches(self.scenes[index], grid).tolist()
        return self._patches[index]

    def extra_rows(self, n: int, rng: np.random.Generator) -> Any:
        """`n` new-concept-like rows: inputs at the text embedding's mean plus noise of a
        random 0.1-1 x its spread, outputs at the head's mean (they are never targets)."""
        from yoc_assistant.backbone.core import ExtraTokens

        emb = self.bb.model.get_input_embeddings().weight.detach().float()
        text = emb[~self.bb.image_vocab.mask(int(emb.shape[0]), device=emb.device)]
        head = self.bb.model.lm_head.weight.detach().float()
        scale = torch.from_numpy(rng.uniform(0.1, 1.0, (n, 1))).float()
        noise = torch.from_numpy(rng.standard_normal((n, emb.shape[1]))).float()
        inputs = text.mean(0) + scale * text.std(0) * noise
        return ExtraTokens(inputs, head.mean(0).expand(n, -1).clone())

    def batch(self, rng: np.random.Generator, per_task: int,
              tasks: tuple[str, ...] = language.TASKS, decision_weight: float = 0.0,
              object_weight: float = 0.0) -> dict[str, Any]:
        rows, starts, task_ix, decisive, multipliers = [], [], [], [], []
        self._extra = 0
        for t, task in enumerate(tasks):
            for _ in range(per_task):
                ex = language.make_example(task, self.pool, rng)
                ids, start = self.example_ids(ex)
                rows.append(ids)
                starts.append(start)
                task_ix.append(t)
                decisive.append(task in DECISION_TASKS)
                if object_weight:
                    multipliers.append(self.object_multipliers(ex, len(ids), object_weight))
        batch = collate(rows, starts, task_ix, self.sp.pad, int(self.bb.vocab_size),
                        [decision_weight if d else 0.0 for d in decisive], multipliers or None)
        batch["extra"] = self.extra_rows(self._extra, rng) if self._extra else None
        return batch


# Their first answer word decides (yes / no, or which of two names).
DECISION_TASKS = ("recognize", "exists", "named-recognize", "named-pair", "named-instance")


def collate(rows: list[list[int]], starts: list[int], task_ix: list[int], pad: int, vocab_size: int,
            decision_weight: list[float] | None = None,
            multipliers: list[list[float]] | None = None) -> dict[str, torch.Tensor]:
    """`target`: the answer's tokens except extra rows (fillers, names). `weight`: 1 on
    targets (times each row's `multipliers`, where given); the first target (the answer's
    first word) gets `decision_weight` times the rest of the answer's weight on top (0:
    plain mean over the answer)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), length), dtype=torch.long)
    target = torch.zeros((len(rows), length), dtype=torch.bool)
    weight = torch.zeros((len(rows), length))
    for b, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[b, :len(row)] = torch.tensor(row)
        attn[b, :len(row)] = 1
        target[b, start:len(row)] = ids[b, start:len(row)] < vocab_size
        weight[b] = target[b].float()
        if multipliers is not None:
            weight[b, :len(row)] *= torch.tensor(multipliers[b])
        if decision_weight and decision_weight[b]:
            first = start + int(target[b, start:].float().argmax())
            weight[b, first] += decision_weight[b] * (float(weight[b].sum()) - 1)
    return {"ids": ids, "attention_mask": attn, "target": target, "task": torch.tensor(task_ix),
            "weight": weight}


# -- loss and evaluation ---------------------------------------------------------------------

def token_losses(bb: Any, batch: dict[str, torch.Tensor],
                 bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token CE [B, T-1] on target positions (0 elsewhere), the target mask [B, T-1],
    and the argmax token at each target position (0 elsewhere). The head runs on target
    positions only: a batch's full [B, T, V] logits, mostly prompt and padding, cost as
    much as the transformer in `evaluate` (measured with py-spy, 2026-12-03)."""
    from yoc_assistant.backbone import network

    extra = batch.get("extra")
    ids, mask = batch["ids"], batch["target"][:, 1:]
    labels = ids[:, 1:]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden, _ = network.base_forward(bb, network.embed(bb, ids, extra),
                                         attention_mask=batch["attention_mask"])
        picked = network.logits(bb, hidden[:, :-1][mask], extra).float()
    ce = torch.zeros(labels.shape, dtype=picked.dtype).masked_scatter(
        mask, F.cross_entropy(picked, labels[mask], reduction="none"))
    pred = torch.zeros_like(labels).masked_scatter(mask, picked.argmax(-1))
    return ce, mask, pred


def bucketed_token_losses(bb: Any, batch: dict[str, torch.Tensor], bf16: bool,
                          buckets: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_losses`' CE and mask, computed in `buckets` forward passes over rows of similar
    length, each cut to its own longest row. A mixed batch (captions of ~80 tokens, photo
    definitions of ~290) is otherwise more than half padding, and attention pays for it
    twice. Rows are right-padded and causal, so a row's losses do not depend on its bucket."""
    lengths = batch["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True)
    ce = torch.zeros(batch["ids"].shape[0], batch["ids"].shape[1] - 1)
    mask = batch["target"][:, 1:]
    parts = []
    for rows in torch.tensor_split(order, min(buckets, len(order))):
        if len(rows) == 0:
            continue
        width = int(lengths[rows].max())
        sub = {"ids": batch["ids"][rows, :width], "attention_mask": batch["attention_mask"][rows, :width],
               "target": batch["target"][rows, :width], "extra": batch.get("extra")}
        part, _, _ = token_losses(bb, sub, bf16)
        parts.append((rows, part))
    for rows, part in parts:
        ce = ce.index_put((rows,), F.pad(part, (0, ce.shape[1] - part.shape[1])))
    return ce, mask


def example_balanced_loss(ce: torch.Tensor, mask: torch.Tensor, task: torch.Tensor, n_tasks: int,
                          weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, float]]:
    """The shared `task_balanced_loss`, per example: mean over tasks of (mean over examples
    of (weighted mean over the example's target tokens)); `weight` [B, T-1] defaults to
    the mask (a plain mean)."""
    picked = mask.bool()
    w = (mask.float() if weight is None else weight)[picked]
    rows = torch.arange(ce.shape[0], device=ce.device).unsqueeze(1).expand_as(mask)[picked]
    loss, means, counts = task_balanced_loss(ce[picked], task[rows], n_tasks, token_weight=w,
                                             token_example=rows, example_task=task)
    return loss, {t: float(means[t]) for t in range(n_tasks) if counts[t] > 0}


@torch.no_grad()
def evaluate(bb: Any, batcher: Batcher, n_per_task: int, seed: int, bf16: bool | None = None,
             tasks: tuple[str, ...] = language.TASKS) -> dict[str, float]:
    """Teacher-forced argmax: an answer counts only if every target token is the argmax,
    which is exactly what greedy decoding would produce. Yes/no: the first answer token.
    `bf16` None: bf16 autocast where this CPU runs it fast (`cpu_bf16_is_fast`)."""
    bf16 = cpu_bf16_is_fast() if bf16 is None else bf16
    rng = np.random.default_rng([seed, 5])
    stats: dict[str, list[float]] = {}
    is_image = bb.image_vocab.mask(int(bb.vocab_size))
    for _ in range(max(1, n_per_task // 20)):
        batch = batcher.batch(rng, min(20, n_per_task), tasks)
        ce, mask, pred = token_losses(bb, batch, bf16)
        right = (pred == batch["ids"][:, 1:]) | ~mask
        first = mask.float().argmax(1)
        for b in range(len(pred)):
            task = tasks[int(batch["task"][b])]
            stats.setdefault(f"{task}_loss", []).append(float(ce[b].sum() / mask[b].sum()))
            if bool(is_image[batch["ids"][b, 1:][mask[b]]].any()):
                continue  # pictures are scored by drawing them (measure.py), not by argmax
            stats.setdefault(f"{task}_exact", []).append(float(right[b].all()))
            if task in DECISION_TASKS:
                stats.setdefault(f"{task}_yesno", []).append(float(right[b, first[b]]))
    return {k: float(np.mean(v)) for k, v in sorted(stats.items())}


# -- training ----------------------------------------------------------------------------

@torch.no_grad()
def init_image_rows(bb: Any, seed: int) -> None:
    """Start the image tokens' embedding and head rows from their VQ codebook vectors
    (through a fixed random projection, at the rows' own scale): similar patches then
    start as similar tokens, so the model need not discover the codebook's geometry."""
    codebook = bb.model.model.vqmodel.quantize.embedding.weight.float()  # [K, D]
    gen = torch.Generator().manual_seed(seed + 99)
    proj = torch.randn(codebook.shape[1], bb.hidden_size, generator=gen)
    feats = (codebook - codebook.mean(0)) / codebook.std(0).clamp(min=1e-6)
    rows = feats @ proj / codebook.shape[1] ** 0.5  # unit-variance entries
    bpe = bb.image_vocab.code_to_bpe
    for weight in (bb.model.model.embed_tokens.weight, bb.model.lm_head.weight):
        scale = weight.float().std()
        weight[bpe] = (rows * scale).to(weight.dtype)

def trainable(bb: Any) -> list[tuple[str, torch.nn.Parameter]]:
    out = []
    for name, p in bb.model.named_parameters():
        train = "vqmodel" not in name
        p.requires_grad_(train)
        if train:
            out.append((name, p))
    return out


def save_state(path: Path, params: list[tuple[str, torch.nn.Parameter]], opt: torch.optim.Optimizer,
               step: int) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, p in params:
        tensors[f"param.{name}"] = p.data
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"{key}.{name}"] = st[key]
    save_tensors(path, tensors, {"format": "pt", "step": str(step)})


def load_state(path: Path, params: list[tuple[str, torch.nn.Parameter]], opt: torch.optim.Optimizer) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        step = int(fh.metadata()["step"])
    tensors = load_tensors(path)
    for name, p in params:
        p.data.copy_(tensors[f"param.{name}"])
        if f"exp_avg.{name}" in tensors:
            opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": tensors[f"exp_avg.{name}"],
                            "exp_avg_sq": tensors[f"exp_avg_sq.{name}"]}
    return step


def prepare(args: argparse.Namespace, work: Path) -> tuple[Any, Path, list[world.Scene], torch.Tensor]:
    from yoc_assistant.backbone.core import Backbone

    skeleton = work / "skeleton"
    shutil.rmtree(skeleton, ignore_errors=True)
    build_skeleton(skeleton, args.vq, model_shape(args), args.seed)
    if args.init_from is not None:  # the growth stride (1: same depth), which param_groups reads
        source = json.loads((args.init_from / "config.json").read_text())
        args.grown_stride = layer_stride(int(source["num_hidden_layers"]), model_shape(args)["num_layers"],
                                         args.init_from)
    if args.init_from is not None and not args.resume:
        init_from(skeleton, args.init_from)
        print(f"[backbone] text model from {args.init_from}", flush=True)
    bb = Backbone.load(str(skeleton), precision="fp32", device="cpu")
    tokens_file = work / f"tokens-{args.scenes}-{args.seed}-v2.safetensors"
    vq_stamp = str((args.vq / "vq.safetensors").stat().st_mtime_ns)
    scenes = world.random_scenes(args.scenes, args.seed, pairs=language.PAIRS)
    if tokens_file.exists() and (work / "tokens.stamp").exists() and \
            (work / "tokens.stamp").read_text() == vq_stamp + tokens_file.name:
        image_ids = load_tensors(tokens_file)["ids"]
    else:
        t0 = time.time()
        image_ids = encode_scenes(bb, scenes)
        save_tensors(tokens_file, {"ids": image_ids})
        (work / "tokens.stamp").write_text(vq_stamp + tokens_file.name)
        print(f"[backbone] encoded {len(scenes)} scenes in {time.time() - t0:.0f}s", flush=True)
    return bb, skeleton, scenes, image_ids


def model_shape(args: argparse.Namespace) -> dict[str, int]:
    """MODEL (QUICK_MODEL with --quick), with --layers' depth where given."""
    shape = dict(QUICK_MODEL if args.quick else MODEL)
    if args.layers:
        shape["num_layers"] = args.layers
    return shape


def param_groups(params: list[tuple[str, torch.nn.Parameter]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One optimizer group at the full learning rate, or, with --trained-lr-scale S on a
    grown model, two: the layers it grew (every layer whose index is not a multiple of the
    growth stride) at the full rate and everything the source had trained at S times it, so
    new layers can learn fast without knocking the trained ones back."""
    scale, stride = float(args.trained_lr_scale), int(args.grown_stride)
    if scale == 1.0 or stride == 1:
        return [{"params": [p for _, p in params], "scale": 1.0}]
    new = [p for n, p in params if (_layer_index(n) or 0) % stride]
    ids = {id(p) for p in new}
    return [{"params": new, "scale": 1.0}, {"params": [p for _, p in params if id(p) not in ids], "scale": scale}]


def _short(task: str) -> str:
    """'named-recognize' -> 'n-rec', 'caption' -> 'cap' (progress lines)."""
    return "n-" + task[6:9] if task.startswith("named-") else task[:3]


WARMUP = 150
CALIBRATE = 20  # steps timed to turn --minutes into a step count (the lr schedule needs one)


def _fit_steps(step: int, start: int, t0: float, deadline: float, cap: int) -> int:
    rate = (step - start) / max(time.time() - t0, 1e-6)
    return max(step + 1, min(cap, step + int(rate * (deadline - time.time()))))


def train(args: argparse.Namespace) -> dict[str, float]:
    set_threads()
    torch.manual_seed(args.seed)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    bb, skeleton, scenes, image_ids = prepare(args, work)
    if args.codebook_init and not args.resume:
        init_image_rows(bb, args.seed)
    params = trainable(bb)
    bf16 = not args.fp32 and cpu_bf16_is_fast()
    print(f"[backbone] {'bf16 autocast' if bf16 else 'fp32'}", flush=True)
    bb.model.train()
    n_params = sum(p.numel() for _, p in params)
    print(f"[backbone] {n_params / 1e6:.2f} M trainable parameters, vocab {bb.vocab_size}", flush=True)
    opt = torch.optim.AdamW(param_groups(params, args), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    state_file = work / "state.safetensors"
    start = load_state(state_file, params, opt) if args.resume and state_file.exists() else 0
    batcher = Batcher(bb, scenes, image_ids)
    tasks = tuple(args.tasks)
    eval_scenes = world.random_scenes(3000, args.seed + 1, pairs=language.PAIRS)
    eval_batcher = Batcher(bb, eval_scenes, encode_scenes(bb, eval_scenes))
    rng = np.random.default_rng([args.seed, start])
    prog = Progress(args.steps, "backbone", every=10, start=start)
    t0, metrics = time.time(), {}
    deadline = t0 + args.minutes * 60 if args.minutes else None
    total = args.steps
    for step in range(start, args.steps):
        if deadline is not None and step == start + CALIBRATE:
            total = _fit_steps(step, start, t0, deadline, args.steps)
            prog.total = total
            print(f"[backbone] {args.minutes} min allow {total} steps; rerun with --steps {total} "
                  "(and no --minutes) to reproduce this run exactly", flush=True)
        if step >= total or (args.stop_at and step >= args.stop_at):
            break
        for group in opt.param_groups:
            group["lr"] = group["scale"] * lr_at(step, total, args.lr, warmup=min(WARMUP, total // 10 + 1))
        batch = batcher.batch(rng, args.per_task, tasks, decision_weight=args.decision_weight,
                              object_weight=args.object_weight)
        ce, mask = bucketed_token_losses(bb, batch, bf16)
        loss, per_task = example_balanced_loss(ce, mask, batch["task"], len(tasks), batch["weight"][:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        shown = " ".join(f"{_short(tasks[t])}={v:.2f}" for t, v in sorted(per_task.items()))
        prog.update(step + 1, float(loss.detach()), shown)
        last = step + 1 in (total, args.stop_at) or (deadline is not None and time.time() > deadline + 120)
        if (step + 1) % args.save_every == 0 or last:
            bb.model.eval()
            metrics = evaluate(bb, eval_batcher, args.eval_n, args.seed, bf16=bf16)
            bb.model.train()
            print(f"[backbone] step {step + 1} eval {json.dumps(metrics)}", flush=True)
            meta = {"step": step + 1, "total_steps": total, "seed": args.seed, "train_seconds": round(time.time() - t0),
                    "model": model_shape(args), "eval": metrics,
                    "command": "python -m yoc_assistant.toyworld.train_backbone"}
            save_state(state_file, params, opt, step + 1)
            export(bb, skeleton, args.out, meta)
        if last:
            break
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=0,
                    help="fit the number of steps (at most --steps) to this wall time")
    ap.add_argument("--stop-at", type=int, default=0,
                    help="stop (and save) after this step; the lr schedule still runs to --steps")
    ap.add_argument("--per-task", type=int, default=8, help="examples per task in a batch")
    ap.add_argument("--scenes", type=int, default=16000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--eval-n", type=int, default=100, help="eval examples per task")
    ap.add_argument("--vq", type=Path, default=None, help="default: $YOC_TOY_WORK/vq")
    ap.add_argument("--work", type=Path, default=None, help="default: $YOC_TOY_WORK/backbone")
    ap.add_argument("--out", type=Path, default=BACKBONE_DIR)
    ap.add_argument("--resume", action="store_true", help="continue from the work dir's state")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start the text model from this trained toy backbone directory (see init_from)")
    ap.add_argument("--layers", type=int, default=0,
                    help="transformer layers (default: MODEL's); with --init-from a whole multiple "
                         "of the source's grows it (see init_from); repeat it with --resume")
    ap.add_argument("--fp32", action="store_true",
                    help="no bf16 autocast (default: bf16 where this CPU runs it fast)")
    ap.add_argument("--tasks", nargs="+", choices=language.TASKS, default=list(language.TASKS),
                    help="train on these tasks only")
    ap.add_argument("--decision-weight", type=float, default=0.0,
                    help="extra weight of the yes/no token of recognition answers: 1 = as much "
                         "as the rest of the answer together")
    ap.add_argument("--trained-lr-scale", type=float, default=1.0,
                    help="with --init-from and --layers (a grown model): the learning rate of the "
                         "source's trained parameters is this times --lr, the new layers' the full "
                         "--lr (repeat it, and --init-from, with --resume)")
    ap.add_argument("--object-weight", type=float, default=0.0,
                    help="extra weight of a drawn photo's tokens that show part of an object "
                         "(1 = twice a background token's): drawing is mostly the object, "
                         "and its tokens were harder than the background's for v11")
    ap.add_argument("--codebook-init", action="store_true",
                    help="start image-token rows from the VQ codebook (see init_image_rows)")
    ap.add_argument("--quick", action="store_true", help="tiny model, a few steps (CI)")
    args = ap.parse_args(argv)
    args.grown_stride = 1  # set from --init-from's config (prepare)
    args.vq = args.vq or work_dir() / "vq"
    args.work = args.work or work_dir() / "backbone"
    if args.quick:
        args.steps, args.per_task, args.scenes, args.save_every, args.eval_n = 6, 2, 64, 6, 20
    if not (args.vq / "vq.safetensors").exists():
        raise SystemExit(f"no trained VQ-VAE at {args.vq}: run python -m yoc_assistant.toyworld.train_vq first")
    metrics = train(args)
    print(f"[backbone] done: {json.dumps(metrics)} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
