"""The ``train``, ``evaluate`` and ``predict`` commands (typer functions; the CLI registers them).

Nothing heavy is imported at module level (torch and lightning load inside the command bodies), so
``dspseg --help`` stays instant. A user's mistake ends in one sentence on stderr: exit code 2 for a
bad option, path or run folder, 1 for a dataset or image that cannot be used and for a training run
that had to stop (non-finite loss); never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dspseg.cli_errors import fail, guarded
from dspseg.engine.config import train_option
from dspseg.methods import method_table

console = Console()

TRAIN_HELP = (
    "Train a segmentation network on a dataset and write a self-explaining run folder.\n\n"
    "Training uses the records with split 'train' (all records when none has a split), validation the 'val' "
    "records. The run folder (--out) gets config.yaml, env.json, metrics.csv, progress.png and checkpoints/ "
    "(last.pt to resume, best.pt by validation Dice). Options come from, in increasing priority: defaults, "
    "--config FILE, the flags below, --set key=value.\n\n"
    "Methods (--method):\n"
)


def train(
    data: Path = typer.Argument(..., help="Dataset folder (holding dataset.json) or the dataset.json file.",
                                show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create; must be new or empty (unless --resume).",
                             show_default=False),
    method: Optional[str] = train_option("method", "--method", "-m",
                                         help="Training method, see the list above (default: {default})."),
    steps: Optional[int] = train_option("steps", "--steps", help="Number of training steps, i.e. batches (default: {default})."),
    epochs: Optional[int] = train_option("epochs", "--epochs",
                                         help="Train for this many passes over the training images instead of --steps."),
    batch_size: Optional[int] = train_option("batch_size", "--batch-size", "-b", help="Images per step (default: {default})."),
    width: Optional[int] = train_option("width", "--width",
                                        help="Network size: U-Net channels at full resolution (default: {default}, quick on "
                                        "a laptop CPU; the paper uses 64)."),
    seed: Optional[int] = train_option("seed", "--seed", help="Random seed for weights, image order and crops (default: {default})."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="YAML file of options (key: value lines, e.g. a run's config.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Set any option, e.g. --set lr=1e-4 or --set method_options.tau=0.1 "
                                   "(repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint, exactly."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from the weights of another run folder "
                                        "(e.g. a trained basic U-Net)."),
    threads: Optional[int] = train_option("threads", "--threads", help="CPU threads for PyTorch (default: all cores)."),
    precision: Optional[str] = train_option("precision", "--precision", help="Number format: {default} (default, exact), "
                                            "bf16-mixed or 16-mixed (faster on recent GPUs)."),
    val_every: Optional[int] = train_option("val_every", "--val-every", help="Validate and save a checkpoint every N steps "
                                            "(default: {default}; 0: at the end)."),
    accelerator: Optional[str] = train_option("accelerator", "--accelerator",
                                              help="cpu, gpu (cuda) or auto (default: {default}, a GPU when there is one)."),
    devices: Optional[str] = train_option("devices", "--devices",
                                          help="Devices (GPUs or CPU processes) to train on, or auto (default: {default}). "
                                          "With more than one, DSP's normaliser runs over the global batch."),
    num_nodes: Optional[int] = train_option("num_nodes", "--num-nodes", help="Machines of a multi-node run started by "
                                            "torchrun or SLURM (default: {default})."),
) -> None:
    def run() -> None:
        from dspseg.data.manifest import load_manifest
        from dspseg.data.splits import missing_split_fix
        from dspseg.engine.runfolder import RunFolder
        from dspseg.engine.trainer import resolve_run_config
        from dspseg.engine.trainer import train as run_training

        flags = {"method": method, "steps": steps, "epochs": epochs, "batch_size": batch_size, "width": width,
                 "seed": seed, "init": str(init) if init is not None else None, "threads": threads,
                 "precision": precision, "val_every": val_every, "accelerator": accelerator,
                 "devices": (int(devices) if devices is not None and devices.isdigit() else devices),
                 "num_nodes": num_nodes}
        cfg = resolve_run_config(out, resume, config, flags, set_)
        result = run_training(data, out, cfg, resume=resume, console=console)
        run = RunFolder(out)
        console.print(f"run folder: {out}  (progress plot: {run.progress}, metrics: {run.metrics})",
                      highlight=False, soft_wrap=True)
        fix = missing_split_fix(load_manifest(data), data)
        console.print(f"next: {fix}" if fix else f"next: dspseg evaluate {out} {data} --split test",
                      highlight=False, soft_wrap=True)
        return result

    guarded(run, interrupted="interrupted; the run can continue from its last checkpoint with --resume")


_WIDTH = max((len(name) for name, _ in method_table()), default=8)
train.__doc__ = TRAIN_HELP + "\n".join(f"  {name:<{_WIDTH}} {summary}" for name, summary in method_table())


def evaluate(
    run: Path = typer.Argument(..., help="Run folder made by `dspseg train` (its checkpoints/best.pt is used).",
                               show_default=False),
    data: Path = typer.Argument(..., help="Dataset folder or dataset.json holding the images to score.", show_default=False),
    split: str = typer.Option("test", "--split", help="Which records to score: test, val or train."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Where to write the scores (default: RUN/eval/<split>.json)."),
) -> None:
    """Score a trained run with Dice per class on a dataset split; print the table and write a JSON file.

    Dice per class = 2·TP / (2·TP + FP + FN) over all pixels of the split (unannotated pixels skipped). The headline is the mean over classes, background included; a class absent from both prediction and truth is left out of the mean.
    """
    if split not in ("train", "val", "test"):
        fail(f"--split must be train, val or test, got '{split}'", 2)

    def run_eval() -> None:
        from dspseg.engine.evaluate import evaluate_run

        evaluate_run(run, data, split=split, json_path=json_path, console=console)

    guarded(run_eval)


def predict(
    run: Path = typer.Argument(..., help="Run folder made by `dspseg train`.", show_default=False),
    inputs: list[str] = typer.Argument(..., help="Image files (.tif, .png) or folders of them; or one VOLUME (OME-Zarr, "
                                       "zarr, N5, HDF5, TIFF stack; path or URL) segmented into an OME-Zarr label image.",
                                       show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the label images (one <name>.tif per input); for a "
                             "VOLUME the OME-Zarr to write, e.g. seg.ome.zarr.", show_default=False),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <name>_overlay.png: the image with classes in colour."),
    tile: int = typer.Option(256, "--tile", min=16, help="Tile side in pixels for images larger than it; bigger is "
                             "faster but uses more memory."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Which weights: best (best validation Dice) or last."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace label images already in --out."),
    array: Optional[str] = typer.Option(None, "--array", help="VOLUME: the array inside the container (zarr path, "
                                        "N5 or HDF5 dataset)."),
    level: Optional[str] = typer.Option(None, "--level", help="VOLUME: the OME-Zarr multiscale level (index or path; "
                                        "default 0, the finest)."),
    axes: str = typer.Option("xy", "--axes", help="VOLUME: section planes; xy,xz,yz averages the class probabilities "
                             "of three orthogonal passes (isotropic data)."),
    block: str = typer.Option("16,256,256", "--block", help="VOLUME: block size z,y,x in voxels (the output's chunks)."),
    levels: Optional[int] = typer.Option(None, "--levels", help="VOLUME: pyramid levels (default: halve while y and x "
                                         "stay >= 16)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="VOLUME: also write the class probabilities "
                                       "(float32, OUT/probabilities)."),
    backend: str = typer.Option("local", "--backend", help="VOLUME: local (this process) or ray: the blocks as Ray "
                                "tasks (one GPU each where there are GPUs) on a Ray cluster or a local Ray instance."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="VOLUME, --backend ray: CPUs of the local Ray "
                                "instance (blocks at the same time)."),
    address: Optional[str] = typer.Option(None, "--address", help="VOLUME, --backend ray: the Ray cluster to join "
                                          "(e.g. auto or HEAD:6379); OUT, RUN and VOLUME must be on storage every "
                                          "node sees."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for PyTorch (default: all "
                                          "cores); with --backend ray, of each Ray task (default 1 on a local "
                                          "instance). Equal counts give probabilities equal to the last bit."),
) -> None:
    """Segment new images with a trained run: one label TIFF per input, same height and width.

    Pixel values of the label images are class ids in the order of the dataset's classes (see `dspseg validate DATA`). Input files are never modified. A VOLUME is segmented block by block into an NGFF label image (OUT/labels/segmentation); run the same command again to resume a stopped one.
    """
    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint must be best or last, got '{checkpoint}'", 2)

    def run_predict() -> None:
        from dspseg.engine.predict import predict_files
        from dspseg.engine.predict_volume import is_volume_input, predict_volume

        volume_options = array is not None or level is not None or backend != "local" or address is not None
        if is_volume_input(inputs, out, volume_options):
            if len(inputs) != 1:
                fail(f"give one VOLUME at a time (got {len(inputs)} inputs) when --out is an OME-Zarr", 2)
            try:
                sizes = tuple(int(v) for v in block.split(","))
            except ValueError:
                sizes = ()
            ref = {"url": inputs[0], "array": array,
                   "level": int(level) if level is not None and level.isdigit() else level}
            from dspseg.study.backends import stop_on_signals

            with stop_on_signals():  # SIGTERM / SIGHUP stop like Ctrl-C: tasks cancelled, a local Ray instance stopped
                predict_volume(run, ref, out, axes=axes, block=sizes, levels=levels, probabilities=probabilities,
                               tile=tile, checkpoint=checkpoint, overwrite=overwrite, console=console,
                               backend=backend, workers=workers, address=address, threads=threads)
            return
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        written = predict_files(run, inputs, out, overlay=overlay, tile=tile, checkpoint=checkpoint,
                                overwrite=overwrite, console=console)
        console.print(f"wrote {len(written)} label image(s) to {out}", highlight=False)

    guarded(run_predict, interrupted="interrupted; the files written so far are kept (a volume: run the same command "
            "again to resume)")
