"""Multiply-accumulates from PyTorch's flop counter, CPU and MPS attention kernels included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def _attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any,
                     out_shape: Any = None, **__: Any) -> int:
    """FLOPs of q @ k^T and attn @ v (2 per multiply-add), as torch counts its CUDA kernels."""
    *batch, heads, q_len, dim = query_shape
    k_len, v_dim = key_shape[-2], value_shape[-1]
    n = heads
    for b in batch:
        n *= b
    return 2 * n * q_len * k_len * (dim + v_dim)


def flop_counter() -> Any:
    """A FlopCounterMode that also counts the CPU and MPS attention kernels.

    PyTorch has formulas for its CUDA attention kernels only; without these, ViT and Swin
    lose their attention MACs on the CPU (16.85 instead of 17.6 GMACs for vit_base_patch16_224).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_attention_math_for_mps",
             "_scaled_dot_product_fused_attention_overrideable")
    mapping = {getattr(aten, n): _attention_flops for n in names if hasattr(aten, n)}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, from PyTorch's flop counter.

    FlopCounterMode counts 2 FLOPs per multiply-add of matmuls, convolutions and attention, the
    convention behind timm's published GMACs, so MACs = FLOPs / 2. Works on the meta device.
    """
    import torch

    counter = flop_counter()
    with counter, torch.no_grad():
        model(inputs)
    return int(counter.get_total_flops()) // 2
