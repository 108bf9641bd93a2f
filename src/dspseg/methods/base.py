"""The interface every training method implements: a method declares, the base plumbs.

A method turns the model's outputs on a batch into named loss terms; the trainer sums them,
back-propagates, logs every term to ``metrics.csv`` and stops on the first non-finite one. A new
method is one module holding one :class:`Method` subclass decorated with
:func:`dspseg.methods.register`, plus one import line in :mod:`dspseg.methods`.

Class attributes a method sets:

* ``name`` — the ``--method`` value; ``summary`` — one line for ``dspseg train --help``;
* ``uses`` — the annotation kinds (:data:`dspseg.vocabulary.KINDS`) it learns from. **Batch
  policy**: the training loader samples only the training records whose kind is in ``uses``; each
  epoch visits every such image once, in a random order fixed by the seed and the epoch; images of
  different kinds share a batch (``batch.kinds`` says which is which);
* ``head`` — ``"linear"`` or ``"prototype"`` (:data:`dspseg.models.HEADS`);
* ``views`` — which augmented views of the batch it trains on (:data:`VIEWS`): ``"none"`` (the batch
  as is), ``"weak"`` (flips, quarter turns, jitter 0.2; every built-in method) or ``"weak+strong"``
  (also a strong view on top of it, for pseudo-label consistency); :meth:`view_plan` may choose by
  option;
* ``Options`` — a pydantic model of the method's options (``--set method_options.KEY=VALUE``);
  unknown keys are refused.

**One step** (:meth:`Method.step`, never overridden for plumbing): the base builds the declared
views (:func:`dspseg.methods.views.make_views`), runs the model on them (:meth:`forward`, one batch
of 2B images for two views) and hands the :class:`~dspseg.methods.views.Views` to :meth:`terms`.
A method implements either :meth:`terms` (it needs both views) or :meth:`loss` (outputs and batch of
one view); each defaults to the other: ``terms(views) = loss(views.out_weak, views.weak)`` and
``loss(outputs, batch)`` = the terms on one un-augmented view playing both roles (identity geometry).
The batch is a :class:`dspseg.data.batch.Batch` (its fields, shapes and padding are declared there).

Auxiliary heads: a method that needs extra outputs computed from the backbone features (a
classification branch, a distance-regression branch) returns them from :meth:`Method.aux_heads`.
The trainer builds them into the model (``SegmentationModel.aux``), so the optimiser trains them and
checkpoints hold them; in training mode the model's output dict then also holds ``aux_<name>``.
Evaluation and prediction never compute them (they are dropped when a checkpoint is loaded for
inference: :func:`dspseg.engine.checkpoint.build_model_from_checkpoint`).

Torch is not imported at module level here, nor should it be in method modules: ``dspseg train
--help`` lists the registered methods and must stay instant. Import torch inside the methods.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from dspseg.vocabulary import KINDS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor, nn

    from dspseg.data.batch import Batch
    from dspseg.methods.views import Views

#: the view plans a method may declare (:attr:`Method.views`)
NO_VIEW, WEAK, WEAK_STRONG = "none", "weak", "weak+strong"
VIEWS: tuple[str, ...] = (NO_VIEW, WEAK, WEAK_STRONG)


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
    """Base class: subclasses set the class attributes and implement :meth:`terms` or :meth:`loss`.

    Args:
        options: the validated ``Options`` instance.
        n_classes: C, number of classes of the dataset.
        ignore_index: value of unannotated pixels in ``batch.target``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses: ClassVar[frozenset[str]] = frozenset()
    head: ClassVar[str] = "linear"
    views: ClassVar[str] = NO_VIEW
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, n_classes: int, ignore_index: int) -> None:
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__}: options must be a {self.Options.__name__}, "
                            f"got {type(options).__name__}")
        self.options = options
        self.n_classes = n_classes
        self.ignore_index = ignore_index

    @classmethod
    def implements_terms(cls) -> bool:
        """Whether the class overrides :meth:`terms` or :meth:`loss` (one of them must be)."""
        return cls.terms is not Method.terms or cls.loss is not Method.loss

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

    def view_plan(self) -> str:
        """The views this step needs (one of :data:`VIEWS`); default the class's ``views``."""
        return self.views

    def forward(self, model: nn.Module, image: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The model on ``image`` (B, Cin, h, w) with its ``valid`` (B, h, w); default ``model(image)``."""
        return model(image)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """One training step's loss terms: the declared views through :meth:`forward`, then :meth:`terms`."""
        from dspseg.methods.views import make_views

        return self.terms(make_views(self.view_plan(), lambda x, v: self.forward(model, x, v), batch, self.options))

    def terms(self, views: Views) -> dict[str, Tensor]:
        """Named scalar loss terms from the views; default :meth:`loss` on the weak view."""
        return self.loss(views.out_weak, views.weak)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Named scalar loss terms whose sum is the total loss; every term must always be present
        (a term without data in this batch is a zero that still depends on the outputs). Default:
        :meth:`terms` on one un-augmented view playing both roles (identity geometry)."""
        from dspseg.methods.views import Views

        return self.terms(Views.single(batch, outputs))

    # --- the terms several methods share (the loss code lives in dspseg.losses) ---------------

    def mask_ce(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """L_CE: cross-entropy of ``outputs["logits"]`` on the annotated mask pixels of ``batch``
        (:func:`dspseg.losses.ce.masked_cross_entropy`)."""
        from dspseg.losses.ce import masked_cross_entropy

        return masked_cross_entropy(outputs["logits"], batch.target, batch.valid, self.ignore_index)

    def plf(self, views: Views, teacher: str = "logits") -> Tensor:
        """L_PLF (paper §3.6): the strong view's logits towards the weak view's filtered arg-max of
        ``out_weak[teacher]``, moved by the weak → strong geometry (:func:`dspseg.losses.plf.plf_loss`)."""
        from dspseg.losses.plf import plf_loss

        return plf_loss(views.out_weak[teacher], views.weak.allowed, views.weak.valid, views.out_strong["logits"],
                        views.strong.valid, self.ignore_index, views.geometry.apply)

    def aux_output(self, outputs: dict[str, Tensor], name: str) -> Tensor:
        """``outputs["aux_<name>"]`` (an :meth:`aux_heads` output), or a KeyError saying how to get it."""
        if f"aux_{name}" not in outputs:
            raise KeyError(f"{self.name}: the model outputs have no 'aux_{name}'; build the model with "
                           "aux_heads=method.aux_heads and call it in training mode")
        return outputs[f"aux_{name}"]

    def state_dict(self) -> dict[str, Any]:
        """Extra training state to checkpoint (tensors and plain containers only); default none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


__all__ = ["KINDS", "Method", "NO_VIEW", "NoOptions", "TwoViewOptions", "VIEWS", "WEAK", "WEAK_STRONG",
           "WeakViewOptions"]
