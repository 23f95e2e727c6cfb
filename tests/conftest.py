"""Test setup shared by the whole suite.

HF_HUB_OFFLINE must be set before anything imports huggingface_hub, so it is set
here at import time. Every test gets its own YOC_HOME (the library folder).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run faster on one thread, and results do not depend on the core count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"
TINY_ANOLE_A = DATA / "tiny-anole-a"


@pytest.fixture(scope="module")
def bb():
    """The tiny Anole-format fixture checkpoint, fp32 on the CPU (one per test module)."""
    from yoc_assistant import Backbone

    return Backbone.load(str(TINY_ANOLE_A / "checkpoint"), precision="fp32", device="cpu")


def small_random_backbone(folder: Path, seed: int):
    """A 1-layer, hidden-32 random checkpoint with a byte-level tokenizer (any text spells
    out, so e.g. "Yes" and "No" differ), written to `folder` and loaded fp32 on the CPU."""
    from yoc_assistant import Backbone
    from yoc_assistant.backbone.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(folder, hidden_size=32, intermediate_size=64, num_layers=1, seed=seed)
    return Backbone.load(str(folder), precision="fp32", device="cpu")


@pytest.fixture(autouse=True)
def yoc_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("yoc-home")
    monkeypatch.setenv("YOC_HOME", str(home))
    monkeypatch.setenv("YOC_PICTURES", str(home / "pictures"))
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
