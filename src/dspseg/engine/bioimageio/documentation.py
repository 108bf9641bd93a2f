"""What a person reads in a bioimage.io package: the cover image and ``README.md``.

* :func:`cover_picture` — the test image in grey beside its predicted overlay and the class legend
  (:func:`dspseg.engine.predict.overlay_rgb`, :func:`dspseg.engine.overlay.overlay_picture`, the
  palette of :mod:`dspseg.colours`), padded with white to the 2:1 shape the Model Zoo shows.
* :func:`readme` — the model, its classes, how it was trained, its input rule and output, how to run
  it, how it was validated, the training data and the citation, from a :class:`ModelFacts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the DSP paper (CVPR 2023), cited by every package
PAPER = {"text": "Reiß, S., Seibold, C., Freytag, A., Rodner, E., Stiefelhagen, R.: Decoupled Semantic Prototypes "
                 "enable learning from diverse annotation types for semi-weakly segmentation in expert-driven "
                 "domains. CVPR 2023, pp. 15495-15506",
         "url": "https://openaccess.thecvf.com/content/CVPR2023/html/Reiss_Decoupled_Semantic_Prototypes_Enable_"
                "Learning_From_Diverse_Annotation_Types_for_CVPR_2023_paper.html"}
#: what README.md says about each head
HEADS = {"prototype": ": each pixel's embedding is scored by its cosine similarity to learned class prototypes "
                      "(the mean of K per class), divided by a temperature (DSP, eq. 1-3)",
         "linear": ": a 1×1 convolution from the U-Net's features to the class logits"}
#: the U-Net backbone (MICCAI 2015)
UNET = {"text": "Ronneberger, O., Fischer, P., Brox, T.: U-Net: Convolutional Networks for Biomedical Image "
                "Segmentation. MICCAI 2015", "doi": "10.1007/978-3-319-24574-4_28"}


def cover_picture(unit: np.ndarray, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """(H', 2·H', 3) uint8: the image ``unit`` (Cin, h, w; scaled by the intensity rule) in grey, and its
    overlay of ``labels`` (h, w) with the legend of ``classes``, on white, 2:1."""
    from dspseg.colours import palette
    from dspseg.engine.overlay import enlarge_factor, overlay_picture
    from dspseg.engine.predict import overlay_rgb

    n = len(classes)
    tinted = overlay_rgb(unit, labels, n)
    grey = overlay_rgb(unit, np.zeros_like(labels), n)
    right = overlay_picture(tinted, labels, classes, palette(n))
    k = enlarge_factor(*labels.shape)
    left = np.repeat(np.repeat(grey, k, axis=0), k, axis=1)
    gap = np.full((right.shape[0], 8, 3), 255, np.uint8)
    both = np.concatenate([left, gap, right], axis=1)
    h, w = both.shape[:2]
    out = np.full((max(h, (w + 1) // 2), max(w, 2 * h), 3), 255, np.uint8)  # 2:1, the picture centred
    r0, c0 = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    out[r0:r0 + h, c0:c0 + w] = both
    return out


@dataclass
class ModelFacts:
    """Everything :func:`readme` says, gathered by the exporter."""

    name: str
    classes: list[str]
    in_channels: int
    method: str
    model_args: dict
    step: int
    checkpoint: str
    best_metric: float | None
    dataset: str
    split_counts: dict[str, int]
    annotation_counts: dict[str, int]
    dtype: str
    divide_by: float
    mean: list[float]
    std: list[float]
    multiple: int
    tile: int
    sample: str
    weights: list[str]
    dspseg_version: str
    training: dict


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows])


def readme(f: ModelFacts) -> str:
    """The package's ``README.md`` (markdown; bioimage.io wants a '# Validation' section)."""
    args = f.model_args
    head = args.get("head")
    head_kwargs = ", ".join(f"{k} {v}" for k, v in (args.get("head_kwargs") or {}).items())
    dice = "not recorded" if f.best_metric is None else f"{f.best_metric:.4f}"
    scale = ("used as stored (floats)" if f.divide_by == 1 else f"divided by {f.divide_by:g} (the largest {f.dtype})")
    splits = ", ".join(f"{n} {s}" for s, n in f.split_counts.items() if n) or "none"
    kinds = ", ".join(f"{n} with {k} annotation" for k, n in f.annotation_counts.items() if n) or "none"
    norm = _table(("channel", "mean", "std"), [(f"channel{i}", f"{m:.6g}", f"{s:.6g}")
                                               for i, (m, s) in enumerate(zip(f.mean, f.std))])
    classes = _table(("output channel", "class"), list(enumerate(f.classes)))
    training = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in f.training.items() if v is not None) or "no settings recorded"
    return f"""# {f.name}

Semantic segmentation of 2D images into {len(f.classes)} classes, trained with
dspseg {f.dspseg_version} and its `{f.method}` method. dspseg
implements *Decoupled Semantic Prototypes* (DSP; Reiß et al., CVPR 2023): one model learns from a mix
of annotation types (pixel masks, boxes, points, image-level labels, unannotated images).

## Model

A U-Net (width {args.get("width")}, {args.get("levels")} resolution levels; Ronneberger et al. 2015)
with a `{head}` head{f" ({head_kwargs})" if head_kwargs else ""}{HEADS.get(head, "")}. Weights:
{", ".join(f"`{w}`" for w in f.weights)} (the same model; ONNX converted from the state dict).
The `pytorch_state_dict` architecture is `dspseg_model.py`, dspseg's model code in one file that needs
only PyTorch.

## Classes

{classes}

## Input

Tensor `image`, axes (batch, channel, y, x): {f.in_channels} channel(s), {f.dtype} pixels as
stored, y and x multiples of {f.multiple} (2^(levels-1), the U-Net's pooling steps; pad or tile other
sizes). The preprocessing in `rdf.yaml` applies dspseg's intensity rule, the same in training and
prediction: pixels {scale}, then `(x - mean) / std` per channel with the training images' statistics:

{norm}

Images of another pixel type must first be converted to {f.dtype} with the same value range.

## Output

Tensor `logits`, axes (batch, channel, y, x): one channel per class, named by the class (table
above), float32 **logits** (not probabilities). Labels = argmax over the channel axis; probabilities
= softmax over it. dspseg predicts images larger than {f.tile} pixels in overlapping
{f.tile} × {f.tile} tiles (25 % overlap, Gaussian blending); a consumer that tiles should overlap
tiles the same way to avoid seams.

## How to use

With bioimageio.core (Python; also what ilastik uses):

```python
from bioimageio.core import load_description, predict
model = load_description("rdf.yaml")            # or the package's .zip
sample = predict(model=model, inputs={{"image": image[None]}})   # image: ({f.in_channels}, H, W), {f.dtype}
labels = sample.members["logits"].data.argmax("channel")
```

From a shell: `bioimageio test rdf.yaml` runs the package's own test;
`bioimageio predict rdf.yaml --inputs image.npy` predicts. The package also opens in tools that run
bioimage.io models with ONNX or PyTorch weights (e.g. ilastik's neural network workflow, the
bioimage.io napari plugin). With dspseg itself: `dspseg predict RUN IMAGES --out DIR`.

## Validation

The checkpoint (`{f.checkpoint}`, step {f.step}) reached a mean Dice of {dice} on the validation
split of its dataset during training (dspseg's validation, all classes). The package's test input is
{f.sample}; its test output is dspseg's own prediction (logits) for it, so `bioimageio test` checks
that the package reproduces dspseg. To validate on data with masks, run
`dspseg evaluate RUN DATA --split test` on the run (per-class Dice), or compare `argmax(logits)`
with your masks.

## Training

Method `{f.method}`, {f.step} optimiser steps (checkpoint `{f.checkpoint}`); {training}.

## Training data

Dataset `{f.dataset}`: {splits} images; training images: {kinds}. Annotation types other than
masks are used by the DSP method as weak supervision.

## Citation

{PAPER["text"]}. {PAPER["url"]}

## Limitations

Trained on one dataset: images from other instruments, stainings or pixel sizes may need retraining
(`dspseg train --init RUN`). The model sees 2D images; volumes are segmented section by section.
"""
