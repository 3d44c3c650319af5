"""msakit: multimodal sentiment analysis with CLGSI and ConKI, faithful and fast.

The Python API mirrors the command line::

    import msakit
    result = msakit.train("clgsi", "mosi", "unaligned_50.pkl", seeds=[1111, 1112, 1113])
    msakit.evaluate("runs/msakit/seed-1111/best.pt", "unaligned_50.pkl", "test")

The losses work on their own: ``msakit.losses.IntensityGuidedContrastiveLoss`` and
``msakit.losses.HierarchicalContrastiveLoss``.
"""

__version__ = "0.1.0"

from msakit.api import demo, evaluate, load_checkpoint, predict, synth, train  # noqa: E402

__all__ = ["train", "evaluate", "predict", "synth", "demo", "load_checkpoint", "__version__"]
