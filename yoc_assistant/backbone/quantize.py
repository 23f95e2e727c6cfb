"""Weight-only int8 (`--precision int8wo`): the fast 8-bit path for drawing and answering.

bitsandbytes' LLM.int8 (`int8`) saves memory for training but decodes ~11x slower per
layer than bf16 (the anchor's figures in docs/performance.md): its matmul splits
outliers and converts activations on every call. Decoding at batch 2 is bound by weight
reads, so the fast 8-bit path keeps int8 weights with one float scale per output row
and multiplies against them directly: torchao's int8 weight-only tensors
(`Int8WeightOnlyConfig`), which torch.compile (the image step's compile on CUDA) turns
into a kernel that reads the int8 weights and dequantizes in registers, never writing a
bf16 copy. Activations stay in the compute dtype (bf16 on a GPU, float32 on the CPU).

Only the decoder layers' Linears are quantized. The head stays float, so the image loop
keeps multiplying only the image-token rows (a view of the head); embeddings, norms
and the VQ model are untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from yoc_assistant.errors import BackboneError

WEIGHT_ONLY_PRECISIONS = ("int8wo",)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The activations' dtype: float32 for fp32 (and int8wo on the CPU, where bf16 matmuls
    are slow), else bf16."""
    if precision == "fp32" or (precision in WEIGHT_ONLY_PRECISIONS and device.type == "cpu"):
        return torch.float32
    return torch.bfloat16


class _QuietPytree(logging.Filter):
    # torchao registers enums with torch's pytree and torch logs a deprecation line per
    # enum (noise to a user, and nothing they can act on).
    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass" not in record.getMessage()


def quiet_torchao_log() -> None:
    """Installed when the backbone package is imported: transformers imports torchao on its
    own (when installed) before any int8wo load."""
    logger = logging.getLogger("torch.utils._pytree")
    if not any(isinstance(f, _QuietPytree) for f in logger.filters):
        logger.addFilter(_QuietPytree())


def _torchao() -> Any:
    quiet_torchao_log()
    try:
        import torchao.quantization as quantization
    except Exception as err:  # ImportError, or a broken install
        raise BackboneError(
            f"precision int8wo needs torchao, which cannot be imported here ({err}); "
            "install it (pip install torchao) or use --precision bf16"
        ) from err
    return quantization


def quantize_weight_only(model: Any) -> int:
    """Turn every Linear of the decoder layers into int8 weight-only, in place; returns how
    many. The float weights are replaced (not kept beside the int8 ones)."""
    quantization = _torchao()
    layers = model.model.layers
    count = sum(1 for m in layers.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        quantization.quantize_(layers, quantization.Int8WeightOnlyConfig(),
                               filter_fn=lambda m, _name: isinstance(m, torch.nn.Linear))
    return count


def is_weight_only_int8(weight: torch.Tensor) -> bool:
    """True for a torchao int8 weight-only tensor (its data is int8)."""
    data = getattr(weight, "qdata", None)
    return isinstance(data, torch.Tensor) and data.dtype == torch.int8
