"""Images for people: contact sheets of a rig's cameras and mp4 videos (written atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stag_sim.errors import OutputError, ValidationError
from stag_sim.fsutil import publish_mode

def sheet_layout(names: Sequence[str], azimuths=None) -> list[list[int]]:
    """Rows of camera indices for a contact sheet, as seen from the driver's seat.

    With ``azimuths`` (C,) [rad] (0 = forward, +pi/2 = left): the cameras looking forward (|azimuth| <= 90 deg) on
    top from left to right, the others below from rear-left to rear-right (for nuScenes: FRONT_LEFT, FRONT,
    FRONT_RIGHT over BACK_LEFT, BACK, BACK_RIGHT). Without: one row in the given order.
    """
    if azimuths is None:
        return [list(range(len(names)))]
    az = np.asarray(azimuths, np.float64)
    front = [i for i in range(len(names)) if abs(az[i]) <= np.pi / 2 + 1e-9]
    back = [i for i in range(len(names)) if i not in front]
    rows = [sorted(front, key=lambda i: -az[i]), sorted(back, key=lambda i: az[i] % (2 * np.pi))]
    return [r for r in rows if r]


def contact_sheet(images: Sequence[np.ndarray], names: Sequence[str], label: bool = True,
                  caption: str | None = None, azimuths=None) -> np.ndarray:
    """Tile the (H, W, 3) uint8 RGB images of a rig's cameras (in ``names`` order) into one image, laid out by
    :func:`sheet_layout` (pass the rig's ``azimuths``); shorter rows are padded with black.

    Cameras of different sizes are resized to the size of the first. A ``caption`` adds a bar on top.
    """
    import cv2

    if len(images) != len(names) or not images:
        raise ValidationError(f"contact sheet: {len(images)} images for {len(names)} camera names")
    h, w = images[0].shape[:2]
    layout = sheet_layout(names, azimuths)
    cols = max(len(r) for r in layout)
    rows = []
    for row in layout:
        tiles = []
        for i in row + [None] * (cols - len(row)):
            img = None if i is None else images[i]
            img = np.zeros((h, w, 3), np.uint8) if img is None else np.ascontiguousarray(img)
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            if label and i is not None:
                img = img.copy()
                scale = max(0.3, h / 450)
                cv2.putText(img, names[i], (4, int(16 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(img, names[i], (4, int(16 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
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
            raise OutputError(f"{path}: could not write PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 10.0, crf: int = 23) -> Path:
    """Write (H, W, 3) uint8 RGB frames as an H.264 mp4 that browsers play (yuv420p, moov atom first), atomically.

    The encoder is the ffmpeg binary bundled with imageio-ffmpeg (libx264); odd image sizes are cropped by one
    pixel (4:2:0 needs even sizes). ``crf``: x264 quality (lower is better, 23 its default)."""
    import imageio_ffmpeg

    path, tmp = _atomic_path(Path(path))
    writer = None
    try:
        size = None
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                size = (w - w % 2, h - h % 2)
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), size, fps=float(fps), codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                    macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", str(int(crf)), "-movflags", "+faststart", "-f", "mp4"])
                writer.send(None)  # start the encoder
            writer.send(np.ascontiguousarray(frame[: size[1], : size[0], :3]))
        if writer is None:
            raise ValidationError(f"{path}: no frames to write")
        writer.close()
        writer = None
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise OutputError(f"{path}: could not encode the video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return path
