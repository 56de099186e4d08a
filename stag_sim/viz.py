"""Images for people: contact sheets of the six cameras and mp4 videos (written atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stag_sim.camera import CAMERA_NAMES
from stag_sim.errors import StagSimError
from stag_sim.fsutil import publish_mode

#: Contact-sheet layout: the front three cameras on top, the back three below, as seen from the driver's seat.
SHEET_LAYOUT = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))


def contact_sheet(images: Sequence[np.ndarray], names: Sequence[str] = CAMERA_NAMES, label: bool = True,
                  caption: str | None = None) -> np.ndarray:
    """Tile six (H, W, 3) uint8 RGB camera images (in ``names`` order) into one (2H, 3W, 3) image.

    Cameras of different sizes are resized to the size of the first. A ``caption`` adds a bar on top.
    """
    import cv2

    by_name = dict(zip(names, images))
    h, w = images[0].shape[:2]
    rows = []
    for row in SHEET_LAYOUT:
        tiles = []
        for name in row:
            img = by_name.get(name)
            img = np.zeros((h, w, 3), np.uint8) if img is None else np.ascontiguousarray(img)
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            if label:
                img = img.copy()
                scale = max(0.3, h / 450)
                cv2.putText(img, name, (4, int(16 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(img, name, (4, int(16 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(img)
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    if caption:
        bar = np.full((24, sheet.shape[1], 3), 30, np.uint8)
        cv2.putText(bar, caption, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        sheet = np.concatenate([bar, sheet], axis=0)
    return sheet


def _atomic_path(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    publish_mode(tmp)
    return path, Path(tmp)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    import cv2

    path, tmp = _atomic_path(Path(path))
    try:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise StagSimError(f"{path}: could not write PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """Write (H, W, 3) uint8 RGB frames as an mp4 (MPEG-4 part 2, plays everywhere), atomically."""
    import cv2

    path, tmp = _atomic_path(Path(path))
    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w - w % 2, h - h % 2))
                if not writer.isOpened():
                    raise StagSimError(f"{path}: OpenCV could not open an mp4 writer")
            writer.write(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2, ::-1]))
        if writer is None:
            raise StagSimError(f"{path}: no frames to write")
        writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return path
