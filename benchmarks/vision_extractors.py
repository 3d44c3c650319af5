"""Seconds of compute per second of video: ``mediapipe`` vs ``opencv`` vision extraction.

Writes one test video (H.264, 640x360 at 25 fps, ``--seconds`` long, silent AAC audio) with
scikit-image's astronaut's head (her face about 120 pixels wide) drifting across a grey
background, then decodes it with msakit's decoder at ``--fps`` sampled frames a second (the
``extract`` default: 10), three ways, in turns (decode only, opencv, mediapipe, repeated
``--rounds`` times, so that a busy spell of the shared machine hits all three): process CPU
time (all threads) and wall time per second of video, best of the rounds; the extractor's own
cost is the figure minus decoding's.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/vision_extractors.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, seconds: float, *, width: int = 640, height: int = 360,
                rate: int = 25) -> Path:
    import av
    import cv2
    from skimage import data

    head = cv2.resize(data.astronaut()[20:250, 150:320], (220, 298),
                      interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=16000)  # msakit's decoder wants an audio track
        audio.layout = "mono"
        for k in range(int(seconds * rate)):
            frame = np.full((height, width, 3), 90, dtype=np.uint8)
            x = int(40 + (width - 300) * k / (seconds * rate))
            y = 30 + int(10 * np.sin(k / 10))
            frame[y : y + head.shape[0], x : x + head.shape[1]] = head
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        silence = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(int(seconds * 16000 / 1024)):
            chunk = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            chunk.sample_rate = 16000
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


def timed(video: Path, fps: float, on_frame) -> tuple[float, float, int]:
    """(process CPU seconds, wall seconds, faces found) of decoding ``video`` with
    ``on_frame``."""
    from msakit.extract.media import decode

    cpu, wall = time.process_time(), time.perf_counter()
    media = decode(str(video), fps, on_frame=on_frame)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    found = sum(1 for f in media.frames if f is not None and (on_frame is None or f.any()))
    return cpu, wall, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from msakit.extract.face_mesh import FaceMeshExtractor
    from msakit.extract.vision import FaceExtractor

    extractors = {"decode only": None, "opencv": FaceExtractor(),
                  "mediapipe": FaceMeshExtractor()}
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "clip.mp4", args.seconds)
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in extractors}
        for _ in range(args.rounds):
            for name, extractor in extractors.items():
                runs[name].append(timed(video, args.fps, extractor))
    out = {}
    for name, values in runs.items():
        cpu = min(v[0] for v in values) / args.seconds
        wall = min(v[1] for v in values) / args.seconds
        out[name] = {"cpu_s_per_video_s": round(cpu, 4), "wall_s_per_video_s": round(wall, 4),
                     "frames_with_face": values[0][2]}
    base = out["decode only"]["cpu_s_per_video_s"]
    for name in ("opencv", "mediapipe"):
        out[name]["extractor_cpu_s_per_video_s"] = round(out[name]["cpu_s_per_video_s"] - base, 4)
    ratio = out["mediapipe"]["extractor_cpu_s_per_video_s"] / max(
        out["opencv"]["extractor_cpu_s_per_video_s"], 1e-9)
    out["mediapipe_over_opencv"] = round(ratio, 2)
    out["setup"] = {"seconds": args.seconds, "fps": args.fps, "rounds": args.rounds,
                    "frames_sampled": int(args.seconds * args.fps), "size": "640x360"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
