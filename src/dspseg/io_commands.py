"""The ``import openorganelle``, ``convert`` and ``export`` commands (typer; the CLI registers them).

Real data in, models out. Nothing heavy is imported at module level (zarr, torch and onnx load inside
the command bodies), so ``--help`` stays instant. A user's mistake ends in one sentence on stderr and
exit code 2; a dataset that cannot be used ends with exit code 1; never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from dspseg.cli_errors import fail, guarded
from dspseg.errors import EXIT_SKIPPED
from dspseg.cli_support import split_list
from dspseg.data.cosem_classes import DATASETS, DEFAULT_SOURCE, class_map_lines

console = Console()


import_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@import_app.callback()
def import_() -> None:
    """Import public datasets into the dspseg format (a dataset folder with dataset.json)."""


OPENORGANELLE_HELP = (
    "Import the ground-truth crops of an OpenOrganelle (COSEM/CellMap) FIB-SEM dataset as 2D sections.\n\n"
    f"Datasets (--dataset): {', '.join(DATASETS)} (the four of the DSP paper).\n\n"
    f"Sources (--source): the public bucket {DEFAULT_SOURCE} (default; read anonymously, only the chunks "
    "covering the crops are downloaded; needs the packages zarr, fsspec and s3fs: the openorganelle extra of "
    "dspseg), or a LOCAL folder with "
    "the same layout: LOCAL/<dataset>/<dataset>.zarr/recon-1/em/fibsem-uint8/s0.. (raw) and "
    "LOCAL/<dataset>/<dataset>.zarr/recon-1/labels/groundtruth/crop<N>/all/s0.. (label ids). Without network "
    "access, copy those two folders from the bucket and pass --source LOCAL.\n\n"
    "Each crop is placed in the raw volume by the nanometre scale and translation of its OME-NGFF metadata "
    "(the label level whose voxel size equals a raw level's); every z plane becomes an image and a mask, "
    "group = crop. Label ids are merged into 17 classes; a class found in fewer than --min-crops crops is "
    "set to the ignore value 255 (not annotated) and left out of the class list. --as-volumes writes no image or "
    "mask file: every section is a volume record naming the crop's box in the raw array and the crop's label "
    "array by URL (read lazily when training; a LOCAL source must then lie inside --out). Class map "
    "(merged class <- COSEM field name(id)), see docs/openorganelle.md:\n\n"
)


def openorganelle(
    dataset: str = typer.Option(..., "--dataset", "-d", help=f"One of: {', '.join(DATASETS)}.",
                                show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) dataset folder to write.", show_default=False),
    source: str = typer.Option(DEFAULT_SOURCE, "--source", "-s",
                               help="s3://bucket (anonymous) or a LOCAL folder with the same layout."),
    min_crops: int = typer.Option(3, "--min-crops", min=1,
                                  help="Classes found in fewer crops become ignore (255); the paper uses 3."),
    crops: Optional[str] = typer.Option(None, "--crops", help="Only these crops, e.g. 1,7,crop12 (default: all)."),
    z_step: int = typer.Option(1, "--z-step", min=1, help="Keep every n-th z plane of each crop."),
    as_volumes: bool = typer.Option(False, "--as-volumes", help="Reference the crops in the source (dataset.json "
                                    "volume records) instead of copying sections to TIFF files."),
) -> None:
    def run() -> None:
        from dspseg.data.openorganelle import import_openorganelle

        result = import_openorganelle(dataset, out, source=source, min_crops=min_crops,
                                      crops=split_list(crops) or None, z_step=z_step, as_volumes=as_volumes,
                                      progress=lambda line: console.print(line, highlight=False, soft_wrap=True))
        for w in result.warnings:
            console.print(f"[yellow]note:[/] {escape(w)}", soft_wrap=True)
        m = result.manifest
        dropped = ", ".join(f"{k} ({v} crop{'s' * (v != 1)})" for k, v in result.dropped.items()) or "none"
        what = "volume sections (references, no copies)" if as_volumes else "images"
        console.print(f"wrote {len(m.images)} {what} from {len(result.crops)} crops to {out}; classes: "
                      f"{', '.join(m.classes)}; set to ignore as rare: {dropped}", highlight=False, soft_wrap=True)
        console.print(f"next: dspseg validate {out}", highlight=False, soft_wrap=True)

    guarded(run)


openorganelle.__doc__ = OPENORGANELLE_HELP + "\n".join(class_map_lines())
import_app.command("openorganelle")(openorganelle)


#: exit code of a conversion that wrote the dataset but skipped inputs naming no image (--on-unmatched skip)

CONVERT_HELP = (
    "Turn annotations made elsewhere into a dspseg dataset, or add them to one (images are hard-linked or "
    "copied, never changed).\n\n"
    "FORMAT and INPUT:\n\n"
    "coco: a COCO JSON file. bbox -> box; keypoints (or a bbox of at most 1x1 pixel) -> points; an annotation "
    "without geometry -> image-level label (the image's label list is then complete). Images are found in "
    "--images by file_name.\n\n"
    "napari: a layer CSV or a folder of them (File > Save Layers). Points layers (index,axis-0,axis-1) -> "
    "points; Shapes layers (rectangle; polygon/ellipse by their bounding box) -> boxes. axis-0 is the row (y), "
    "axis-1 the column (x). The CSV name starts with the image's name (cell01.csv, cell01_mito.csv); the class "
    "comes from a class/label column or from the rest of the name.\n\n"
    "qupath: a GeoJSON file or folder (Export objects as GeoJSON), named like the image. Point/MultiPoint -> "
    "points, Polygon rectangles -> boxes (other polygons by their bounding box), a rectangle over the whole "
    "image or an object without geometry -> image-level label; class = the classification name.\n\n"
    "labels: a folder of label images named like the images (cell01.tif, cell01_mask.png): class ids "
    "(--classes names the ids 0, 1, 2, ...; --ignore-index for unannotated), or with --instances CLASS one id "
    "per object (a table <label image>.csv with id,class columns may give objects other classes).\n\n"
    "--into DATA adds the records to a dataset (or creates it): the annotations of one image from several "
    "conversions make one record; a conflict (a second mask, a box or point the mask contradicts, a class "
    "the record's labels lack) is reported and nothing is written. Class names match the dataset's ignoring "
    "case; --class-map renames the others. Exit codes: 0 written, 1 the dataset has errors, 2 nothing "
    f"written (the message says why), {EXIT_SKIPPED} written but inputs naming no image were skipped.\n\n"
    "Step by step: docs/bring-your-own-data.md."
)


def convert(
    format: str = typer.Argument(..., help="coco, napari, qupath or labels.", show_default=False),
    input: Path = typer.Argument(..., help="Annotation file or folder (see above).", show_default=False),
    images: Path = typer.Option(..., "--images", "-i", help="Folder holding the images the annotations refer to.",
                                show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="New (or empty) dataset folder to write.",
                                       show_default=False),
    into: Optional[Path] = typer.Option(None, "--into", help="Dataset folder to add the records to (created if "
                                        "absent); instead of --out.", show_default=False),
    classes: Optional[str] = typer.Option(None, "--classes", "-c",
                                          help="Class names in id order, comma-separated (required for labels "
                                          "without --instances; otherwise taken from the annotations or the "
                                          "--into dataset)."),
    class_map: Optional[str] = typer.Option(None, "--class-map", help="Rename a tool's classes, e.g. "
                                            "'Nuc=nucleus,Cyto=cytoplasm' (names differing only in case "
                                            "match without it).", show_default=False),
    background: Optional[str] = typer.Option(None, "--background", help="The class never drawn in box/point "
                                             "sources (QuPath, napari): it joins those images' labels. For "
                                             "--instances: the class of the pixels between objects.",
                                             show_default=False),
    instances: Optional[str] = typer.Option(None, "--instances", help="labels: the label images hold one id per "
                                            "object, each of this class (default: class ids).",
                                            show_default=False),
    on_unmatched: str = typer.Option("skip", "--on-unmatched", help="An input naming no image of --images: "
                                     f"skip (reported; exit code {EXIT_SKIPPED}) or fail."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default: the folder's name)."),
    ignore_index: Optional[int] = typer.Option(None, "--ignore-index", min=0, max=65535,
                                               help="Label-image value meaning 'not annotated' (default: the "
                                               "--into dataset's, else 255).", show_default=False),
    class_column: Optional[str] = typer.Option(None, "--class-column",
                                               help="napari: CSV column holding the class (default: class or label)."),
    group_pattern: Optional[str] = typer.Option(None, "--group-pattern",
                                                help="Regular expression on the image name whose first group "
                                                "names the sub-volume, e.g. '^(cell\\d+)_' (default: none)."),
) -> None:
    def run() -> None:
        from dspseg.data.convert import convert_dataset
        from dspseg.data.validate import render_report

        result = convert_dataset(format, input, images, out, classes=split_list(classes), name=name,
                                 ignore_index=ignore_index, class_column=class_column, group_pattern=group_pattern,
                                 into=into, class_map=class_map, background=background, on_unmatched=on_unmatched,
                                 instances=instances)
        data = out if out is not None else into
        for w in result.warnings:
            console.print(f"[yellow]note:[/] {escape(w)}", soft_wrap=True)
        for s in result.skipped:
            console.print(f"[yellow]skipped:[/] {escape(s)}", soft_wrap=True)
        render_report(result.report, console)
        console.print(f"wrote {len(result.manifest.images)} records to {data} ({result.added} new, {result.merged} "
                      f"matched existing records); next: dspseg validate {data}", highlight=False, soft_wrap=True)
        if not result.report.ok:
            raise typer.Exit(1)
        if result.skipped:
            console.print(f"{len(result.skipped)} input(s) named no image and were skipped (exit code "
                          f"{EXIT_SKIPPED}); rename them or pass --on-unmatched fail", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_SKIPPED)

    guarded(run)


convert.__doc__ = CONVERT_HELP


def export(
    run: Path = typer.Argument(..., help="Run folder made by `dspseg train`.", show_default=False),
    format: str = typer.Option(..., "--format", "-f", help="safetensors (weights), pt2 (torch.export program), "
                               "onnx (ONNX Runtime and others) or bioimageio (a bioimage.io Model Zoo package).",
                               show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) folder for the model file and model.json "
                             "(bioimageio: the package folder and its .zip).", show_default=False),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Which weights: best or last."),
    data: Optional[Path] = typer.Option(None, "--data", help="bioimageio: the dataset the run was trained on (a "
                                        "validation image becomes the package's test image and cover).",
                                        show_default=False),
    name: Optional[str] = typer.Option(None, "--name", help="bioimageio: the model's name (default: dspseg "
                                       "<method> <dataset>).", show_default=False),
    author: Optional[list[str]] = typer.Option(None, "--author", help="bioimageio: an author's name (repeatable; "
                                               "default: git's user.name, with a note).", show_default=False),
    tag: Optional[list[str]] = typer.Option(None, "--tag", help="bioimageio: a tag beyond the defaults, e.g. "
                                            "electron-microscopy or mitochondria (repeatable).", show_default=False),
) -> None:
    """Export a trained model for use outside dspseg: the weights or a program, plus model.json; or a bioimage.io package.

    model.json lists the classes (output channel order), input channels, normalisation mean/std, the suggested tile size, the image-size multiple, the model arguments and the dspseg version. The pt2 and onnx programs take images scaled like dspseg reads them (integer types divided by their maximum, e.g. uint8 / 255), shape (N, C, H, W) with H and W multiples of model.json's input.multiple, normalise inside and return logits (N, classes, H, W); labels = argmax over dim 1. bioimageio (needs --data) writes OUT/<name>/rdf.yaml with both weight formats, the normalisation as preprocessing, test tensors, cover and documentation, and OUT/<name>.zip, for the tools that run bioimage.io models. See docs/bring-your-own-data.md.
    """
    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint must be best or last, got '{checkpoint}'", 2)

    def go() -> None:
        if format == "bioimageio":
            from dspseg.engine.bioimageio import export_bioimageio

            result = export_bioimageio(run, out, data, checkpoint=checkpoint, name=name, authors=author or (),
                                       tags=tag or ())
            for note in result.notes:
                console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
        else:
            from dspseg.engine.export import export_run

            result = export_run(run, format, out, checkpoint=checkpoint)
        console.print(f"wrote {', '.join(str(p) for p in result.files)}", highlight=False, soft_wrap=True)

    guarded(go)
