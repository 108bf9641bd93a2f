"""A user's error raised in a DataLoader worker reaches the main process as itself, one sentence.

torch re-raises a worker's exception as ``type(text)`` whose text is the worker's traceback (or as a
RuntimeError holding it, when the class takes other arguments), so ``dspseg train`` would print a
traceback for what is one sentence in the main process (a chunk that cannot be read:
:class:`~dspseg.errors.VolumeReadError`). Instead the worker returns it: :class:`CarryErrors` wraps
the dataset and turns a :class:`~dspseg.errors.UserError` raised by an item into a :class:`Failed`
item, :func:`collate_carrying` sends the first one on in place of the batch, and :func:`raise_failed`
raises it again in the main process (user errors pickle whole). Without workers it changes nothing:
the error is raised where it was, one step later.

    >>> from dspseg.errors import DatasetError
    >>> class Bad:
    ...     def __len__(self): return 1
    ...     def __getitem__(self, i): raise DatasetError("no such section")
    >>> raise_failed(collate_carrying([CarryErrors(Bad())[0]], collate=list))
    Traceback (most recent call last):
    dspseg.errors.DatasetError: no such section
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from dspseg.errors import UserError


@dataclass
class Failed:
    """An item (or a batch) whose reading raised ``error``."""

    error: UserError


class CarryErrors(Dataset):
    """``dataset`` whose items are :class:`Failed` where reading them raised a user error."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except UserError as e:
            return Failed(e)


def collate_carrying(items: list[Any], collate: Callable[[list[Any]], Any]) -> Any:
    """``collate(items)``, or the first :class:`Failed` item among them."""
    failed = next((it for it in items if isinstance(it, Failed)), None)
    return failed if failed is not None else collate(items)


def raise_failed(batch: Any) -> Any:
    """``batch``, or its error raised (in the main process) when it is a :class:`Failed` one."""
    if isinstance(batch, Failed):
        raise batch.error
    return batch
