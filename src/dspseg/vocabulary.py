"""The words every package shares: annotation kinds, scenarios, cost keys and the named column
layouts of the box, point and image-label tables. One home, below every package (imports nothing).

A record's **kind** (``ImageRecord.annotation_type``) is its strongest annotation::

    mask > box > point > image (image-level labels) > none (unlabeled)

Kinds are plain strings (they are written to ``dataset.json``, ``results.csv`` and the CLI); use the
names of :class:`Kind` in code, as MONAI's ``CommonKeys`` does.

**Tables.** Boxes, points and image labels travel as integer tables whose columns are named here
(kornia's ``Boxes(mode="xyxy")`` is the model): a record's boxes are :data:`BOX` rows
``[class, x0, y0, x1, y1]`` (half-open pixel boxes, x = column), its points :data:`POINT` rows
``[class, row, col]``; a collated batch prefixes the image index: :data:`BATCH_BOX`
``[b, class, x0, y0, x1, y1]``, :data:`BATCH_POINT` ``[b, class, row, col]``, :data:`BATCH_LABEL`
``[b, class]``.

    >>> BATCH_BOX.x0, BATCH_BOX.width, BATCH_BOX.xyxy
    (2, 6, slice(2, 6, None))
    >>> COST_KEY[Kind.IMAGE]
    'label'
"""

from __future__ import annotations


class Kind:
    """Annotation kinds, strongest first (the values are the strings of files and the CLI)."""

    MASK = "mask"
    BOX = "box"
    POINT = "point"
    IMAGE = "image"  # image-level labels
    NONE = "none"  # unlabeled


#: every kind, strongest first
KINDS: tuple[str, ...] = (Kind.MASK, Kind.BOX, Kind.POINT, Kind.IMAGE, Kind.NONE)
#: kinds that give positive bags (eq. 9); an unlabeled image gives none
POSITIVE_KINDS: tuple[str, ...] = (Kind.MASK, Kind.BOX, Kind.POINT, Kind.IMAGE)
#: what the images without a mask get in the paper's mixed scenario, dealt in this order (§5)
MIXED_CYCLE: tuple[str, ...] = (Kind.BOX, Kind.POINT, Kind.IMAGE, Kind.NONE)
#: ACR scenarios: ``mixed`` or one weak kind paired with the masks
SCENARIOS: tuple[str, ...] = ("mixed", Kind.BOX, Kind.POINT, Kind.IMAGE)

#: the ``--cost KIND=SECONDS`` key of each annotated kind (an image-level label is paid per class)
COST_KEY: dict[str, str] = {Kind.MASK: "mask", Kind.BOX: "box", Kind.POINT: "point", Kind.IMAGE: "label"}
COST_KEYS: tuple[str, ...] = tuple(COST_KEY.values())
#: the per-object count each cost key is paid for (``None``: per image)
COST_UNIT: dict[str, str | None] = {"mask": None, "box": "boxes", "point": "points", "label": "labels"}


class Layout:
    """Named columns of an integer table: ``layout.NAME`` is the column index.

        >>> POINT.row, POINT.width
        (1, 3)
    """

    def __init__(self, *columns: str) -> None:
        self.columns = tuple(columns)
        for i, name in enumerate(columns):
            setattr(self, name, i)

    @property
    def width(self) -> int:
        """Number of columns."""
        return len(self.columns)

    @property
    def xyxy(self) -> slice:
        """The ``x0, y0, x1, y1`` columns of a box layout."""
        return slice(self.columns.index("x0"), self.columns.index("y1") + 1)

    def __repr__(self) -> str:
        return f"Layout{self.columns}"


#: a record's boxes (rasterised): [class, x0, y0, x1, y1], half-open, x = column
BOX = Layout("c", "x0", "y0", "x1", "y1")
#: a record's points (rasterised): [class, row, col]
POINT = Layout("c", "row", "col")
#: collated tables: the record layouts behind a leading image-index column ``b``
BATCH_BOX = Layout("b", *BOX.columns)
BATCH_POINT = Layout("b", *POINT.columns)
BATCH_LABEL = Layout("b", "c")
