"""Generative fast-calorimeter models (issue 15): the common interface
(:class:`~lhcml.models.fastcalo.base.FastCaloGenerator`) and the VAE, GAN, flow and flow-matching
models registered as ``fastcalo_vae``, ``fastcalo_gan``, ``fastcalo_flow``, ``fastcalo_fm``.
"""

from lhcml.models.fastcalo.base import FastCaloGenerator, TrainPhase

__all__ = ["FastCaloGenerator", "TrainPhase"]
