"""Contrastive losses of the two methods, standalone ``nn.Module``s with no model imports.

- :class:`IntensityGuidedContrastiveLoss`: CLGSI, contrastive learning guided by sentiment
  intensity, as the paper defines it; :class:`OfficialIntensityContrastiveLoss`: the same
  loss as the authors' released code computes it.
- :class:`HierarchicalContrastiveLoss`: ConKI, hierarchical contrastive learning.
- :func:`masked_reconstruction_loss`: TFR-Net's reconstruction of the dropped positions.
"""

from msakit.losses.hierarchical_contrastive import (
    HierarchicalContrastiveLoss,
    hierarchical_pair_masks,
)
from msakit.losses.intensity_contrastive import (
    IntensityGuidedContrastiveLoss,
    OfficialIntensityContrastiveLoss,
    intensity_pair_masks,
)
from msakit.losses.reconstruction import masked_reconstruction_loss

__all__ = [
    "HierarchicalContrastiveLoss",
    "IntensityGuidedContrastiveLoss",
    "OfficialIntensityContrastiveLoss",
    "hierarchical_pair_masks",
    "intensity_pair_masks",
    "masked_reconstruction_loss",
]
