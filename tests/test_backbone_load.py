"""Loading checkpoints: fixture and tiny ones, precisions, validation errors, the HF cache."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from yoc_assistant.backbone import Backbone
from yoc_assistant.backbone.loading import load_backbone
from yoc_assistant.backbone.tiny import write_tiny_checkpoint
from yoc_assistant.errors import BackboneError, NotFoundError, UserInputError

FIXTURE = Path(__file__).parent / "data" / "tiny-anole-a" / "checkpoint"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=3)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_fixture_loads_with_attributes(precision: str, dtype: torch.dtype) -> None:
    bb = Backbone.load(str(FIXTURE), precision=precision, device="cpu")
    config = json.loads((FIXTURE / "config.json").read_text())
    assert bb.vocab_size == config["vocab_size"] == bb.model.lm_head.weight.shape[0]
    assert bb.hidden_size == config["hidden_size"]
    assert bb.image_seq_length == 144 and bb.image_size == 96
    assert bb.precision == precision and bb.dtype == dtype and bb.device == torch.device("cpu")
    assert bb.model.lm_head.weight.dtype == dtype
    # the VQ-VAE stays float32 and holds the checkpoint's exact values
    stored = load_file(str(FIXTURE / "model.safetensors"))
    enc = bb.model.model.vqmodel.encoder.conv_in.weight
    assert enc.dtype == torch.float32
    assert torch.equal(enc, stored["model.vqmodel.encoder.conv_in.weight"])
    assert bb.has_decoder is True
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert bb.image_processor is not None
    assert bb.name == "tiny-anole-a" and bb.source == str(FIXTURE)


def test_fingerprint_stable_and_distinct(tiny_dir: Path) -> None:
    a = load_backbone(FIXTURE, precision="fp32", device="cpu")
    b = load_backbone(FIXTURE, precision="bf16", device="cpu")
    c = load_backbone(tiny_dir, precision="fp32", device="cpu")
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64 and a.fingerprint != c.fingerprint


@pytest.mark.parametrize("precision,layer_cls", [("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_quantized_on_cpu(tiny_dir: Path, precision: str, layer_cls: str) -> None:
    bb = load_backbone(tiny_dir, precision=precision, device="cpu")
    model = bb.model
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer_cls
    assert type(model.lm_head) is torch.nn.Linear  # the head stays unquantized
    conv = model.model.vqmodel.encoder.conv_in
    assert type(conv) is torch.nn.Conv2d and conv.weight.dtype == torch.float32
    ids = torch.tensor([[bb.special.bos, *bb.tokenizer("hi there", add_special_tokens=False)["input_ids"]]])
    hidden = model.model(input_ids=ids).last_hidden_state
    logits = model.lm_head(hidden.to(model.lm_head.weight.dtype))
    assert logits.shape == (1, ids.shape[1], bb.vocab_size)
    assert torch.isfinite(logits.float()).all()


def test_missing_bitsandbytes_is_clear(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails
    with pytest.raises(BackboneError, match="bitsandbytes"):
        load_backbone(tiny_dir, precision="int8", device="cpu")


def test_bad_precision_and_device(tiny_dir: Path) -> None:
    with pytest.raises(UserInputError, match="precision"):
        load_backbone(tiny_dir, precision="fp8", device="cpu")
    with pytest.raises(UserInputError, match="device"):
        load_backbone(tiny_dir, precision="fp32", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match="cuda"):
            load_backbone(tiny_dir, precision="fp32", device="cuda")


@pytest.mark.parametrize("missing,message", [
    ("config.json", "config.json"),
    ("tokenizer.json", "tokenizer"),
    ("model.safetensors", "model.safetensors"),
])
def test_missing_files(tiny_dir: Path, tmp_path: Path, missing: str, message: str) -> None:
    ckpt = _copy(tiny_dir, tmp_path / "ckpt")
    (ckpt / missing).unlink()
    with pytest.raises(BackboneError, match=message):
        load_backbone(ckpt, precision="fp32", device="cpu")


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_backbone(tmp_path / "nope", device="cpu")


@pytest.mark.parametrize("tensor", [
    "model.layers.0.self_attn.q_proj.weight",
    "model.vqmodel.decoder.conv_out.weight",
])
def test_mismatched_shape_names_file_and_tensor(tiny_dir: Path, tmp_path: Path, tensor: str) -> None:
    ckpt = _copy(tiny_dir, tmp_path / "ckpt")
    weights = load_file(str(ckpt / "model.safetensors"))
    shape = list(weights[tensor].shape)
    shape[0] += 1
    weights[tensor] = torch.zeros(shape)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackboneError) as err:
        load_backbone(ckpt, precision="fp32", device="cpu")
    assert tensor in str(err.value) and "model.safetensors" in str(err.value)


def test_missing_tensor_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path / "ckpt")
    weights = load_file(str(ckpt / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackboneError, match="lm_head.weight"):
        load_backbone(ckpt, precision="fp32", device="cpu")


def test_sharded_checkpoint_loads(tiny_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(tiny_dir, tmp_path / "ckpt")
    weights = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(ckpt / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    bb = load_backbone(ckpt, precision="fp32", device="cpu")
    assert bb.has_decoder
    assert torch.equal(bb.model.lm_head.weight, weights["lm_head.weight"])
    # a shard named in the index but absent is reported by name
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(BackboneError, match="model-00002-of-00002"):
        load_backbone(ckpt, precision="fp32", device="cpu")


def test_hub_id_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(NotFoundError, match="yoc pull someone/some-model"):
        load_backbone("someone/some-model", device="cpu")


def test_hub_id_from_local_cache(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hf" / "hub" / "models--someone--tiny-anole"
    _copy(tiny_dir, hub / "snapshots" / "0123abcd")
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    bb = load_backbone("someone/tiny-anole", precision="fp32", device="cpu")
    assert bb.name == "someone/tiny-anole"
    assert bb.checkpoint_dir == hub / "snapshots" / "0123abcd"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_quantized_on_cuda(tiny_dir: Path, precision: str) -> None:
    bb = load_backbone(tiny_dir, precision=precision, device="cuda")
    assert bb.device.type == "cuda" and type(bb.model.lm_head) is torch.nn.Linear
    ids = torch.tensor([[bb.special.bos, *bb.tokenize("hi")]], device="cuda")
    hidden = bb.model.model(input_ids=ids).last_hidden_state
    assert torch.isfinite(bb.model.lm_head(hidden.to(bb.model.lm_head.weight.dtype)).float()).all()


def test_display_name_comes_from_yoc_name_in_config(tmp_path) -> None:
    import json

    from yoc_assistant.backbone.loading import resolve_source
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "weights", hidden_size=32, intermediate_size=64,
                                   num_layers=1)
    assert resolve_source(folder)[1] == "weights"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "yoc_name": "yoc-toy"}))
    assert resolve_source(folder)[1] == "yoc-toy"


def test_default_guidance_comes_from_yoc_cfg_scale_in_config(tmp_path) -> None:
    import json

    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "weights", hidden_size=32, intermediate_size=64,
                                   num_layers=1)
    assert Backbone.load(str(folder), precision="fp32", device="cpu").cfg_scale == 3.0
    config = json.loads((folder / "config.json").read_text())
    for value, expected in ((1.0, 1.0), (0, 3.0), ("high", 3.0)):
        (folder / "config.json").write_text(json.dumps({**config, "yoc_cfg_scale": value}))
        bb = Backbone.load(str(folder), precision="fp32", device="cpu")
        assert bb.cfg_scale == expected
    # None asks for the checkpoint's own guidance (a random tiny model needs a strong one
    # for the pictures to differ at all)
    prompt = bb.prompt_ids(["a b c d"])
    pictures = {scale: bb.generate_images(prompt, n=1, seed=3, decode=False, cfg_scale=scale).ids
                for scale in (1.0, 80.0)}
    assert not torch.equal(pictures[1.0], pictures[80.0])
    for scale, expected in pictures.items():
        bb.cfg_scale = scale
        assert torch.equal(bb.generate_images(prompt, n=1, seed=3, decode=False).ids, expected)


def test_a_checkpoint_header_is_read_once_per_file_version(tmp_path: Path) -> None:
    """Validating, loading, sizing and fingerprinting a checkpoint share one header read;
    a rewritten file is read again."""
    import os

    from yoc_assistant.backbone import loading
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "ckpt")
    loading._read_header.cache_clear()
    Backbone.load(str(folder), precision="fp32", device="cpu")
    loading.tensor_shapes(folder)
    loading.fingerprint_of(str(folder))
    files = len(set(loading.weight_files(folder).values()))
    assert loading._read_header.cache_info().misses == files
    weights = next(iter(set(loading.weight_files(folder).values())))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    loading.tensor_shapes(folder)
    assert loading._read_header.cache_info().misses == files + 1


def test_config_json_is_parsed_once_per_file_version(tmp_path: Path) -> None:
    """Loading (name, validation, guidance, caption prompt) and the training recipe share
    one parse of config.json; a rewritten file is parsed again."""
    import json

    from yoc_assistant.backbone import loading
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "ckpt")
    loading._parse_json.cache_clear()
    bb = Backbone.load(str(folder), precision="fp32", device="cpu")
    assert loading.recipe_of(bb.checkpoint_dir) == {}
    assert loading._parse_json.cache_info().misses == 1
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "yoc_recipe": {"steps": 7}}))
    assert loading.recipe_of(folder) == {"steps": 7}
    assert loading._parse_json.cache_info().misses == 2
