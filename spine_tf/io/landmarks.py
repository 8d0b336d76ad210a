"""Landmarks files: the corners of the vertebral bodies around the discs.

A landmarks file is JSON (schema ``spine_tf.landmarks`` version 1)::

    {
      "format": "spine_tf.landmarks",
      "version": 1,
      "space": "world",
      "vertebrae": {
        "L5": {
          "corners": {
            "anterior_superior": [x, y, z],
            "posterior_superior": [x, y, z],
            "posterior_inferior": [x, y, z],
            "anterior_inferior": [x, y, z]
          },
          "half_width_mm": 21.5
        },
        ...
      }
    }

``space`` is ``"world"`` (NIfTI RAS+ millimetres, the scan's affine applies;
the default) or ``"voxel"`` (indices into the scan file's own array, in its
stored axis order). The four corners of a body lie on its mid-sagittal
plane. Vertebra names are ``T12``, ``L1`` .. ``L5`` and ``S1``; a disc is
localised when both of its bodies are given (L4-L5 needs L4 and L5).
``half_width_mm`` (left-right half width of the body, optional, default 20)
sets over how many slices the body is used for intensity normalisation.
"""

import dataclasses
import json

import numpy as np

from spine_tf import tasks
from spine_tf.io.atomic import atomic_path
from spine_tf.io.scan import ScanError

FORMAT = "spine_tf.landmarks"
VERSION = 1
CORNERS = ("anterior_superior", "posterior_superior", "posterior_inferior", "anterior_inferior")
VERTEBRA_NAMES = tasks.VERTEBRAE
DEFAULT_HALF_WIDTH_MM = 20.0


@dataclasses.dataclass(frozen=True)
class Vertebra:
    """Corners (4, 3) of a vertebral body, in CORNERS order, and its half width."""

    corners: np.ndarray
    half_width_mm: float = DEFAULT_HALF_WIDTH_MM


def write_landmarks(path, vertebrae):
    """Writes ``{name: Vertebra}`` (world coordinates) atomically."""
    document = {
        "format": FORMAT, "version": VERSION, "space": "world",
        "vertebrae": {
            name: {"corners": {c: [round(float(v), 4) for v in p]
                               for c, p in zip(CORNERS, vertebra.corners)},
                   "half_width_mm": round(float(vertebra.half_width_mm), 3)}
            for name, vertebra in vertebrae.items()},
    }
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)


def read_landmarks(path, scan=None):
    """Reads a landmarks file into ``{name: Vertebra}`` in world coordinates.

    Args:
        path: the JSON file.
        scan: the Scan it belongs to; needed when ``space`` is ``"voxel"``.

    Raises:
        ScanError: naming the file and what is wrong with it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ScanError(f"{path}: cannot read landmarks JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ScanError(f"{path}: not a landmarks file (expected \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise ScanError(f"{path}: landmarks version {document.get('version')!r} "
                        f"is not supported (expected {VERSION})")
    space = document.get("space", "world")
    if space not in ("world", "voxel"):
        raise ScanError(f"{path}: space must be \"world\" or \"voxel\", not {space!r}")
    if space == "voxel" and scan is None:
        raise ScanError(f"{path}: voxel-space landmarks need the scan they belong to")
    vertebrae = document.get("vertebrae")
    if not isinstance(vertebrae, dict) or not vertebrae:
        raise ScanError(f"{path}: no \"vertebrae\" given")
    out = {}
    for name, entry in vertebrae.items():
        if name not in VERTEBRA_NAMES:
            raise ScanError(f"{path}: unknown vertebra {name!r}; names are "
                            f"{', '.join(VERTEBRA_NAMES)}")
        try:
            corners = np.array([entry["corners"][c] for c in CORNERS], dtype=np.float64)
            half_width = float(entry.get("half_width_mm", DEFAULT_HALF_WIDTH_MM))
        except (KeyError, TypeError, ValueError) as error:
            raise ScanError(f"{path}: vertebra {name}: needs corners {', '.join(CORNERS)} "
                            f"as [x, y, z] ({error!r})") from None
        if corners.shape != (4, 3) or not np.all(np.isfinite(corners)):
            raise ScanError(f"{path}: vertebra {name}: corners must be four finite [x, y, z]")
        if not half_width > 0:
            raise ScanError(f"{path}: vertebra {name}: half_width_mm must be positive")
        if space == "voxel":
            homogeneous = np.column_stack([corners, np.ones(4)])
            corners = (scan.original_affine @ homogeneous.T).T[:, :3]
        out[name] = Vertebra(corners=corners, half_width_mm=half_width)
    return out
