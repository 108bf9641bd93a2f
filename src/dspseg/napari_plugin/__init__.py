"""dspseg in napari (``pip install 'dspseg[napari]'``): a user interface beside the command line.

napari finds the contributions through ``napari.yaml`` (the npe2 manifest, the entry point
``napari.manifest``):

* reader (:mod:`.reader`): a dataset folder (or its ``dataset.json``) → image, mask (Labels), boxes
  (Shapes rectangles), points (Points), with class names and the colours of :mod:`dspseg.colours`;
* "Annotate → dataset" (:mod:`.annotate`): layers → a record, through ``convert --into``'s merge
  (:mod:`.gather` reads the layers, :mod:`.to_dataset` writes the record);
* "Train" (:mod:`.train`): the engine's trainer in a worker thread, a progress bar, a live plot
  (:mod:`.plot`) and Cancel (the run stays resumable);
* "Predict" (:mod:`.predict`): a run segments the image layer into a Labels layer (:mod:`.segment`).

One convention in every layer (:mod:`.layers`): a Labels value ``k ≥ 1`` is class ``k − 1`` of the
dataset (value 1 = the first class), and ``0`` — napari's eraser, transparent — marks pixels nobody
annotated (written as the dataset's ``ignore_index``; training ignores them). Boxes and points use
napari's pixel-centre coordinates (:mod:`dspseg.data.convert.common`).

Nothing here is imported by the command line (``dspseg --help`` never loads napari or Qt).
"""
