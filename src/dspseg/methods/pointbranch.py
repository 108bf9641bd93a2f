r"""``pointbranch``: segmentation + a branch regressing distance maps to the point annotations.

Paper §5.2 ("Euclidean/Geodesic point branch"): like the classification branch of Mlynarski et al.
2019, but for masks + points; the regression target is inspired by interactive segmentation
(DeepIGeoS, Wang et al., TPAMI 2018).

    L = L_CE + λ · L_point
    L_CE    = cross-entropy on the annotated mask pixels of the weak view
    T_bc(j) = exp(−d_bc(j) / σ)       d: distance of pixel j to the nearest point of class c in image b
    D̂_bc(j) = DistanceBranch(f)_bc(j) ∈ (0, 1)
    L_point = Σ_{b,c,j} m_bcj · ρ(D̂_bc(j) − T_bc(j)) / max(1, Σ m_bcj),   ρ = |·| (l1) or (·)² (l2)
    m_bcj   = [class c has a point in image b] · valid_bj

``distance``: ``euclidean`` (exact, :func:`~dspseg.losses.distance_maps.euclidean_distance_maps`) or
``geodesic`` over the image intensities — path cost ``Σ (ℓ + β‖ΔI‖)`` on 8-connected paths of the
image smoothed by a k×k mean (:func:`~dspseg.losses.distance_maps.geodesic_distance_maps`).
``exp(−d/σ)`` bounds the target to (0, 1]: 1 at a point, → 0 far away, so a point just outside the
crop changes the target only near the crop border. Classes without a point in an image are ignored
(their maps are not trained). Targets are computed without gradient on the weak view, whose points
and image move together.

Uses masks and points: mask images contribute the points derived from their components (one per
connected component, at its most interior pixel; ``batch.bags.points``). Point rows of images of other
kinds are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import WEAK, Method, WeakViewOptions
from dspseg.vocabulary import BATCH_POINT, Kind

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn

    from dspseg.data.batch import Batch


class PointBranchOptions(WeakViewOptions):
    """Options of ``pointbranch`` (``--set method_options.KEY=VALUE``)."""

    distance: Literal["euclidean", "geodesic"] = Field("euclidean", description="distance to the points")
    weight: float = Field(1.0, ge=0, description="λ, weight of the distance regression term")
    sigma: float = Field(8.0, gt=0, description="σ of the target exp(-d/σ), pixels")
    regression: Literal["l1", "l2"] = Field("l2", description="regression loss ρ")
    beta: float = Field(2.0, ge=0, description="geodesic: weight β of the intensity change per step")
    passes: int = Field(4, ge=1, description="geodesic: passes of the 8 directional sweeps (more = closer to exact)")
    smooth: int = Field(3, ge=1, description="geodesic: side of the mean filter applied to the image first")


@register
class PointBranch(Method):
    """CE on masks + regression of per-class distance maps to the points (euclidean or geodesic)."""

    name = "pointbranch"
    summary = "Point branch: CE on masks + regressed euclidean or geodesic distance maps to the points (masks, points)"
    uses = frozenset({Kind.MASK, Kind.POINT})
    views = WEAK
    Options = PointBranchOptions

    def aux_heads(self, feature_channels: int) -> dict[str, nn.Module]:
        """``{"distance": DistanceBranch(F, C)}``."""
        from dspseg.models.aux_heads import DistanceBranch

        return {"distance": DistanceBranch(feature_channels, self.n_classes)}

    def targets(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(T (B, C, h, w) in [0, 1], has (B, C) bool)``: normalised distance maps and which exist."""
        import torch

        from dspseg.losses.distance_maps import (euclidean_distance_maps, geodesic_distance_maps, normalised,
                                                 smooth_image)

        o = self.options
        image, valid = batch.image, batch.valid
        b, _, h, w = image.shape
        points = batch.rows_of_kinds(batch.bags.points, self.uses).long()
        with torch.no_grad():
            if o.distance == "geodesic":
                smoothed = smooth_image(image.float(), valid, o.smooth)
                d = geodesic_distance_maps(points, smoothed, self.n_classes, o.beta, o.passes, valid)
            else:
                d = euclidean_distance_maps(points, b, self.n_classes, h, w)
            has = torch.zeros(b, self.n_classes, dtype=torch.bool, device=image.device)
            has[points[:, BATCH_POINT.b], points[:, BATCH_POINT.c]] = True
            return normalised(d, o.sigma), has

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"ce": L_CE, "point": λ·L_point}`` (module docstring); needs ``outputs["aux_distance"]``."""
        aux = self.aux_output(outputs, "distance")
        ce = self.mask_ce(outputs, batch)
        pred = aux.float()
        target, has = self.targets(batch)
        err = (pred - target).abs() if self.options.regression == "l1" else (pred - target) ** 2
        m = (has[:, :, None, None] & batch.valid[:, None]).float()
        point = (err * m).sum() / m.sum().clamp_min(1)
        return {"ce": ce, "point": self.options.weight * point}
