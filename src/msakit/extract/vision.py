"""Per-frame face descriptors: OpenCV's bundled Haar cascades, or OpenFace 2.0's CSVs (MediaPipe's
Face Mesh: :mod:`msakit.extract.face_mesh`).

``opencv`` (the default where MediaPipe is not installed): in every sampled frame the largest
face found by ``haarcascade_frontalface_default`` gives one vector of :data:`OPENCV_DIM` values:

====================  ====  ========================================================
part                  size  values
====================  ====  ========================================================
box                   6     x, y, width, height, centre x, centre y (÷ frame size)
face score            1     the cascade's level weight (confidence) of the face
faces                 1     number of faces found in the frame
brightness            1     mean grey level of the face box (÷ 255)
eyes                  9     eye count ÷ 2; left and right eye: centre x, centre y,
                            width (÷ face size, in the face box) and level weight
smile                 6     found, level weight, centre x, centre y, width, height
HOG                   144   9 unsigned orientations × 4×4 cells of the 64×64 crop
LBP                   40    rotation-invariant uniform LBP (10 bins) × 2×2 cells
====================  ====  ========================================================

Eyes are searched in the upper 60 % of the face and a smile in the lower half. The crop for
HOG and LBP is aligned: with two eyes found, the frame is rotated about the face centre so the
eyes are level, then the face box is cut, resized to 64×64 and histogram-equalised. Frames
without a face give no vector (the clip's sequence skips them).

``openface``: reads OpenFace 2.0 ``FeatureExtraction`` CSVs (``DIR/<id>.csv`` or
``DIR/<video stem>.csv``) and keeps, per frame with ``success == 1``, the columns of
:data:`OPENFACE_COLUMNS`: tracking confidence (1), gaze (8), head pose (6), rigid shape
parameters (6), 68 2-D landmarks (136), action unit intensities (17) and presences (18): 192
values.

Both widths (208 and 192) are multiples of 8, so the attention heads of the MOSI presets
divide them. The cascades ship in the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``): nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from msakit.core.errors import MsakitError
from msakit.data.tables import read_csv
from msakit.extract import require
from msakit.extract.face_mesh import FaceMeshExtractor
from msakit.extract.media import ClipError

CROP = 64
HOG_CELLS, HOG_BINS = 4, 9
LBP_CELLS, LBP_BINS = 2, 10
GEOMETRY_DIM = 6 + 1 + 1 + 1 + 9 + 6  # box, score, faces, brightness, eyes, smile
OPENCV_DIM = GEOMETRY_DIM + HOG_CELLS * HOG_CELLS * HOG_BINS + LBP_CELLS * LBP_CELLS * LBP_BINS

_GAZE = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
_POSE = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
_LANDMARKS = [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
_AU_R = [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)]
_AU_C = [f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28,
                                  45)]
_RIGID = ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"]
OPENFACE_COLUMNS = ("confidence", *_GAZE, *_POSE, *_RIGID, *_LANDMARKS, *_AU_R, *_AU_C)
OPENFACE_DIM = len(OPENFACE_COLUMNS)

# Rotation-invariant uniform LBP: uniform codes (<= 2 transitions) map to their number of ones
# (0..8), every other code to 9.
_LBP_TABLE = np.array(
    [
        bin(c).count("1")
        if sum(((c >> i) & 1) != ((c >> ((i + 1) % 8)) & 1) for i in range(8)) <= 2
        else 9
        for c in range(256)
    ],
    dtype=np.int64,
)


class FaceExtractor:
    """Callable: RGB frame (H, W, 3) uint8 -> (:data:`OPENCV_DIM`,) float32, or None (no face)."""

    dim = OPENCV_DIM

    def __init__(self) -> None:
        cv2 = require("cv2")
        self._cv2 = cv2
        root = getattr(getattr(cv2, "data", None), "haarcascades", "")
        self._face = self._cascade(root, "haarcascade_frontalface_default.xml")
        self._eye = self._cascade(root, "haarcascade_eye.xml")
        self._smile = self._cascade(root, "haarcascade_smile.xml")

    def _cascade(self, root: str, name: str):
        path = os.path.join(root, name)
        cascade = self._cv2.CascadeClassifier(path) if os.path.isfile(path) else None
        if cascade is None or cascade.empty():
            raise MsakitError(
                f"OpenCV's Haar cascade {name} is not installed (cv2.data.haarcascades = "
                f"{root!r}); install a wheel that ships them: pip install "
                f"'opencv-python-headless>=4.8,<5'"
            )
        return cascade

    @staticmethod
    def _detect(cascade, gray, min_neighbors: int, min_size: int):
        """Boxes (x, y, w, h) and level weights, best first."""
        boxes, _, weights = cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=min_neighbors,
            minSize=(min_size, min_size), outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return []
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        pairs = [(tuple(int(v) for v in b), float(w)) for b, w in zip(boxes, weights, strict=True)]
        return sorted(pairs, key=lambda p: -p[1])

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        cv2 = self._cv2
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        faces = self._detect(self._face, gray, 5, max(24, round(0.08 * min(height, width))))
        if not faces:
            return None
        (x, y, w, h), score = max(faces, key=lambda p: (p[0][2] * p[0][3], p[1]))
        box = [x / width, y / height, w / width, h / height, (x + w / 2) / width,
               (y + h / 2) / height]

        face = gray[y : y + h, x : x + w]
        upper = face[: int(0.6 * h)]
        eyes = self._detect(self._eye, upper, 3, max(6, w // 8))[:2]
        eyes = sorted(eyes, key=lambda p: p[0][0])  # left to right in the image
        eye_values = [len(eyes) / 2.0]
        centres = []
        for k in range(2):
            if k < len(eyes):
                (ex, ey, ew, eh), ew_score = eyes[k]
                cx, cy = (ex + ew / 2) / w, (ey + eh / 2) / h
                centres.append((x + ex + ew / 2, y + ey + eh / 2))
                eye_values += [cx, cy, ew / w, ew_score]
            else:
                eye_values += [0.0, 0.0, 0.0, 0.0]

        lower_top = h // 2
        smiles = self._detect(self._smile, face[lower_top:], 15, max(8, w // 5))
        if smiles:
            (sx, sy, sw, sh), s_score = smiles[0]
            smile = [1.0, s_score, (sx + sw / 2) / w, (lower_top + sy + sh / 2) / h, sw / w,
                     sh / h]
        else:
            smile = [0.0] * 6

        crop = self._aligned_crop(gray, (x, y, w, h), centres)
        values = np.concatenate([
            np.array(box + [score, len(faces), float(face.mean()) / 255.0] + eye_values + smile,
                     dtype=np.float32),
            _hog(crop),
            _lbp(crop),
        ])
        return values.astype(np.float32)

    def _aligned_crop(self, gray, box, centres) -> np.ndarray:
        cv2 = self._cv2
        x, y, w, h = box
        if len(centres) == 2:
            (lx, ly), (rx, ry) = centres
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
            if abs(angle) > 1.0:
                rotation = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, 1.0)
                gray = cv2.warpAffine(gray, rotation, (gray.shape[1], gray.shape[0]),
                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        crop = cv2.resize(gray[y : y + h, x : x + w], (CROP, CROP), interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(crop)


def _hog(crop: np.ndarray) -> np.ndarray:
    """Magnitude-weighted histograms of unsigned gradient orientation in 4×4 cells (L2-Hys)."""
    img = crop.astype(np.float32)
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = img[:, 2:] - img[:, :-2]
    gy[1:-1, :] = img[2:, :] - img[:-2, :]
    magnitude = np.hypot(gx, gy)
    orientation = np.mod(np.degrees(np.arctan2(gy, gx)), 180.0)
    bins = np.minimum((orientation / (180.0 / HOG_BINS)).astype(np.int64), HOG_BINS - 1)
    cell = CROP // HOG_CELLS
    cells = (np.arange(CROP) // cell)
    index = (cells[:, None] * HOG_CELLS + cells[None, :]) * HOG_BINS + bins
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(),
                       minlength=HOG_CELLS * HOG_CELLS * HOG_BINS)
    # numpy's stub types bincount as ints; with weights it returns floats
    hist /= np.linalg.norm(hist) + 1e-6  # type: ignore[misc]
    hist = np.minimum(hist, 0.2)
    hist /= np.linalg.norm(hist) + 1e-6  # type: ignore[misc]
    return hist.astype(np.float32)


def _lbp(crop: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform LBP histograms (8 neighbours, radius 1) in 2×2 cells."""
    img = crop.astype(np.int16)
    centre = img[1:-1, 1:-1]
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    code = np.zeros(centre.shape, dtype=np.int64)
    for bit, (dy, dx) in enumerate(offsets):
        neighbour = img[1 + dy : img.shape[0] - 1 + dy, 1 + dx : img.shape[1] - 1 + dx]
        code |= (neighbour >= centre).astype(np.int64) << bit
    labels = _LBP_TABLE[code]
    size = labels.shape[0]
    cells = np.minimum(np.arange(size) * LBP_CELLS // size, LBP_CELLS - 1)
    index = (cells[:, None] * LBP_CELLS + cells[None, :]) * LBP_BINS + labels
    hist = np.bincount(index.ravel(), minlength=LBP_CELLS * LBP_CELLS * LBP_BINS).astype(
        np.float32
    )
    per_cell = hist.reshape(LBP_CELLS * LBP_CELLS, LBP_BINS)
    per_cell /= per_cell.sum(axis=1, keepdims=True) + 1e-6
    return per_cell.reshape(-1)


def face_source(kind: str, openface_dir: str | os.PathLike[str] | None = None):
    """The per-frame extractor of ``kind`` (mediapipe, opencv), or the OpenFace CSV reader."""
    if kind == "mediapipe":
        return FaceMeshExtractor()
    if kind == "opencv":
        return FaceExtractor()
    assert openface_dir is not None  # corpus._check_request refuses openface without one
    return OpenFaceReader(openface_dir)


def faces_in(vision: np.ndarray, kind: str) -> int:
    """How many rows of one clip's vision sequence (its valid rows) show a face: every row but
    mediapipe's frames without one (``face_present``, column 0, is 0)."""
    if kind == "mediapipe":
        return int((vision[:, 0] > 0.5).sum())
    return int(vision.shape[0])


def face_sequence(extractor: FaceExtractor, frames: list[np.ndarray]) -> np.ndarray:
    """(faces, dim) float32: the vectors of the frames with a face, in time order."""
    return stack_faces([extractor(f) for f in frames], extractor.dim)


def stack_faces(vectors: list[np.ndarray | None], dim: int) -> np.ndarray:
    """(faces, dim) float32 from per-frame vectors, frames without a face (None) left out."""
    kept = [v for v in vectors if v is not None]
    return np.stack(kept) if kept else np.zeros((0, dim), dtype=np.float32)


class OpenFaceReader:
    """OpenFace 2.0 per-frame CSVs in one folder -> (frames, :data:`OPENFACE_DIM`) arrays."""

    dim = OPENFACE_DIM

    def __init__(self, folder: str | os.PathLike[str], file: str | os.PathLike[str] | None = None
                 ) -> None:
        self.folder = Path(folder)
        self.file = None if file is None else Path(file)  # one clip's CSV (predict --video)

    def find(self, clip_id: str, video: str) -> Path:
        if self.file is not None:
            return self.file
        for name in (f"{clip_id}.csv", f"{Path(video).stem}.csv"):
            if (self.folder / name).is_file():
                return self.folder / name
        raise ClipError(f"no OpenFace CSV {clip_id}.csv or {Path(video).stem}.csv in {self.folder}")

    def read(self, path: str | os.PathLike[str], fps: float) -> np.ndarray:
        """The kept columns of the frames OpenFace tracked, at most one per ``1/fps`` interval."""
        try:
            rows = read_csv(path)
        except MsakitError as exc:
            raise ClipError(str(exc)) from None
        if not rows:
            raise ClipError(f"{path}: empty OpenFace CSV")
        header = [name.strip() for name in rows[0]]
        where = {name: i for i, name in enumerate(header)}
        missing = [c for c in (*OPENFACE_COLUMNS, "timestamp", "success") if c not in where]
        if missing:
            raise ClipError(
                f"{path}: not an OpenFace 2.0 FeatureExtraction CSV (no column {missing[0]}; run "
                "FeatureExtraction with -2Dfp -pose -aus -gaze)"
            )
        columns = [where[c] for c in OPENFACE_COLUMNS]
        out, last_slot = [], -1
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            try:
                if float(row[where["success"]]) < 0.5:
                    continue
                slot = math.floor(float(row[where["timestamp"]]) * fps + 1e-6)
                if slot <= last_slot:
                    continue
                out.append([float(row[i]) for i in columns])
            except (ValueError, IndexError, OverflowError):  # OverflowError: an infinite time
                raise ClipError(f"{path}: line {line} is not a row of numbers") from None
            last_slot = slot
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.nan_to_num(np.asarray(out, dtype=np.float32))
