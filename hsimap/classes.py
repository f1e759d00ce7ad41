"""Classes of a map: ids, names and colours, and the split codes of a training run.

The bottom of the package with :mod:`hsimap.errors`: readers, writers, the model card and the
workflows all speak of classes through :class:`ClassTable`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from hsimap.errors import HsimapError


class Split(IntEnum):
    """Codes of ``split.tif``: which labelled pixels trained, validated or tested a model."""

    TRAIN = 1
    VALIDATION = 2
    TEST = 3


# A qualitative palette that stays readable on a map (tab20-like, starting with strong hues).
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


@dataclass
class ClassTable:
    """Class ids (1..C; 0 is no data / unclassified), names and RGB colours."""

    ids: list[int]
    names: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    zero: str = "unclassified"   # what value 0 means in a raster of this table
    def __post_init__(self) -> None:
        if not self.colors:
            self.colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(self.ids))]

    @classmethod
    def default(cls, ids: Sequence[int]) -> ClassTable:
        return cls([int(i) for i in ids], [f"class {int(i)}" for i in ids])

    @classmethod
    def from_csv(cls, path: str | Path) -> ClassTable:
        """Read ``id,name,color`` rows; color as ``#rrggbb`` or ``r g b``; header optional."""
        ids, names, colors = [], [], []
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().lower() in ("id", "value", "class"):
                    continue
                try:
                    ids.append(int(row[0]))
                except ValueError:
                    raise HsimapError(f"{path}: class id {row[0]!r} is not an integer") from None
                names.append(row[1].strip() if len(row) > 1 else f"class {row[0]}")
                colors.append(parse_color(row[2]) if len(row) > 2 and row[2].strip() else None)
        if not ids:
            raise HsimapError(f"{path}: no classes (expected rows id,name,color)")
        table = cls(ids, names)
        table.colors = [c or d for c, d in zip(colors, table.colors, strict=True)]
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "names": self.names, "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassTable:
        return cls(list(d["ids"]), list(d["names"]), [tuple(c) for c in d["colors"]])

    @property
    def named(self) -> bool:
        """Whether the classes carry real names (not only the default "class N")."""
        return any(n != f"class {i}" for i, n in zip(self.ids, self.names, strict=True))

    def name_of(self, class_id: int) -> str:
        return self.names[self.ids.index(class_id)] if class_id in self.ids else f"class {class_id}"

    def ids_by_name(self) -> dict[str, int]:
        """Each class id under its :func:`name_key`."""
        return {name_key(n): i for i, n in zip(self.ids, self.names, strict=True)}

    def renumber_by_name(self, labels: np.ndarray, names: dict[int, str],
                         what: str) -> np.ndarray:
        """``labels`` (ids of another numbering, ``names`` giving each id's name) in this
        table's ids, matched by :func:`name_key`; 0 stays 0. A name this table lacks is
        refused, naming ``what`` holds it."""
        mine = self.ids_by_name()
        missing = [n for n in names.values() if name_key(n) not in mine]
        if missing:
            raise HsimapError(f"{what}: classes {', '.join(map(repr, missing))} are not among "
                              f"{', '.join(map(repr, self.names))} (classes are matched by "
                              "name, case and spacing aside)")
        lut = np.zeros(max(names) + 1, dtype=np.int64)
        for i, n in names.items():
            lut[i] = mine[name_key(n)]
        inside = (labels > 0) & (labels < len(lut))
        return np.where(inside, lut[np.where(inside, labels, 0)], 0).astype(labels.dtype)


def name_key(name: object) -> str:
    """How class names are compared, everywhere (labels against a CSV, a reference against a
    map, the classes of several flight lines, expected accuracies by name): case and
    surrounding or repeated spaces aside."""
    return " ".join(str(name).split()).casefold()


def parse_color(text: str) -> tuple[int, int, int]:
    t = text.strip()
    if t.startswith("#") and len(t) == 7:
        return (int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16))
    parts = t.replace(",", " ").split()
    if len(parts) == 3:
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    raise HsimapError(f"colour {text!r}: expected #rrggbb or 'r g b'")


def class_dtype(table: ClassTable) -> str:
    """The smallest palette-capable GeoTIFF type that holds every id (ids above 65,535 are
    refused where labels are read)."""
    top = max(table.ids)
    if top > 65535:
        raise HsimapError(f"class id {top} does not fit a class map (at most 65,535)")
    return "uint8" if top <= 255 else "uint16"
