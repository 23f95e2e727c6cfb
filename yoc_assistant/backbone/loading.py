"""Load a Chameleon/Anole checkpoint into a frozen `Backbone`.

The source is a local HF directory or a hub id already in the local HF cache
(never downloaded here: `yoc pull` does that). The directory is checked before
transformers sees it, because transformers only warns about missing or
mismatched tensors and would hand back random weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import types
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from yoc_assistant.backbone.core import Backbone
from yoc_assistant.errors import BackboneError, NotFoundError, UserInputError

PRECISIONS = ("fp32", "bf16", "int8", "nf4", "int8wo")  # int8wo: weight-only int8 (quantize.py)
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
VQ_PREFIX = "model.vqmodel."
DECODER_PREFIX = "model.vqmodel.decoder."
# Kept out of 8-bit/4-bit quantization: the head (concept rows are appended to it)
# and the VQ-VAE (pixels must match the reference closely).
SKIP_QUANT = ["lm_head", "vqmodel"]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# -- finding the checkpoint ---------------------------------------------------------
def hf_cache_dir() -> Path:
    """The HF hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


DEFAULT_CFG_SCALE = 3.0  # Anole's usual guidance


def _yoc_setting(folder: Path, key: str) -> Any:
    """A `yoc_*` key of the checkpoint's config.json (None if absent or unreadable)."""
    try:
        return config_json(folder).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def config_json(folder: Path) -> Any:
    """The checkpoint's config.json, parsed once per file version: the display name,
    validation, the guidance, the caption prompt and the training recipe all read it (an
    Anole config.json carries the whole vocabulary map). Raises OSError, ValueError."""
    file = folder / "config.json"
    stat = file.stat()
    return _parse_json(str(file), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _parse_json(file: str, _mtime_ns: int, _size: int) -> Any:
    data = json.loads(Path(file).read_text())
    return types.MappingProxyType(data) if isinstance(data, dict) else data  # shared: read-only


def _display_name(folder: Path) -> str:
    """`yoc_name` from config.json (the shipped toy model sets it), else the folder's name."""
    named = _yoc_setting(folder, "yoc_name")
    if isinstance(named, str) and named:
        return named
    return folder.name if folder.name != "checkpoint" else folder.parent.name


def recipe_of(folder: Path | None) -> dict[str, Any]:
    """The training options a checkpoint recommends for its concepts: `yoc_recipe` in its
    config.json (`yoc train`'s option names, e.g. {"steps": 1600, "lr": 0.001}), else {}.
    Every entry point trains with these unless the user says otherwise."""
    value = _yoc_setting(folder, "yoc_recipe") if folder is not None else None
    return dict(value) if isinstance(value, dict) else {}


def cfg_scale_of(folder: Path) -> float:
    """The guidance a checkpoint draws best with: `yoc_cfg_scale` in its config.json (the
    toy model, never trained without a prompt, draws far better unguided: 1.0), else 3.0."""
    value = _yoc_setting(folder, "yoc_cfg_scale")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_CFG_SCALE


def draw_candidates_of(folder: Path) -> int:
    """How many samples a checkpoint recommends drawing per picture for the concept's own
    check to choose from (config.json `yoc_draw_candidates`, `personalize.selfcheck`), else 1."""
    from yoc_assistant.settings import MAX_DRAW_CANDIDATES

    value = _yoc_setting(folder, "yoc_draw_candidates")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DRAW_CANDIDATES:
        return value
    return 1


def photo_witness_of(folder: Path) -> float:
    """How much a checkpoint weighs the photo witness of a yes/no about a photo
    (config.json `yoc_photo_witness`, `personalize.witness`; measured on the toy
    backbone), else 0: no witness."""
    value = _yoc_setting(folder, "yoc_photo_witness")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 10:
        return float(value)
    return 0.0


def description_veto_of(folder: Path) -> float | None:
    """How clearly a concept's own description must say No to veto a witnessed Yes
    (config.json `yoc_description_veto`: a Yes-over-No margin of at most minus this;
    `personalize.witness`; measured on the toy backbone), else None: no veto."""
    value = _yoc_setting(folder, "yoc_description_veto")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100:
        return float(value)
    return None


def caption_prompt_of(folder: Path) -> str | None:
    """The prompt a small checkpoint was taught to describe a photo with (config.json
    `yoc_caption_prompt`: the toy backbone's), else None: any wording works."""
    value = _yoc_setting(folder, "yoc_caption_prompt")
    return value if isinstance(value, str) and value.strip() else None


def resolve_source(source: str | os.PathLike[str]) -> tuple[Path, str]:
    """(checkpoint directory, display name) for a local path or a cached hub id."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{path} is a file; a backbone is a checkpoint directory")
        return path, _display_name(path)
    if not _HUB_ID.match(text):
        raise NotFoundError(f"no checkpoint directory {path}")
    return _from_hf_cache(text), text


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    try:
        found = snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True)
    except Exception as err:  # LocalEntryNotFoundError and friends: all mean "not here"
        raise NotFoundError(
            f"model {repo_id} is not in the local Hugging Face cache ({cache}); "
            f"download it once with `yoc pull {repo_id}`"
        ) from err
    return Path(found)


# -- reading the checkpoint's files ---------------------------------------------------
def weight_files(folder: Path) -> dict[str, Path]:
    """tensor name -> safetensors file holding it (single file or sharded index)."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise BackboneError(f"{index}: not a safetensors index ({err})") from err
        out = {name: folder / fname for name, fname in weight_map.items()}
        for file in sorted(set(out.values())):
            if not file.exists():
                raise BackboneError(f"{index} names {file.name}, which is missing from {folder}")
        return out
    single = folder / SINGLE_FILE
    if not single.exists():
        raise BackboneError(
            f"{folder} has no weights ({SINGLE_FILE} or {INDEX_FILE}); only safetensors checkpoints load"
        )
    return {name: single for name in _header(single)}


def _header(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, without reading the data (read once per
    file version: validating, loading and sizing a checkpoint all ask for it)."""
    try:
        stat = file.stat()
    except OSError as err:
        raise BackboneError(f"{file}: not a readable safetensors file ({err})") from err
    return dict(_read_header(str(file), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_header(file: str, _mtime_ns: int, _size: int) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as err:
        raise BackboneError(f"{file}: not a readable safetensors file ({err})") from err


def tensor_shapes(folder: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """tensor name -> (shape, file) for every tensor of the checkpoint."""
    files = weight_files(folder)
    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in sorted(set(files.values())):
        for name, shape in _header(file).items():
            out[name] = (shape, file)
    missing = sorted(set(files) - set(out))
    if missing:
        raise BackboneError(f"{missing[0]} is listed in {INDEX_FILE} but not in {files[missing[0]]}")
    return out


def read_tensors(folder: Path, prefix: str, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors whose name starts with `prefix` (only `names` under it, if given), prefix removed."""
    from safetensors import safe_open

    files = weight_files(folder)
    only = None if names is None else {prefix + n for n in names}
    wanted: dict[Path, list[str]] = {}
    for name, file in files.items():
        if name.startswith(prefix) and (only is None or name in only):
            wanted.setdefault(file, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for file, names in wanted.items():
        with safe_open(str(file), framework="pt") as fh:
            for name in names:
                out[name[len(prefix):]] = fh.get_tensor(name)
    return out


# -- validation -------------------------------------------------------------------------
def validate_checkpoint(folder: Path) -> tuple[Any, dict[str, tuple[tuple[int, ...], Path]]]:
    """Check files and tensor shapes against config.json; return (config, shapes)."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise BackboneError(f"{folder} is not a checkpoint: config.json is missing")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise BackboneError(f"{folder}: tokenizer files are missing (tokenizer.json)")
    config = _read_config(config_file)
    shapes = tensor_shapes(folder)
    expected, decoder = _expected_shapes(config)
    if any(k.startswith(DECODER_PREFIX) for k in shapes):
        expected.update(decoder)  # optional, but where present it must be whole and fit
    for name, shape in expected.items():
        if name not in shapes:
            raise BackboneError(f"{folder}: tensor {name} is missing from the weights")
        got, file = shapes[name]
        if got != shape:
            raise BackboneError(
                f"{file}: tensor {name} has shape {list(got)}, config.json expects {list(shape)}"
            )
    return config, shapes


def _read_config(config_file: Path) -> Any:
    from transformers import ChameleonConfig

    try:
        raw = config_json(config_file.parent)
    except ValueError as err:
        raise BackboneError(f"{config_file}: not valid JSON ({err})") from err
    if raw.get("model_type") != "chameleon":
        raise BackboneError(
            f"{config_file}: model_type is {raw.get('model_type')!r}; yoc needs a Chameleon/Anole checkpoint"
        )
    try:
        return ChameleonConfig.from_pretrained(str(config_file.parent))
    except Exception as err:
        raise BackboneError(f"{config_file}: cannot be read as a ChameleonConfig ({err})") from err


def _expected_shapes(config: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Shapes of every persistent tensor the model defines (built on the meta device)."""
    from transformers import ChameleonForConditionalGeneration

    from yoc_assistant.backbone.vqgan import VQDecoder

    with torch.device("meta"), _quiet():
        model = ChameleonForConditionalGeneration(config)
        decoder = VQDecoder(config.vq_config)
    out = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dec = {DECODER_PREFIX + k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    return out, dec


# -- loading ------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet(progress: bool = False) -> Iterator[None]:
    """Silence transformers' load report (it lists our decoder tensors as unexpected)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def pick_device(device: str | torch.device) -> torch.device:
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise BackboneError(f"device {text} was asked for but no CUDA GPU is available; use the cpu")
    if not (text == "cpu" or text.startswith("cuda")):
        raise UserInputError(f"unknown device {text!r}: use cpu, cuda or auto")
    return torch.device(text)


def auto_precision(precision: str, device: str | torch.device) -> str:
    """`auto`: bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    if precision != "auto":
        return precision
    return "bf16" if pick_device(device).type == "cuda" else "fp32"


def _quantization(precision: str, device: torch.device) -> Any:
    if precision not in ("int8", "nf4"):
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as err:  # ImportError, or a broken native library
        raise BackboneError(
            f"precision {precision} needs bitsandbytes, which cannot be imported here ({err}); "
            "install it (pip install bitsandbytes) or use --precision bf16"
        ) from err
    if precision == "int8":
        # bitsandbytes casts bf16 inputs to fp16 for its int8 matmul and warns on every call.
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_QUANT)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True, llm_int8_skip_modules=SKIP_QUANT,
    )


def _load_model(folder: Path, config: Any, precision: str, device: torch.device) -> Any:
    from transformers import ChameleonForConditionalGeneration

    from yoc_assistant.backbone.quantize import (
        WEIGHT_ONLY_PRECISIONS,
        compute_dtype,
        quantize_weight_only,
    )

    dtype = compute_dtype(precision, device)
    # use_safetensors: never fall back to pickled weights, even if a folder has both.
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": str(device)}, "use_safetensors": True,
                              "local_files_only": True}
    quant = _quantization(precision, device)
    if quant is not None:
        kwargs["quantization_config"] = quant
    big = sum(f.stat().st_size for f in set(weight_files(folder).values())) > 1 << 30
    try:
        with _quiet(progress=big):  # a progress bar only where loading takes a while
            model = ChameleonForConditionalGeneration.from_pretrained(str(folder), config=config, **kwargs)
    except BackboneError:
        raise
    except Exception as err:
        raise BackboneError(f"{folder}: loading at precision {precision} on {device} failed: {err}") from err
    # The VQ-VAE runs in float32 whatever the precision: reload its exact weights.
    vq = model.model.vqmodel
    vq.to(dtype=torch.float32)
    own = list(vq.state_dict())
    upstream = read_tensors(folder, VQ_PREFIX, own)  # not the decoder: vqgan.py reads that lazily
    vq.load_state_dict({k: upstream[k].float() for k in own}, strict=True)
    model.eval()
    model.requires_grad_(False)
    if precision in WEIGHT_ONLY_PRECISIONS:
        quantize_weight_only(model)
    return model


def fingerprint(vocab: dict[str, int], hidden_size: int, vocab_size: int) -> str:
    """Stable digest of the vocabulary and sizes: concept files check it."""
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: (kv[1], kv[0])):
        digest.update(f"{idx}\t{token}\n".encode())
    digest.update(f"hidden={hidden_size};vocab={vocab_size}".encode())
    return digest.hexdigest()


def fingerprint_of(source: str | os.PathLike[str]) -> str:
    """The fingerprint `load_backbone(source)` would give, reading only the tokenizer and headers."""
    folder, _name = resolve_source(source)
    config = _read_config(folder / "config.json")
    tokenizer, _ = _load_processing(folder, image_processor=False)
    head = tensor_shapes(folder).get("lm_head.weight")
    if head is None:
        raise BackboneError(f"{folder}: tensor lm_head.weight is missing from the weights")
    return fingerprint(tokenizer.get_vocab(), int(config.hidden_size), int(head[0][0]))


def _image_seq_length(folder: Path, vq_config: Any) -> int:
    grid = int(vq_config.resolution) // 2 ** (len(vq_config.channel_multiplier) - 1)
    proc = folder / "processor_config.json"
    if proc.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            n = int(json.loads(proc.read_text())["image_seq_length"])
            if n != grid * grid:
                raise BackboneError(
                    f"{proc}: image_seq_length {n} does not match vq_config ({grid}x{grid} = {grid * grid})"
                )
    return grid * grid


def load_backbone(source: str | os.PathLike[str], precision: str = "bf16",
                  device: str | torch.device = "auto") -> Backbone:
    """Load a local HF directory or a cached hub id as a frozen Backbone."""
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    folder, name = resolve_source(source)
    dev = pick_device(device)
    config, shapes = validate_checkpoint(folder)
    model = _load_model(folder, config, precision, dev)
    tokenizer, image_processor = _load_processing(folder)
    return _assemble(model, tokenizer, image_processor, folder, name, str(source), precision, dev, shapes)


def _load_processing(folder: Path, image_processor: bool = True) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:
        raise BackboneError(f"{folder}: the tokenizer cannot be loaded ({err})") from err
    processor = None
    if image_processor and (folder / "preprocessor_config.json").exists():
        try:
            with _quiet():
                processor = AutoImageProcessor.from_pretrained(str(folder))
        except Exception as err:
            raise BackboneError(f"{folder}/preprocessor_config.json cannot be loaded ({err})") from err
    return tokenizer, processor


def _assemble(model: Any, tokenizer: Any, image_processor: Any, folder: Path, name: str, source: str,
              precision: str, device: torch.device, shapes: dict[str, Any]) -> Backbone:
    from yoc_assistant.backbone.quantize import compute_dtype
    from yoc_assistant.backbone.vocab import ImageVocab, special_tokens

    config = model.config
    vocab = tokenizer.get_vocab()
    vocab_size = int(model.lm_head.weight.shape[0])  # the head is never quantized
    hidden_size = int(config.hidden_size)
    bb = Backbone(model=model, tokenizer=tokenizer, image_processor=image_processor,
                  special=special_tokens(tokenizer, vocab), image_vocab=ImageVocab(vocab, vocab_size),
                  vocab_size=vocab_size, hidden_size=hidden_size,
                  image_seq_length=_image_seq_length(folder, config.vq_config),
                  image_size=int(config.vq_config.resolution), source=source, name=name,
                  precision=precision, device=device, dtype=compute_dtype(precision, device),
                  fingerprint=fingerprint(vocab, hidden_size, vocab_size),
                  has_decoder=any(k.startswith(DECODER_PREFIX) for k in shapes),
                  checkpoint_dir=folder, cfg_scale=cfg_scale_of(folder),
                  caption_prompt=caption_prompt_of(folder))
    max_id = max(vocab.values())
    if max_id >= vocab_size:
        raise BackboneError(f"{folder}: the tokenizer has id {max_id} but the model has only {vocab_size} rows")
    return bb
