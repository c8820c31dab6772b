"""Jet-constituent taggers for boosted-object and quark/gluon tagging (re-exports).

The models live in one module per concept; this module keeps the former import path working:

* :mod:`lhcml.models.constituent_base` — :class:`ConstituentModel` (kinematic variables by
  name, weaver-style derived features), :func:`compact_constituents`, :func:`four_vectors`;
* :mod:`lhcml.models.deepsets` — ``pfn``, ``efn`` (Particle / Energy Flow Networks);
* :mod:`lhcml.models.particlenet` — ``particlenet`` (EdgeConv, :func:`knn_indices`);
* :mod:`lhcml.models.part` — ``part`` (Particle Transformer, :func:`pair_features`);
* :mod:`lhcml.models.lola` — ``lola`` (LoLa + CoLa).
"""

from __future__ import annotations

from lhcml.models.constituent_base import (
    ConstituentModel,
    compact_constituents,
    exporting,
    four_vectors,
)
from lhcml.models.deepsets import EFN, PFN
from lhcml.models.lola import LoLa
from lhcml.models.part import (
    PairEmbed,
    ParTBlock,
    ParticleTransformer,
    pair_features,
    pair_features_relative,
)
from lhcml.models.particlenet import EdgeConvBlock, ParticleNet, knn_indices

__all__ = [
    "EFN",
    "PFN",
    "ConstituentModel",
    "EdgeConvBlock",
    "LoLa",
    "PairEmbed",
    "ParTBlock",
    "ParticleNet",
    "ParticleTransformer",
    "compact_constituents",
    "exporting",
    "four_vectors",
    "knn_indices",
    "pair_features",
    "pair_features_relative",
]
