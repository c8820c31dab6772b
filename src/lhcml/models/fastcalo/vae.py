"""Conditional VAE for calorimeter showers, as ATLAS's fast-shower VAE (``fastcalo_vae``).

The ATLAS note (``docs/references.md §15``: ATL-SOFT-PUB-2018-001) trains a variational
auto-encoder on photon showers in the EM barrel, conditioned on the incident energy, with the
voxel energies normalised to the incident energy, a sigmoid output layer and a loss made of a
reconstruction term (binary cross-entropy on the normalised voxel energies), the Kullback-Leibler
divergence of the latent posterior from a standard normal prior, and extra terms that constrain
the reconstructed energy of every layer and the total energy. New showers are decoded from
latent points drawn from the prior. This module implements that model:

* encoder ``q(z | x, E)``: an MLP on ``[log(1 + u / u_0), c]`` (``u`` = voxel energy / E_inc,
  ``u_0`` = :data:`ENCODER_FRACTION_SCALE`, ``c`` = log-E conditioning of
  :meth:`~lhcml.models.fastcalo.base.FastCaloGenerator.condition`) giving the mean and
  log-variance of a diagonal Gaussian; the log compresses the voxels' dynamic range for the
  encoder only (our choice; the decoder's output space is the note's);
* decoder ``p(x | z, E)``: an MLP on ``[z, c]`` with a sigmoid output ``t_v`` in (0, 1); the
  voxel energy is ``t_v * m_v * E_inc`` with ``m_v`` the largest ``u_v`` of the training sample
  (a buffer filled by :meth:`FastCaloVAE.prepare`), so every voxel is >= 0 and normalised to the
  incident energy as in the note, and the BCE compares ``t_v`` with ``u_v / m_v``, values that
  span [0, 1] in every voxel (on plain fractions, O(1/V) each, the BCE barely registers a
  shower's fluctuations; our choice);
* loss per shower: ``w_reco * BCE(t_hat, u / m) + beta_kl * KL + w_layer * sum_l |U_l - U_hat_l| +
  w_total * |U - U_hat|`` (``U_l``: layer energy / E_inc, ``U``: total / E_inc), averaged over
  the batch; the weights are hyper-parameters (defaults: our choice, see the parameters);
* :meth:`encode` / :meth:`decode` expose the latent space; :meth:`sample` decodes the noise (a
  latent point) and zeroes voxels below ``threshold_mev`` (a readout threshold: a sigmoid never
  gives exactly zero, while detailed showers are sparse).

Measured behaviour (``tests/test_fastcalo_models.py``; lhcml's photon sample): with the plain
ELBO (``beta_kl = 1``) the model reproduces the mean response and the mean layer fractions at
every energy, but most latent dimensions stay inactive (KL ~ 0.01 nats each: the decoder needs
little from the latent point once it knows E), so shower-to-shower fluctuations are only
partly modelled; with ``beta_kl = 0.01`` the latent space is used (KL 0.1-10 nats per
dimension) but the prior no longer covers the encoded data and showers sampled from it are far
off (response 0.2 instead of 0.98). That is the VAE's known trade-off, not tuned away here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator
from lhcml.models.layers import MLP
from lhcml.models.registry import register_model

#: voxel fraction (of E_inc) at which the encoder's log(1 + u / u_0) input turns logarithmic
#: (about the energy of a typical voxel outside the core; our choice)
ENCODER_FRACTION_SCALE = 1e-3
#: floor of the per-voxel scale (fraction of E_inc) for voxels never hit in training; our choice
MIN_VOXEL_MAX = 1e-6


@register_model("fastcalo_vae")
class FastCaloVAE(FastCaloGenerator):
    """Conditional VAE with layer-energy constraints (see the module docstring).

    Parameters
    ----------
    n_voxels, layer_sizes, e_min_gev, e_max_gev
        See :class:`~lhcml.models.fastcalo.base.FastCaloGenerator`.
    latent_dim
        Latent dimension (= ``noise_dim``). Default 10 (our choice: a handful of shower degrees
        of freedom - energy sharing between layers, depth, width, position - with room to spare).
    hidden
        Encoder hidden layers; the decoder uses them reversed. Default ``(256, 128, 64)`` (our
        choice: a funnel from O(100-500) voxels to the latent space, small enough for < 1 ms per
        shower on one CPU thread).
    act
        Hidden activation (:func:`lhcml.models.layers.activation`).
    beta_kl
        Weight of the KL term (1 = the plain ELBO). Default 1.0.
    w_reco
        Weight of the summed voxel BCE. Default 1.0.
    w_layer, w_total
        Weights of the layer-energy and total-energy constraints (in units of E_inc). Default
        10.0 each (our choice: the BCE of a shower changes by O(0.01) nats when 1 % of E_inc moves
        between layers; these terms make such a shift cost O(0.1)).
    threshold_mev
        Voxels below this energy (MeV) are set to zero when sampling. Default 0 (off).
    """

    def __init__(
        self,
        n_voxels: int,
        layer_sizes: Sequence[int],
        e_min_gev: float,
        e_max_gev: float,
        latent_dim: int = 10,
        hidden: Sequence[int] = (256, 128, 64),
        act: str = "relu",
        beta_kl: float = 1.0,
        w_reco: float = 1.0,
        w_layer: float = 10.0,
        w_total: float = 10.0,
        threshold_mev: float = 0.0,
    ) -> None:
        super().__init__(n_voxels, layer_sizes, e_min_gev, e_max_gev)
        hidden = [int(h) for h in hidden]
        if latent_dim <= 0 or not hidden or any(h <= 0 for h in hidden):
            raise ConfigError(
                f"fastcalo_vae needs latent_dim > 0 and positive hidden sizes, got {latent_dim}, {hidden}"
            )
        if min(beta_kl, w_reco, w_layer, w_total, threshold_mev) < 0:
            raise ConfigError(
                "fastcalo_vae: beta_kl, w_reco, w_layer, w_total and threshold_mev must be >= 0"
            )
        self.noise_dim = int(latent_dim)
        self.latent_dim = int(latent_dim)
        self.beta_kl, self.w_reco = float(beta_kl), float(w_reco)
        self.w_layer, self.w_total = float(w_layer), float(w_total)
        self.threshold_gev = float(threshold_mev) * 1e-3
        self.register_buffer("voxel_max", torch.ones(n_voxels))
        self.encoder = MLP(n_voxels + 1, 2 * latent_dim, hidden=hidden, act=act)
        self.decoder = MLP(latent_dim + 1, n_voxels, hidden=hidden[::-1], act=act)
        with (
            torch.no_grad()
        ):  # start at voxel fractions 1 / V (a shower of E_inc), not sigmoid(0) = 1/2
            self.decoder[-1].bias.fill_(-math.log(n_voxels - 1) if n_voxels > 1 else 0.0)

    @torch.no_grad()
    def prepare(self, energy_gev: Tensor, showers: Tensor) -> None:
        """Per-voxel scale: the largest ``E_v / E_inc`` of the training sample (floored)."""
        u = showers.double() / energy_gev.reshape(-1, 1).double()
        self.voxel_max.copy_(u.max(0).values.clamp(min=MIN_VOXEL_MAX, max=1.0).float())

    # -- latent space -------------------------------------------------------------------------
    def encode(self, energy_gev: Tensor, showers: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance ``(N, latent_dim)`` of ``q(z | shower, E)``."""
        u = showers.float() / energy_gev.reshape(-1, 1).float()
        h = torch.cat(
            [torch.log1p(u.clamp(min=0) / ENCODER_FRACTION_SCALE), self.condition(energy_gev)], 1
        )
        mu, logvar = self.encoder(h).chunk(2, dim=1)
        return mu, logvar

    def decode_fractions(self, energy_gev: Tensor, z: Tensor) -> Tensor:
        """Voxel energies as fractions of E_inc ``(N, V)`` in (0, 1) for latent points ``z``."""
        return (
            torch.sigmoid(self.decoder(torch.cat([z, self.condition(energy_gev)], 1)))
            * self.voxel_max
        )

    def decode(self, energy_gev: Tensor, z: Tensor) -> Tensor:
        """Showers ``(N, V)`` GeV decoded from latent points ``z`` (no threshold)."""
        return self.decode_fractions(energy_gev, z) * energy_gev.reshape(-1, 1).float()

    def sample(self, energy_gev: Tensor, noise: Tensor) -> Tensor:
        x = self.decode(energy_gev, noise)
        if self.threshold_gev > 0:
            x = torch.where(x < self.threshold_gev, torch.zeros_like(x), x)
        return x

    # -- training -----------------------------------------------------------------------------
    def loss_terms(
        self, energy_gev: Tensor, showers: Tensor, phase: str = "model"
    ) -> dict[str, Tensor]:
        e = energy_gev.reshape(-1, 1).float()
        u = showers.float() / e
        t = (u / self.voxel_max).clamp(0.0, 1.0)
        mu, logvar = self.encode(energy_gev, showers)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder(torch.cat([z, self.condition(energy_gev)], 1))
        u_hat = torch.sigmoid(logits) * self.voxel_max
        reco = F.binary_cross_entropy_with_logits(logits, t, reduction="none").sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        layer = (self.layer_energies(u) - self.layer_energies(u_hat)).abs().sum(1).mean()
        total = (u.sum(1) - u_hat.sum(1)).abs().mean()
        return {
            "reco": self.w_reco * reco,
            "kl": self.beta_kl * kl,
            "layer": self.w_layer * layer,
            "total": self.w_total * total,
        }
