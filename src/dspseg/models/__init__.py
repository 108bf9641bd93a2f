"""Models: the U-Net backbone, the heads, and one factory.

    >>> import torch
    >>> model = build_model(in_channels=1, n_classes=4, width=16, head="prototype", tau=0.05)
    >>> model(torch.zeros(1, 1, 40, 56))["logits"].shape
    torch.Size([1, 4, 40, 56])

Heads are looked up in :data:`HEADS` (a plain dict: a new head is one class and one line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dspseg.models.heads import LinearHead, PrototypeHead, SegmentationModel
from dspseg.models.unet import UNet

HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "prototype": PrototypeHead}

__all__ = ["HEADS", "LinearHead", "PrototypeHead", "SegmentationModel", "UNet", "build_model"]


def build_model(
    in_channels: int,
    n_classes: int,
    width: int = 64,
    head: str = "linear",
    levels: int = 5,
    aux_heads: dict[str, nn.Module] | Callable[[int], dict[str, nn.Module]] | None = None,
    **head_kwargs: Any,
) -> SegmentationModel:
    """U-Net (``in_channels``, ``width``, ``levels``) + the head named ``head`` with ``n_classes``.

    ``head_kwargs`` go to the head (prototype head: ``n_prototypes``, ``embed_dim``, ``tau``).
    ``aux_heads``: auxiliary training-only heads (:class:`SegmentationModel`), as a dict or as a
    callable taking the backbone's feature channels F (e.g. ``method.aux_heads``). They are built
    after the backbone and the head, so the main model's initialisation does not depend on them.
    """
    if head not in HEADS:
        raise ValueError(f"build_model: unknown head {head!r}; choose one of {sorted(HEADS)}")
    backbone = UNet(in_channels=in_channels, width=width, levels=levels)
    try:
        head_module = HEADS[head](backbone.out_channels, n_classes, **head_kwargs)
    except TypeError as err:  # an option the head does not take
        raise ValueError(f"build_model: bad option for head {head!r}: {err}") from None
    aux = aux_heads(backbone.out_channels) if callable(aux_heads) and not isinstance(aux_heads, nn.Module) else aux_heads
    return SegmentationModel(backbone, head_module, aux)
