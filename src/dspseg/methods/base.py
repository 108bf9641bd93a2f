"""The interface every training method implements.

A method turns the model's outputs on a batch into named loss terms; the trainer sums them,
back-propagates, logs every term to ``metrics.csv`` and stops on the first non-finite one. A new
method is one module holding one :class:`Method` subclass decorated with
:func:`dspseg.methods.register`, plus one import line in :mod:`dspseg.methods`.

Class attributes a method sets:

* ``name`` — the ``--method`` value; ``summary`` — one line for ``dspseg train --help``;
* ``uses`` — the annotation kinds (``mask``, ``box``, ``point``, ``image``, ``none``) it learns
  from. **Batch policy**: the training loader samples only the training records whose kind is in
  ``uses``; each epoch visits every such image once, in a random order fixed by the seed and the
  epoch; images of different kinds share a batch (``batch["kinds"]`` says which is which);
* ``head`` — ``"linear"`` or ``"prototype"`` (:data:`dspseg.models.HEADS`);
* ``Options`` — a pydantic model of the method's options (``--set method_options.KEY=VALUE``);
  unknown keys are refused.

Auxiliary heads: a method that needs extra outputs computed from the backbone features (a
classification branch, a distance-regression branch) returns them from :meth:`Method.aux_heads`.
The trainer builds them into the model (``SegmentationModel.aux``), so the optimiser trains them and
checkpoints hold them; in training mode the model's output dict then also holds ``aux_<name>``.
Evaluation and prediction never compute them (they are dropped when a checkpoint is loaded for
inference: :func:`dspseg.engine.checkpoint.build_model_from_checkpoint`).

Torch is not imported at module level here, nor should it be in method modules: ``dspseg train
--help`` lists the registered methods and must stay instant. Import torch inside :meth:`loss`.

Batch contents (from :func:`dspseg.data.dataset.collate`; B images padded to h × w, C classes)::

    image (B, Cin, h, w) float       target (B, h, w) long (ignore_index where unannotated or padding)
    allowed (B, C, h, w) bool        valid (B, h, w) bool (False on padding)
    instances (B, h, w) long         batch-unique instance ids 1..M, 0 = none
    instance_classes (M,) long       points (P, 4) [b, class, row, col]
    boxes (Nb, 6) [b, class, x0, y0, x1, y1]   image_labels (L, 2) [b, class]
    image_classes (B, C) bool        kinds: list[str] of length B
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor, nn

KINDS = ("mask", "box", "point", "image", "none")


def images_of_kinds(batch: dict[str, Any], kinds: frozenset[str] | set[str]) -> Tensor:
    """(B,) bool on the batch's device: image b's kind (``batch["kinds"][b]``) is in ``kinds``."""
    import torch

    return torch.tensor([k in kinds for k in batch["kinds"]], dtype=torch.bool, device=batch["image"].device)


def rows_of_kinds(table: Tensor, batch: dict[str, Any], kinds: frozenset[str] | set[str]) -> Tensor:
    """The rows of a collated bag table (points, boxes, image_labels: column 0 = image index) whose
    image's kind is in ``kinds``; e.g. the boxes a box-only method may learn from."""
    return table[images_of_kinds(batch, kinds)[table[:, 0].long()]]


class WeakViewOptions(BaseModel):
    """Options shared by methods that train on the weak view (flips, quarter turns, jitter)."""

    model_config = ConfigDict(extra="forbid")
    weak_jitter: float = Field(0.2, ge=0, le=1, description="brightness/contrast jitter of the weak view")


class TwoViewOptions(WeakViewOptions):
    """Options shared by methods that also train on a strong view (pseudo-label consistency)."""

    strong_jitter: float = Field(0.4, ge=0, le=1, description="brightness/contrast jitter of the strong view")
    cutout: int = Field(9, ge=0, description="CutOut squares at most, strong view")


class NoOptions(BaseModel):
    """A method without options; any key given is refused."""

    model_config = ConfigDict(extra="forbid")


class Method(ABC):
    """Base class: subclasses set the class attributes and implement :meth:`loss`.

    Args:
        options: the validated ``Options`` instance.
        n_classes: C, number of classes of the dataset.
        ignore_index: value of unannotated pixels in ``batch["target"]``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses: ClassVar[frozenset[str]] = frozenset()
    head: ClassVar[str] = "linear"
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, n_classes: int, ignore_index: int) -> None:
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__}: options must be a {self.Options.__name__}, "
                            f"got {type(options).__name__}")
        self.options = options
        self.n_classes = n_classes
        self.ignore_index = ignore_index

    def head_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the head (e.g. the prototype head's ``tau``); default none."""
        return {}

    def aux_heads(self, feature_channels: int) -> dict[str, nn.Module]:
        """Auxiliary heads ``{name: module}`` on the backbone features; default none.

        Each module maps ``(features (B, F, H, W), valid (B, H, W) bool or None)`` to a tensor, which
        the model returns as ``outputs["aux_<name>"]`` in training mode (``F = feature_channels``).
        Names must be identifiers. Build the modules here (import torch inside this method).
        """
        return {}

    def step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """One training step's loss terms. Default: ``loss(model(batch["image"]), batch)``.

        Methods that need several forward passes (two augmented views, a teacher) override this.
        """
        return self.loss(model(batch["image"]), batch)

    @abstractmethod
    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named scalar loss terms whose sum is the total loss; every term must always be present
        (a term without data in this batch is a zero that still depends on the outputs)."""

    def state_dict(self) -> dict[str, Any]:
        """Extra training state to checkpoint (tensors and plain containers only); default none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")
