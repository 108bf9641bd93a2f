"""bioimage.io export: a trained run as a Model Zoo package (spec 0.5) that ilastik, deepImageJ, QuPath,
Fiji, napari and bioimageio.core run.

* :mod:`.package` — ``export_bioimageio``: the package folder (``rdf.yaml`` and its files) and its zip
* :mod:`.architecture` — the ``pytorch_state_dict`` architecture file, bundled from dspseg's model code
* :mod:`.sample` — the test image: a validation image of the run's dataset, cropped to a valid size
* :mod:`.documentation` — the cover picture and ``README.md``

Needs the ``bioimageio`` extra (``bioimageio.spec``, ``bioimageio.core``) and the ``export`` extra (ONNX).
"""

from dspseg.engine.bioimageio.package import BioimageioResult, export_bioimageio

__all__ = ["BioimageioResult", "export_bioimageio"]
