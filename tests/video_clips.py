"""Short test videos built from scikit-image's astronaut photograph (no download).

A clip is ``len(positions)`` frames of a grey 160x120 canvas at 10 fps; where a position
``(x, y)`` is given, a crop of the astronaut's head (scaled to ``FACE_PATCH`` pixels wide) is
pasted with its top-left corner there, and ``None`` leaves the frame blank (no face). The audio
track is a voiced sound: a pitch contour around ``f0`` Hz (±20 %) with five harmonics and 4 Hz
amplitude modulation. Both are encoded with PyAV (H.264 + AAC in MP4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 160, 120, 10
FACE_PATCH = 80
SAMPLE_RATE = 16000
# The astronaut's face box in skimage.data.astronaut() as OpenCV's frontal cascade finds it
# (x, y, w, h in the 512x512 photo), and the crop of the photo that is pasted.
_CROP = (130, 20, 325, 210)  # x0, y0, x1, y1
_FACE = (177, 66, 95, 95)


def _patch() -> np.ndarray:
    import cv2
    from skimage import data

    x0, y0, x1, y1 = _CROP
    crop = data.astronaut()[y0:y1, x0:x1]
    height = round(FACE_PATCH * crop.shape[0] / crop.shape[1])
    return cv2.resize(crop, (FACE_PATCH, height), interpolation=cv2.INTER_AREA)


def face_centre(position: tuple[int, int]) -> tuple[float, float]:
    """Where the face's centre lands in the frame (pixels) for a patch at ``position``."""
    scale = FACE_PATCH / (_CROP[2] - _CROP[0])
    fx, fy, fw, fh = _FACE
    return (position[0] + (fx - _CROP[0] + fw / 2) * scale,
            position[1] + (fy - _CROP[1] + fh / 2) * scale)


def voiced_audio(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = f0 * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * wave * envelope).astype(np.float32)


def make_clip(path: Path, positions: list[tuple[int, int] | None], f0: float = 220.0,
              audio: np.ndarray | None = None) -> Path:
    """The clip of ``positions`` (see the module docstring); ``audio`` (16 kHz float32) replaces
    the voiced sound."""
    import av

    patch = _patch()
    sound = voiced_audio(len(positions) / FPS, f0) if audio is None else audio
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "18"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for position in positions:
            frame = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
            if position is not None:
                x, y = position
                h, w = min(patch.shape[0], HEIGHT - y), min(patch.shape[1], WIDTH - x)
                frame[y : y + h, x : x + w] = patch[:h, :w]
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = np.asarray(sound, dtype=np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp",
                layout="mono",
            )
            chunk.sample_rate = SAMPLE_RATE
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


def moving(n: int, start: tuple[int, int], step: tuple[int, int], blank_every: int = 0
           ) -> list[tuple[int, int] | None]:
    """``n`` positions moving by ``step`` per frame; every ``blank_every``-th frame blank."""
    return [
        None if blank_every and i % blank_every == blank_every - 1
        else (start[0] + i * step[0], start[1] + i * step[1])
        for i in range(n)
    ]
