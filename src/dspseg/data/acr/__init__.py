"""The paper's Annotation Compression Ratio protocol and the reduced dataset folders it writes.

* :mod:`~dspseg.data.acr.protocol` — in memory: the order of the training images, how many keep their
  masks at a given ACR, what the others get, and the reduced manifest (:func:`reduce_manifest`);
* :mod:`~dspseg.data.acr.writer` — on disk: :func:`simulate_dataset`, the ``dspseg simulate`` folder.

The scenarios and the mixed cycle are the words of :mod:`dspseg.vocabulary`.
"""

from dspseg.data.acr.protocol import (
    ANNOTATION_TYPES,
    ReductionPlan,
    assign_annotations,
    check_options,
    n_masked,
    order_for_acr,
    plan_reduction,
    reduce_manifest,
    reduce_records,
    reduced_manifest,
    require_masks,
)
from dspseg.data.acr.writer import SIMULATION_FILE, SIMULATION_FORMAT, SimulationResult, simulate_dataset
from dspseg.vocabulary import MIXED_CYCLE, SCENARIOS

__all__ = [
    "ANNOTATION_TYPES", "MIXED_CYCLE", "SCENARIOS", "SIMULATION_FILE", "SIMULATION_FORMAT", "ReductionPlan",
    "SimulationResult", "assign_annotations", "check_options", "n_masked", "order_for_acr", "plan_reduction",
    "reduce_manifest", "reduce_records", "reduced_manifest", "require_masks", "simulate_dataset",
]
