"""``dspseg validate`` for volume records (:mod:`dspseg.data.volume_records`): metadata, one section.

For a record naming a section of a volume it checks, reading metadata only: the volume's URL stays
inside the dataset folder or is a URL of a scheme dspseg reads whose filesystem package is installed
and which answers, the array exists and opens (its axes, level, region), the section index is in
range, a ``sections`` range is not empty; for a mask from a label volume: the label volume opens, has
the image's shape along every spatial axis and its voxel size, and its ``classes`` name classes of
the dataset. The one array read is the record's mask
section (its values are checked like a mask file's), never a whole volume. Every finding is one
:class:`~dspseg.data.problems.Problem` with the file (the volume's URL), the field and the fix.
"""

from __future__ import annotations

import numpy as np

from dspseg.data.manifest import ImageRecord
from dspseg.data.volume_records import VolumeMask, resolve_ref
from dspseg.data.volumes import Volume, VolumeRef, open_volume
from dspseg.errors import PathEscapeError, VolumeError, VolumeReadError

_MIN_SIDE = 16


class VolumeChecks:
    """Mixin of :class:`~dspseg.data.validate.DatasetChecker`: the checks of volume records.
    Uses the checker's ``m`` (manifest), ``add`` and summary counters; opened volumes are kept by key."""

    _opened: dict[str, Volume | None]

    def _open(self, where: str, field: str, ref: VolumeRef) -> Volume | None:
        """The opened volume of ``ref`` (once per reference), or None (reported under ``field``)."""
        if not hasattr(self, "_opened"):
            self._opened = {}
        key = ref.key()
        if key in self._opened:
            return self._opened[key]
        vol = None
        try:
            vol = open_volume(resolve_ref(self.m.root, ref))
        except PathEscapeError as e:
            if "://" in ref.url:  # a scheme dspseg does not read (file://, ftp://...)
                self.add(where, f"{field}.url", f"'{ref.url}' is a {ref.url.split('://')[0]}:// URL, which dspseg "
                         "does not read", "write a path relative to dataset.json, or give an s3://, gs:// or https:// URL")
            else:
                self.add(where, f"{field}.url", f"the volume path leaves the dataset folder: {e}",
                         "keep volumes inside the folder holding dataset.json and write paths relative to it, "
                         "or give an s3://, gs:// or https:// URL")
        except VolumeError as e:
            self.add(where, f"{field}.{e.field}" if e.field != "url" else f"{field}.url", e.reason, e.fix, file=e.where)
        self._opened[key] = vol
        return vol

    def _check_volume_record(self, where: str, rec: ImageRecord) -> tuple[tuple[int, int, int] | None, np.ndarray | None]:
        """Check a volume record; returns the section's (1, H, W) (None if unusable) and its mask
        section as class ids (None without a label-volume mask or when unusable)."""
        vol = self._open(where, "volume", rec.volume)
        if vol is None:
            return None, None
        axis = rec.section_axis
        if rec.sections is not None:
            try:
                if not rec.sections.indices(vol.size(axis), rec.volume.url):
                    self.add(where, "sections", "the range holds no section once 'exclude' is left out",
                             "widen start/stop or remove the entry", file=rec.volume.url)
            except VolumeError as e:
                self.add(where, f"sections.{e.field}", e.reason, e.fix, file=rec.volume.url)
            return None, None
        if not 0 <= rec.index < vol.size(axis):
            self.add(where, "index", f"section {rec.index} is outside the {vol.size(axis)} sections along {axis} "
                     f"of the volume", f"use 0 <= index < {vol.size(axis)}, or another axis", file=rec.volume.url)
            return None, None
        h, w = vol.section_shape(axis)
        self.sizes[(h, w)] += 1
        self.channels[1] += 1
        self.channel_of.append((where, rec.volume.url, 1))
        if min(h, w) < _MIN_SIDE:
            self.add(where, "volume", f"the sections along {axis} are only {h}x{w} pixels (rows x columns)",
                     f"use sections of at least {_MIN_SIDE}x{_MIN_SIDE}, or another axis", "warning", rec.volume.url)
        if not isinstance(rec.mask, VolumeMask):
            return (1, h, w), None
        labels = self._open(where, "mask.volume", rec.mask.volume)
        if labels is None or not self._labels_agree(where, vol, labels, rec.mask.volume.url):
            return (1, h, w), None
        problems = rec.mask.class_problems(self.m.classes)
        for field, reason, fix in problems:
            self.add(where, field, reason, fix)
        if problems:
            return (1, h, w), None
        try:
            stored = labels.section(axis, rec.index)
        except VolumeReadError as e:  # a store that stops answering, a corrupt chunk: the user's to fix, not a bug
            self.add(where, "mask.volume.url" if e.transient else "mask.volume",
                     f"section {rec.index}, chunk {e.chunk}: {e.reason}", e.fix, file=e.where)
            return (1, h, w), None
        return (1, h, w), rec.mask.class_ids(stored, self.m.classes, self.m.ignore_index)

    def _labels_agree(self, where: str, image: Volume, labels: Volume, url: str) -> bool:
        """Whether the label volume has the image's size and voxel size along every spatial axis."""
        size = {a: image.size(a) for a in "zyx"}
        lsize = {a: labels.size(a) for a in "zyx"}
        if size != lsize:
            self.add(where, "mask.volume", f"the label volume is {' x '.join(str(lsize[a]) for a in 'zyx')} (z x y x x) "
                     f"but the image volume is {' x '.join(str(size[a]) for a in 'zyx')}",
                     "name the label volume of this image at the same multiscale level", file=url)
            return False
        vox = dict(zip(image.spatial_axes, image.voxel_size[-3:]))
        lvox = dict(zip(labels.spatial_axes, labels.voxel_size[-3:]))
        if not all(np.isclose(vox[a], lvox[a]) for a in "zyx"):
            self.add(where, "mask.volume", f"the label volume's voxel size {tuple(lvox[a] for a in 'zyx')} differs "
                     f"from the image's {tuple(vox[a] for a in 'zyx')} (z, y, x)",
                     "name the label level whose voxel size matches the image's (the same 'level')", file=url)
            return False
        return True
