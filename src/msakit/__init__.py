"""msakit: multimodal sentiment analysis with CLGSI and ConKI, faithful and fast.

The Python API mirrors the command line::

    import msakit
    result = msakit.train("clgsi", "mosi", "unaligned_50.pkl", seeds=[1111, 1112, 1113])
    msakit.evaluate("runs/msakit/seed-1111", "unaligned_50.pkl", "test")

The losses work on their own: ``msakit.losses.IntensityGuidedContrastiveLoss`` (and the
authors' code's ``OfficialIntensityContrastiveLoss``) and
``msakit.losses.HierarchicalContrastiveLoss``.
"""

__version__ = "0.1.0"

__all__ = ["train", "evaluate", "predict", "synth", "demo", "load_checkpoint", "__version__"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    """The API is imported on first use, so that ``msakit --help`` (and a Ctrl-C while torch
    loads) is handled by the command line, not by an import."""
    if name in _API:
        from msakit import api  # lazy: `msakit --help` and a Ctrl-C while torch loads

        return getattr(api, name)
    raise AttributeError(f"module 'msakit' has no attribute {name!r}")
