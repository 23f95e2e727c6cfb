"""Retrieval: CLIP image embeddings (cached by image hash) and ranking of the pool.

Which CLIP (`ClipSpec`), in order:
1. `YOC_CLIP_MODEL` (+ `YOC_CLIP_WEIGHTS`): an open_clip built-in name such as
   `ViT-B-32` with weights that are a local `.safetensors` file or an open_clip
   pretrained tag (e.g. `laion2b_s34b_b79k`) whose safetensors file is already in
   the local HF cache; or a folder holding `open_clip_config.json` + a
   `.safetensors` file (open_clip's `local-dir` layout; no weights needed).
2. The toy world's shipped CLIP, `yoc_assistant/toyworld/weights/clip/`, if present.
3. `ViT-B-32` / `laion2b_s34b_b79k` from the HF cache (`yoc pull` fetches it).
Nothing is ever downloaded here: a model that is not on disk is "unavailable" with a
note saying why, and retrieval and CLIP-I are skipped. Only safetensors weights are
read (no pickle).

Ranking (`rank_pool`), with the concept's photos' mean embedding as the query and
pool images sorted by cosine similarity, most similar first:
* soft positives = the top `n_soft` (~1000 in the paper): images that look like the
  concept; they teach generation (more similar -> more generation tokens);
* hard negatives = the next `n_hard` (100): similar, yet ranked below the soft
  positives, so the likeliest near-duplicates of the concept are never told "No";
  `hard_negatives="top"` takes the top `n_hard` instead (the paper's literal
  "most similar" reading) and starts the soft positives after them;
  `hard_negatives="shared-top"` takes the top `n_hard` as negatives *and* keeps them
  among the soft positives: an image that looks like the concept but is not it is
  the hardest "No" for recognition and still a good partial target for generation
  (with a small pool, "after-soft" hard negatives are not hard at all: ranks
  401-500 of 600 held no lookalike of a toy concept);
* easy negatives = `n_easy` (100) drawn at random (seeded) from the rest.
Pools smaller than n_soft + n_hard + n_easy keep up to a sixth of the pool for each
kind of negative (at least one of each from 3 images on); the rest are soft positives.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from yoc_assistant import settings
from yoc_assistant.personalize.tensorcache import CacheIndex, TensorCache

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_TAG = "laion2b_s34b_b79k"
TOY_CLIP_DIR = Path(__file__).resolve().parent.parent / "toyworld" / "weights" / "clip"
SAFE_WEIGHTS = "open_clip_model.safetensors"
EMBED_KIND = "clip"

PAPER_SOFT, PAPER_HARD, PAPER_EASY = 1000, 100, 100


class ClipUnavailable(Exception):
    """The asked-for CLIP is not on this machine; `str(err)` is the note to show."""


@dataclass(frozen=True)
class ClipSpec:
    """`model_name`: open_clip built-in name, or a local folder (`local-dir` layout).
    `weights`: a `.safetensors` file or an open_clip pretrained tag; None for a folder."""

    model_name: str
    weights: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name}/{self.weights}" if self.weights else self.model_name


def default_spec() -> ClipSpec:
    env_model = settings.clip_model()
    if env_model:
        return ClipSpec(env_model, settings.clip_weights())
    if (TOY_CLIP_DIR / "open_clip_config.json").is_file():
        return ClipSpec(str(TOY_CLIP_DIR), None)
    return ClipSpec(DEFAULT_MODEL, settings.clip_weights() or DEFAULT_TAG)


@dataclass(frozen=True)
class _Resolved:
    create_name: str  # what open_clip.create_model is given
    weights_file: Path
    pretrained: str | None  # file path for built-in names, None for local-dir
    preprocess: dict[str, Any] | None
    quick_gelu: bool = False  # some tags (e.g. OpenAI's) were trained with QuickGELU


def _local_dir(name: str) -> Path | None:
    raw = name[len("local-dir:"):] if name.startswith("local-dir:") else name
    path = Path(raw).expanduser()
    return path if path.is_dir() else None


def _resolve_dir(folder: Path) -> _Resolved:
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise ClipUnavailable(f"CLIP folder {folder} has no open_clip_config.json")
    files = sorted(folder.glob("*.safetensors"))
    preferred = [f for f in files if f.name in (SAFE_WEIGHTS, "open_clip_pytorch_model.safetensors")]
    if not files:
        raise ClipUnavailable(f"CLIP folder {folder} has no .safetensors weights "
                              "(only safetensors are read)")
    return _Resolved(f"local-dir:{folder}", (preferred or files)[0], None, None)


def _hf_cached_file(hf_hub: str) -> Path | None:
    """The safetensors file of an open_clip `hf_hub` entry, from the local HF cache only."""
    from huggingface_hub import try_to_load_from_cache

    # open_clip writes "org/repo/" (default file) or "org/repo/file.bin".
    repo, filename = os.path.split(hf_hub)
    names = [SAFE_WEIGHTS]
    if filename and filename.endswith((".bin", ".pth", ".pt")):
        names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _resolve_builtin(spec: ClipSpec) -> _Resolved:
    import open_clip

    name = spec.model_name.replace("/", "-")
    if name not in open_clip.list_models():
        raise ClipUnavailable(f"unknown CLIP model {spec.model_name!r} (not an open_clip "
                              "model name nor a folder with open_clip_config.json)")
    if not spec.weights:
        raise ClipUnavailable(f"CLIP model {name} needs weights (YOC_CLIP_WEIGHTS: a "
                              ".safetensors file or a pretrained tag)")
    as_file = Path(spec.weights).expanduser()
    if as_file.is_file():
        if as_file.suffix != ".safetensors":
            raise ClipUnavailable(f"CLIP weights {as_file} are not a .safetensors file "
                                  "(pickled checkpoints are never loaded)")
        return _Resolved(name, as_file, str(as_file), None)
    cfg = open_clip.get_pretrained_cfg(name, spec.weights)
    if not cfg or not cfg.get("hf_hub"):
        raise ClipUnavailable(f"CLIP weights {spec.weights!r} are neither a file nor an "
                              f"open_clip tag of {name} hosted on the HF hub")
    found = _hf_cached_file(cfg["hf_hub"])
    if found is None:
        raise ClipUnavailable(f"CLIP {name}/{spec.weights} is not in the local HF cache "
                              "(run `yoc pull` to fetch it; nothing is downloaded otherwise)")
    keys = ("mean", "std", "interpolation", "resize_mode")
    return _Resolved(name, found, str(found), {k: cfg[k] for k in keys if k in cfg},
                     bool(cfg.get("quick_gelu", False)))


def resolve(spec: ClipSpec) -> _Resolved:
    folder = _local_dir(spec.model_name)
    if folder is not None:
        return _resolve_dir(folder)
    if spec.model_name.startswith("local-dir:"):
        raise ClipUnavailable(f"CLIP folder {spec.model_name[10:]} does not exist")
    if spec.model_name.startswith("hf-hub:"):
        raise ClipUnavailable("hf-hub: CLIP names are not loaded at run time; give a "
                              "local folder or a built-in name with a cached tag")
    return _resolve_builtin(spec)


def clip_available(spec: ClipSpec | None = None) -> bool:
    try:
        resolve(spec or default_spec())
    except ClipUnavailable:
        return False
    return True


def unavailable_reason(spec: ClipSpec | None = None) -> str | None:
    """None when the CLIP can be loaded, else the note to show."""
    try:
        resolve(spec or default_spec())
    except ClipUnavailable as err:
        return str(err)
    return None


def _weights_id(path: Path) -> str:
    """Cheap identity of a weights file: its size plus hashes of its head and tail."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read())
    return digest.hexdigest()[:16]


class ClipModel:
    """A loaded open_clip model. `images_embedded` counts images run through the network."""

    def __init__(self, spec: ClipSpec, model: Any, preprocess: Any, model_id: str,
                 create_name: str, device: torch.device) -> None:
        self.spec = spec
        self.model = model
        self.preprocess = preprocess
        self.model_id = model_id
        self.create_name = create_name
        self.device = device
        self.images_embedded = 0

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """FloatTensor [N, D] (float32, CPU), L2-normalized."""
        if not images:
            return torch.zeros(0, self.dim)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = [self.preprocess(im.convert("RGB")) for im in images[start:start + batch_size]]
            pixels = torch.stack(batch).to(self.device)
            feats = self.model.encode_image(pixels).float()
            chunks.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
            self.images_embedded += len(batch)
        return torch.cat(chunks)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        import open_clip

        tokenizer = open_clip.get_tokenizer(self.create_name)
        feats = self.model.encode_text(tokenizer(list(texts)).to(self.device)).float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu()

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") \
            else int(self.model.visual.output_dim)


class _DropNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _without_open_clip_notice(active: bool) -> Iterator[None]:
    """open_clip logs "No pretrained weights loaded ... initialized randomly" (on the root
    logger) for a folder whose weights yoc loads itself right after: not true, not shown."""
    if not active:
        yield
        return
    notice = _DropNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def load_clip(spec: ClipSpec | None = None, device: str | torch.device = "cpu") -> ClipModel:
    """Load the CLIP of `spec` (default: `default_spec()`). Raises ClipUnavailable."""
    import open_clip

    spec = spec or default_spec()
    found = resolve(spec)
    try:
        # pretrained_text=False: never let a tower fetch its own base weights. A folder's
        # weights are loaded by us from the one file resolve() checked: open_clip would pick
        # its own favourite in the folder (a pickled .bin before model.safetensors).
        from_folder = found.pretrained is None
        with _without_open_clip_notice(from_folder):
            model = open_clip.create_model(
                found.create_name, pretrained=found.pretrained, device=device,
                load_weights=not from_folder, force_preprocess_cfg=found.preprocess,
                pretrained_text=False, require_pretrained=not from_folder,
                force_quick_gelu=found.quick_gelu,
            )
        if from_folder:
            if found.weights_file.suffix != ".safetensors":
                raise ClipUnavailable(f"CLIP weights {found.weights_file} are not safetensors")
            open_clip.load_checkpoint(model, str(found.weights_file), strict=True)
    except ClipUnavailable:
        raise
    except Exception as err:  # damaged file, wrong architecture: a note, not a crash
        raise ClipUnavailable(f"CLIP weights {found.weights_file} could not be loaded "
                              f"({type(err).__name__}: {str(err)[:200]})") from None
    model.eval()
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    preprocess = image_transform_v2(cfg, is_train=False)
    # Cache key: the weights' identity, not their path (the folder may move).
    name = spec.model_name if found.pretrained else f"local:{found.weights_file.parent.name}"
    model_id = f"{name}#{_weights_id(found.weights_file)}"
    return ClipModel(spec, model, preprocess, model_id, found.create_name, torch.device(device))


# --- embeddings with the cache ---------------------------------------------------


def library_loader(library: Any) -> Callable[[str], Image.Image]:
    """sha256 -> RGB image, read from the library's image store."""

    def load(sha: str) -> Image.Image:
        from PIL import Image

        with Image.open(library.image_path(sha)) as img:
            return img.convert("RGB")

    return load


def embed_cached(clip: ClipModel, index: CacheIndex, shas: Sequence[str],
                 load_image: Callable[[str], Image.Image], *, batch_size: int = 64,
                 on_progress: Callable[[int, int], None] | None = None,
                 root: Path | None = None) -> torch.Tensor:
    """Embeddings [len(shas), D] in order; only images not cached yet are loaded and embedded."""
    cache = TensorCache(index, EMBED_KIND, clip.model_id, root=root)

    def compute(batch: list[str]) -> dict[str, torch.Tensor]:
        embs = clip.embed_images([load_image(sha) for sha in batch], batch_size=batch_size)
        return dict(zip(batch, embs, strict=True))

    found = cache.get_or_compute(list(shas), compute, batch_size=max(batch_size, 256),
                                 on_progress=on_progress)
    if not shas:
        return torch.zeros(0, clip.dim)
    return torch.stack([found[sha].float() for sha in shas])


# --- ranking ------------------------------------------------------------------


@dataclass
class Ranking:
    """Pool keys (image sha256s) by role; soft positives most similar first."""

    soft_positives: list[str] = field(default_factory=list)
    hard_negatives: list[str] = field(default_factory=list)
    easy_negatives: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # cosine to the concept's mean
    notes: list[str] = field(default_factory=list)


# Where hard negatives come from in the ranking (see the module doc).
HARD_NEGATIVES = ("after-soft", "top", "shared-top")


def split_sizes(pool: int, n_soft: int = PAPER_SOFT, n_hard: int = PAPER_HARD,
                n_easy: int = PAPER_EASY) -> tuple[int, int, int]:
    """(soft, hard, easy) for a pool of `pool` images: as asked when it fits. A smaller
    pool keeps up to a sixth of it for each kind of negative (at least one each from 3
    images on) and gives the rest to soft positives: recognition needs its negatives
    more than generation needs its thousandth soft positive."""
    if pool >= n_soft + n_hard + n_easy:
        return n_soft, n_hard, n_easy
    floor = 1 if pool >= 3 else 0
    hard = min(n_hard, max(floor, pool // 6))
    easy = min(n_easy, max(floor, pool // 6))
    soft = min(n_soft, max(0, pool - hard - easy))
    return soft, hard, easy


def rank_pool(concept_embs: torch.Tensor, pool_embs: torch.Tensor,
              pool_keys: Sequence[str] | None = None, *, n_soft: int = PAPER_SOFT,
              n_hard: int = PAPER_HARD, n_easy: int = PAPER_EASY, seed: int = 0,
              hard_negatives: str = "after-soft", exclude: Sequence[str] = ()) -> Ranking:
    """Split the pool by cosine similarity to the mean of `concept_embs` (see module doc).

    `pool_keys` name the pool rows (default "0", "1", ...); keys in `exclude` (the
    concept's own photos, if they are also in the pool) are never used.
    """
    keys = list(pool_keys) if pool_keys is not None else [str(i) for i in range(len(pool_embs))]
    if len(keys) != len(pool_embs):
        raise ValueError(f"{len(keys)} pool keys for {len(pool_embs)} embeddings")
    if len(pool_embs) == 0:
        return Ranking(notes=[NO_POOL_NOTE])
    if len(concept_embs) == 0:
        raise ValueError("no concept photos to rank the pool against")
    query = torch.nn.functional.normalize(concept_embs.float().mean(0), dim=-1)
    pool = torch.nn.functional.normalize(pool_embs.float(), dim=-1)
    sims = (pool @ query).tolist()
    skip = set(exclude)
    order = sorted((i for i, k in enumerate(keys) if k not in skip), key=lambda i: (-sims[i], i))
    soft, hard, easy = split_sizes(len(order), n_soft, n_hard, n_easy)
    ranked = [keys[i] for i in order]
    if hard_negatives not in HARD_NEGATIVES:
        raise ValueError(f"hard negatives must be one of {', '.join(HARD_NEGATIVES)}, not {hard_negatives!r}")
    if hard_negatives == "top":
        hard_keys, soft_keys = ranked[:hard], ranked[hard:hard + soft]
        rest = ranked[soft + hard:]
    elif hard_negatives == "shared-top":
        soft_keys, hard_keys = ranked[:soft], ranked[:hard]
        rest = ranked[soft:]
    else:
        soft_keys, hard_keys = ranked[:soft], ranked[soft:soft + hard]
        rest = ranked[soft + hard:]
    easy_keys = random.Random(seed).sample(rest, min(easy, len(rest)))
    out = Ranking(soft_keys, hard_keys, easy_keys, {keys[i]: sims[i] for i in order})
    if len(order) < n_soft + n_hard + n_easy:
        out.notes.append(f"small pool ({len(order)} images): {len(soft_keys)} soft positives, "
                         f"{len(hard_keys)} hard and {len(easy_keys)} easy negatives "
                         f"(the paper uses {n_soft}/{n_hard}/{n_easy})")
    return out


NO_POOL_NOTE = ("no pool of generic photos: training from the concept's photos alone "
                "(add some with `yoc pool add FOLDER` for soft positives and negatives)")


def retrieve(index: CacheIndex, concept_shas: Sequence[str], pool_shas: Sequence[str],
             load_image: Callable[[str], Image.Image] | None = None, *, spec: ClipSpec | None = None,
             clip: ClipModel | None = None, device: str = "cpu",
             on_progress: Callable[[int, int], None] | None = None,
             **rank_kwargs: Any) -> Ranking:
    """Embed (cached) and rank: the one call training needs. Never raises for a missing
    pool or CLIP: it returns an empty Ranking whose notes say what was skipped.
    `index` is the Library (cache rows; images read from its store unless `load_image`)."""
    load_image = load_image or library_loader(index)
    if not pool_shas:
        return Ranking(notes=[NO_POOL_NOTE])
    if clip is None:
        try:
            clip = load_clip(spec, device=device)
        except ClipUnavailable as err:
            return Ranking(notes=[f"retrieval skipped: {err}"])
    concept = embed_cached(clip, index, concept_shas, load_image)
    pool = embed_cached(clip, index, pool_shas, load_image, on_progress=on_progress)
    return rank_pool(concept, pool, list(pool_shas), exclude=concept_shas, **rank_kwargs)
