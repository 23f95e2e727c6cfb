"""Retrieval: CLIP resolution (local only), the embedding cache, and the pool ranking."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoc_assistant.personalize import retrieval
from yoc_assistant.personalize.retrieval import (
    ClipSpec,
    ClipUnavailable,
    clip_available,
    load_clip,
    rank_pool,
    retrieve,
    split_sizes,
)
from yoc_assistant.personalize.tensorcache import MemoryIndex, TensorCache
from yoc_assistant.personalize.tinyclip import write_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=0)


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir: Path) -> retrieval.ClipModel:
    return load_clip(ClipSpec(str(tiny_clip_dir)))


def _image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 255, (size, size + 7, 3), dtype=np.uint8))


# --- ranking on synthetic embeddings ------------------------------------------------


def _synthetic(n_pool: int, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Concept photos along e0; pool row i has a known, distinct cosine to e0."""
    gen = torch.Generator().manual_seed(seed)
    concept = torch.zeros(3, dim)
    concept[:, 0] = 1.0
    concept[:, 1] = torch.tensor([0.1, -0.1, 0.0])  # mean stays along e0
    cosines = torch.linspace(-0.95, 0.95, n_pool)[torch.randperm(n_pool, generator=gen)]
    pool = torch.zeros(n_pool, dim)
    pool[:, 0] = cosines
    pool[:, 2] = (1 - cosines**2).sqrt()
    return concept, pool * 3.0, cosines.tolist()  # scaled: ranking must normalize


def test_rank_pool_orders_by_similarity_and_splits_bands() -> None:
    concept, pool, cos = _synthetic(60)
    keys = [f"k{i}" for i in range(60)]
    r = rank_pool(concept, pool, keys, n_soft=20, n_hard=10, n_easy=10, seed=3)
    by_sim = [keys[i] for i in sorted(range(60), key=lambda i: -cos[i])]
    assert r.soft_positives == by_sim[:20]  # most similar first
    assert r.hard_negatives == by_sim[20:30]  # the next band
    assert len(r.easy_negatives) == 10 and set(r.easy_negatives) <= set(by_sim[30:])
    assert r.scores["k0"] == pytest.approx(cos[0], abs=1e-5)
    assert r.notes == []
    # seeded: same seed, same easy negatives; another seed, (almost surely) others
    again = rank_pool(concept, pool, keys, n_soft=20, n_hard=10, n_easy=10, seed=3)
    other = rank_pool(concept, pool, keys, n_soft=20, n_hard=10, n_easy=10, seed=4)
    assert again.easy_negatives == r.easy_negatives
    assert other.easy_negatives != r.easy_negatives


def test_rank_pool_hard_from_top_and_exclude() -> None:
    concept, pool, cos = _synthetic(40)
    keys = [f"k{i}" for i in range(40)]
    by_sim = [keys[i] for i in sorted(range(40), key=lambda i: -cos[i])]
    r = rank_pool(concept, pool, keys, n_soft=10, n_hard=5, n_easy=5, hard_negatives="top",
                  exclude=[by_sim[0]])
    assert by_sim[0] not in r.soft_positives + r.hard_negatives + r.easy_negatives
    assert r.hard_negatives == by_sim[1:6]
    assert r.soft_positives == by_sim[6:16]


def test_split_sizes_paper_defaults_and_small_pools() -> None:
    assert split_sizes(10_000) == (1000, 100, 100)
    assert split_sizes(1200) == (1000, 100, 100)
    assert split_sizes(120) == (80, 20, 20)
    assert split_sizes(20) == (14, 3, 3)
    assert split_sizes(3) == (1, 1, 1)
    assert split_sizes(1) == (1, 0, 0) and split_sizes(0) == (0, 0, 0)
    assert split_sizes(600, n_soft=1000, n_hard=0, n_easy=100) == (500, 0, 100)


def test_small_pool_gets_a_note() -> None:
    concept, pool, _ = _synthetic(12)
    r = rank_pool(concept, pool)
    assert len(r.soft_positives) + len(r.hard_negatives) + len(r.easy_negatives) <= 12
    assert r.hard_negatives and r.easy_negatives
    assert any("small pool" in n for n in r.notes)


def test_no_pool_means_photos_alone_with_a_note() -> None:
    r = rank_pool(torch.randn(3, 8), torch.zeros(0, 8))
    assert (r.soft_positives, r.hard_negatives, r.easy_negatives) == ([], [], [])
    assert "no pool" in r.notes[0]
    r2 = retrieve(MemoryIndex(), ["a" * 64], [], load_image=lambda s: _image(0))
    assert "no pool" in r2.notes[0] and "yoc pool add" in r2.notes[0]


# --- which CLIP: never downloaded -------------------------------------------------


def test_missing_clip_weights_give_a_clear_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    spec = ClipSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert not clip_available(spec)
    with pytest.raises(ClipUnavailable, match="yoc pull"):
        load_clip(spec)
    r = retrieve(MemoryIndex(), ["a" * 64], ["b" * 64], load_image=lambda s: _image(0), spec=spec)
    assert r.soft_positives == [] and r.notes[0].startswith("retrieval skipped")
    assert "not in the local HF cache" in r.notes[0]


def test_a_tag_resolves_to_the_local_hf_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf"
    repo = cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    spec = ClipSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert not clip_available(spec)  # only a pickled file would do: refused
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"pickle")
    assert not clip_available(spec)
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    found = retrieval.resolve(spec)
    assert found.weights_file == snap / "open_clip_model.safetensors"
    assert found.preprocess["interpolation"] == "bicubic" and not found.quick_gelu


def test_damaged_clip_weights_are_a_note(tiny_clip_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(tiny_clip_dir, tmp_path / "broken"))
    (broken / "open_clip_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ClipUnavailable, match="could not be loaded") as err:
        load_clip(ClipSpec(str(broken)))
    assert "open_clip_model.safetensors" in str(err.value)
    r = retrieve(MemoryIndex(), ["a" * 64], ["b" * 64], load_image=lambda s: _image(0),
                 spec=ClipSpec(str(broken)))
    assert r.notes[0].startswith("retrieval skipped") and r.soft_positives == []


def test_bad_clip_specs_are_named(tmp_path: Path) -> None:
    pickled = tmp_path / "weights.bin"
    pickled.write_bytes(b"not really")
    with pytest.raises(ClipUnavailable, match="not a .safetensors"):
        retrieval.resolve(ClipSpec("ViT-B-32", str(pickled)))
    with pytest.raises(ClipUnavailable, match="unknown CLIP model"):
        retrieval.resolve(ClipSpec("no-such-model", "x"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ClipUnavailable, match="open_clip_config.json"):
        retrieval.resolve(ClipSpec(str(tmp_path / "folder")))


def test_clip_spec_from_environment(tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOC_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.delenv("YOC_CLIP_WEIGHTS", raising=False)
    assert retrieval.default_spec() == ClipSpec(str(tiny_clip_dir), None)
    assert clip_available()
    monkeypatch.setenv("YOC_CLIP_MODEL", "ViT-B-32")
    monkeypatch.setenv("YOC_CLIP_WEIGHTS", "/some/file.safetensors")
    assert retrieval.default_spec() == ClipSpec("ViT-B-32", "/some/file.safetensors")


def test_tiny_clip_loads_from_a_local_file_and_embeds(tiny_clip: retrieval.ClipModel) -> None:
    images = [_image(i) for i in range(3)]
    embs = tiny_clip.embed_images(images)
    assert embs.shape == (3, 32) and embs.dtype == torch.float32
    assert torch.allclose(embs.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(embs[0], embs[1])
    assert torch.equal(embs, tiny_clip.embed_images(images))  # deterministic
    texts = tiny_clip.embed_texts(["a dog", "a mug"])
    assert texts.shape == (2, 32)
    # the loaded weights are the file's, not a fresh random init
    from safetensors.torch import load_file

    saved = load_file(str(Path(tiny_clip.spec.model_name) / "open_clip_model.safetensors"))
    assert torch.equal(tiny_clip.model.state_dict()["visual.proj"], saved["visual.proj"])


# --- the embedding cache ------------------------------------------------------------


def test_tensor_cache_round_trip_and_damaged_shard(tmp_path: Path) -> None:
    index = MemoryIndex()
    cache = TensorCache(index, "clip", "model-a", root=tmp_path)
    cache.put_many({"a": torch.ones(4), "b": torch.zeros(4)})
    got = cache.get_many(["a", "b", "c"])
    assert set(got) == {"a", "b"} and torch.equal(got["a"], torch.ones(4))
    assert TensorCache(index, "clip", "model-b", root=tmp_path).get_many(["a"]) == {}
    shard = Path(index.cache_get("clip", "a", "model-a"))
    shard.write_bytes(b"garbage")  # a damaged shard is a miss, not a crash
    calls: list[list[str]] = []
    out = cache.get_or_compute(["a", "b"], lambda ks: calls.append(ks) or {k: torch.full((4,), 7.0) for k in ks})
    assert calls == [["a", "b"]] and torch.equal(out["a"], torch.full((4,), 7.0))


def _library_with_pool(tmp_path: Path, n_pool: int, n_photos: int = 3):
    from yoc_assistant.library import Library

    lib = Library.open()
    photo_dir, pool_dir = tmp_path / "photos", tmp_path / "pool"
    photo_dir.mkdir()
    pool_dir.mkdir()
    for i in range(n_photos):
        _image(1000 + i).save(photo_dir / f"p{i}.png")
    for i in range(n_pool):
        _image(i).save(pool_dir / f"q{i}.png")
    lib.create_concept("bo")
    lib.add_images("bo", sorted(photo_dir.iterdir()))
    lib.add_pool_images(sorted(pool_dir.iterdir()))
    return lib, pool_dir


def test_second_ranking_embeds_nothing(tmp_path: Path, tiny_clip: retrieval.ClipModel) -> None:
    lib, pool_dir = _library_with_pool(tmp_path, n_pool=24)
    photos = [r.sha256 for r in lib.concept_images("bo", "positive")]
    pool = [r.sha256 for r in lib.pool_images()]
    start = tiny_clip.images_embedded
    first = retrieve(lib, photos, pool, clip=tiny_clip, n_soft=10, n_hard=4, n_easy=4)
    assert tiny_clip.images_embedded - start == 24 + 3
    assert len(first.soft_positives) == 10 and len(first.hard_negatives) == 4

    start = tiny_clip.images_embedded
    second = retrieve(lib, photos, pool, clip=tiny_clip, n_soft=10, n_hard=4, n_easy=4)
    assert tiny_clip.images_embedded == start  # zero re-embeds
    assert second.soft_positives == first.soft_positives
    assert second.hard_negatives == first.hard_negatives

    # a reopened library (a new process) still hits the cache
    from yoc_assistant.library import Library

    lib2 = Library.open()
    retrieve(lib2, photos, pool, clip=tiny_clip, n_soft=10, n_hard=4, n_easy=4)
    assert tiny_clip.images_embedded == start

    # one new pool image: exactly one embedding
    _image(5000).save(pool_dir / "new.png")
    lib2.add_pool_images([pool_dir / "new.png"])
    pool2 = [r.sha256 for r in lib2.pool_images()]
    retrieve(lib2, photos, pool2, clip=tiny_clip, n_soft=10, n_hard=4, n_easy=4)
    assert tiny_clip.images_embedded == start + 1


def test_cached_embeddings_match_fresh_ones(tmp_path: Path, tiny_clip: retrieval.ClipModel) -> None:
    lib, _ = _library_with_pool(tmp_path, n_pool=5)
    pool = [r.sha256 for r in lib.pool_images()]
    load = retrieval.library_loader(lib)
    cached = retrieval.embed_cached(tiny_clip, lib, pool, load)
    again = retrieval.embed_cached(tiny_clip, lib, list(reversed(pool)), load)
    fresh = tiny_clip.embed_images([load(s) for s in pool])
    assert torch.allclose(cached, fresh, atol=1e-6)
    assert torch.equal(again, cached.flip(0))


def test_ranking_large_synthetic_pool_is_fast() -> None:
    rng = random.Random(0)
    pool = torch.randn(10_000, 64)
    concept = pool[rng.randrange(10_000)].unsqueeze(0) + 0.01 * torch.randn(3, 64)
    r = rank_pool(concept, pool)
    assert (len(r.soft_positives), len(r.hard_negatives), len(r.easy_negatives)) == (1000, 100, 100)
    assert len(set(r.soft_positives) | set(r.hard_negatives) | set(r.easy_negatives)) == 1200


def test_rank_pool_shared_top_hard_negatives_stay_soft_positives() -> None:
    concept, pool, cos = _synthetic(40)
    keys = [f"k{i}" for i in range(40)]
    by_sim = [keys[i] for i in sorted(range(40), key=lambda i: -cos[i])]
    r = rank_pool(concept, pool, keys, n_soft=10, n_hard=5, n_easy=5, hard_negatives="shared-top")
    assert r.hard_negatives == by_sim[:5]  # the most similar are the hard "No"s...
    assert r.soft_positives == by_sim[:10]  # ...and still teach generation
    assert set(r.easy_negatives) <= set(by_sim[10:]) and len(r.easy_negatives) == 5
    # a bad mode is refused
    with pytest.raises(ValueError, match="hard negatives must be one of"):
        rank_pool(concept, pool, keys, n_soft=10, n_hard=5, n_easy=5, hard_negatives="bottom")
