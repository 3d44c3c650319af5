"""MMSA feature files: reader and validator, code-free npz format, synthetic generator."""

from msakit.data.mmsa import (
    SPLITS,
    FeatureFile,
    SplitData,
    convert_to_npz,
    load_feature_file,
)
from msakit.data.safe_format import save_npz
from msakit.data.synthetic import make_synthetic, write_synthetic

__all__ = [
    "SPLITS",
    "FeatureFile",
    "SplitData",
    "convert_to_npz",
    "load_feature_file",
    "make_synthetic",
    "save_npz",
    "write_synthetic",
]
