"""Conditional Wasserstein GAN with gradient penalty, FastCaloGAN-like (``fastcalo_gan``).

The training objective is WGAN-GP (Gulrajani et al., arXiv:1704.00028, Algorithm 1;
``docs/references.md §15``): a critic ``D`` and a generator ``G``; per critic step

    L_D = E[D(G(z, c), c)] - E[D(x, c)] + lambda * E[(||grad_x~ D(x~, c)||_2 - 1)^2],

with ``x~ = eps x + (1 - eps) G(z, c)``, ``eps ~ U[0, 1]`` per shower, and after every
``n_critic`` critic steps (each on a new batch) one generator step with ``L_G = -E[D(G(z, c), c)]``;
Adam with ``lr = 1e-4``, ``betas = (0, 0.9)``, ``lambda = 10``, ``n_critic = 5`` as the paper's
defaults, and no batch normalisation in the critic (the penalty is per sample).

The networks follow ATLAS's FastCaloGAN (AtlFast3, ``docs/references.md §15``): fully connected
generator and critic conditioned on the incident energy, the voxel energies normalised to the
incident energy; generator hidden layers of 50, 100 and 200 nodes from a 50-dimensional latent
space, critic with three hidden layers as wide as the number of voxels. The conditioning here is
lhcml's common log-E variable (:meth:`~lhcml.models.fastcalo.base.FastCaloGenerator.condition`),
concatenated to the input of both networks.

Voxel representation: ``u_v = E_v / E_inc`` divided by a scale ``s_v`` from the training sample
(:meth:`FastCaloGAN.prepare`; a buffer saved with the weights). ``voxel_scaling: global``
(default) uses one number for all voxels (the RMS of ``u``), so the critic compares showers in
units of the incident energy as FastCaloGAN does and the energetic core voxels dominate its
distance; ``voxel`` divides each voxel by its own standard deviation (every voxel O(1)). On
lhcml's photons the per-voxel scaling let the mean response drift (the critic weighs a 1 MeV
edge voxel as much as the core) and the total-energy spread grew to ~75 % of E_inc, hence
the default (measured, docs/benchmarks/fastcalo.md). The generator's
last layer is a ReLU on the scaled fractions, so voxels are >= 0 and can be exactly zero
(showers are sparse).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator, TrainPhase
from lhcml.models.layers import MLP
from lhcml.models.registry import register_model

#: floor of the per-voxel scale, as a fraction of E_inc (voxels never hit in the training
#: sample keep a finite scale; our choice, far below any voxel that matters)
MIN_VOXEL_SCALE = 1e-6


@register_model("fastcalo_gan")
class FastCaloGAN(FastCaloGenerator):
    """WGAN-GP generator and critic for showers (see the module docstring).

    Parameters
    ----------
    n_voxels, layer_sizes, e_min_gev, e_max_gev
        See :class:`~lhcml.models.fastcalo.base.FastCaloGenerator`.
    latent_dim
        Generator noise dimension (= ``noise_dim``). Default 50 (FastCaloGAN).
    gen_hidden
        Generator hidden layers. Default ``(50, 100, 200)`` (FastCaloGAN).
    critic_hidden
        Critic hidden layers; default ``None`` = three layers of ``n_voxels`` nodes (FastCaloGAN).
    act
        Hidden activation of both networks. Default ``relu``.
    gp_lambda
        Gradient-penalty weight. Default 10 (Gulrajani et al.).
    n_critic
        Critic steps per generator step. Default 5 (Gulrajani et al.).
    betas
        Adam betas of both optimisers. Default ``(0.0, 0.9)`` (Gulrajani et al.).
    critic_lr_scale
        Critic learning rate relative to ``optimizer.lr``. Default 1.0.
    voxel_scaling
        ``global`` (default) or ``voxel`` (see the module docstring).
    """

    def __init__(
        self,
        n_voxels: int,
        layer_sizes: Sequence[int],
        e_min_gev: float,
        e_max_gev: float,
        latent_dim: int = 50,
        gen_hidden: Sequence[int] = (50, 100, 200),
        critic_hidden: Sequence[int] | None = None,
        act: str = "relu",
        gp_lambda: float = 10.0,
        n_critic: int = 5,
        betas: Sequence[float] = (0.0, 0.9),
        critic_lr_scale: float = 1.0,
        voxel_scaling: str = "global",
    ) -> None:
        super().__init__(n_voxels, layer_sizes, e_min_gev, e_max_gev)
        gen_hidden = [int(h) for h in gen_hidden]
        critic_hidden = [n_voxels] * 3 if critic_hidden is None else [int(h) for h in critic_hidden]
        if latent_dim <= 0 or any(h <= 0 for h in [*gen_hidden, *critic_hidden]):
            raise ConfigError(
                f"fastcalo_gan needs positive latent_dim and layer sizes, got {latent_dim}, {gen_hidden}, {critic_hidden}"
            )
        if n_critic < 1 or gp_lambda < 0 or critic_lr_scale <= 0 or len(betas) != 2:
            raise ConfigError(
                f"fastcalo_gan needs n_critic >= 1, gp_lambda >= 0, critic_lr_scale > 0 and two betas, "
                f"got {n_critic}, {gp_lambda}, {critic_lr_scale}, {list(betas)}"
            )
        if voxel_scaling not in ("global", "voxel"):
            raise ConfigError(
                f"fastcalo_gan: voxel_scaling must be 'global' or 'voxel', got {voxel_scaling!r}"
            )
        self.voxel_scaling = voxel_scaling
        self.noise_dim = int(latent_dim)
        self.gp_lambda = float(gp_lambda)
        self.n_critic = int(n_critic)
        self.betas = (float(betas[0]), float(betas[1]))
        self.critic_lr_scale = float(critic_lr_scale)
        self.generator = nn.Sequential(
            MLP(latent_dim + 1, n_voxels, hidden=gen_hidden, act=act), nn.ReLU()
        )
        self.critic = MLP(n_voxels + 1, 1, hidden=critic_hidden, act=act)
        self.register_buffer("voxel_scale", torch.ones(n_voxels))

    # -- representation -----------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, energy_gev: Tensor, showers: Tensor) -> None:
        """Voxel scale from the training sample: ``global``, one number for every voxel (the RMS
        of ``E_v / E_inc`` over voxels and showers); ``voxel``, each voxel's standard deviation."""
        u = showers.double() / energy_gev.reshape(-1, 1).double()
        if self.voxel_scaling == "global":
            self.voxel_scale.fill_(float(u.pow(2).mean().sqrt().clamp(min=MIN_VOXEL_SCALE)))
        else:
            self.voxel_scale.copy_(u.std(0, unbiased=False).clamp(min=MIN_VOXEL_SCALE).float())

    def _scaled(self, energy_gev: Tensor, showers: Tensor) -> Tensor:
        return showers.float() / energy_gev.reshape(-1, 1).float() / self.voxel_scale

    def _generate_scaled(self, energy_gev: Tensor, noise: Tensor) -> Tensor:
        return self.generator(torch.cat([noise, self.condition(energy_gev)], 1))

    def critic_score(self, energy_gev: Tensor, scaled: Tensor) -> Tensor:
        """Critic output ``(N,)`` for scaled showers (``E_v / E_inc / voxel_scale``)."""
        return self.critic(torch.cat([scaled, self.condition(energy_gev)], 1)).squeeze(1)

    def sample(self, energy_gev: Tensor, noise: Tensor) -> Tensor:
        s = self._generate_scaled(energy_gev, noise)
        return s * self.voxel_scale * energy_gev.reshape(-1, 1).float()

    # -- training -----------------------------------------------------------------------------
    def phases(self) -> list[TrainPhase]:
        return [
            TrainPhase(
                "critic", tuple(self.critic.parameters()), 1, self.critic_lr_scale, self.betas
            ),
            TrainPhase(
                "generator", tuple(self.generator.parameters()), self.n_critic, 1.0, self.betas
            ),
        ]

    def _noise(self, n: int, like: Tensor) -> Tensor:
        return torch.randn(n, self.noise_dim, device=like.device)

    def gradient_penalty(self, energy_gev: Tensor, real: Tensor, fake: Tensor) -> Tensor:
        """``E[(||grad D(x~)||_2 - 1)^2]`` on random interpolates of real and fake (scaled) showers."""
        eps = torch.rand(real.shape[0], 1, device=real.device)
        x = (eps * real + (1 - eps) * fake).requires_grad_(True)
        with torch.enable_grad():
            score = self.critic_score(energy_gev, x)
            (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
        return (grad.norm(2, dim=1) - 1).pow(2).mean()

    def loss_terms(self, energy_gev: Tensor, showers: Tensor, phase: str) -> dict[str, Tensor]:
        real = self._scaled(energy_gev, showers)
        if phase == "critic":
            with torch.no_grad():
                fake = self._generate_scaled(energy_gev, self._noise(len(real), real))
            w = (
                self.critic_score(energy_gev, real).mean()
                - self.critic_score(energy_gev, fake).mean()
            )
            return {
                "wasserstein": -w,
                "gp": self.gp_lambda * self.gradient_penalty(energy_gev, real, fake),
            }
        if phase == "generator":
            fake = self._generate_scaled(energy_gev, self._noise(len(real), real))
            return {"adversarial": -self.critic_score(energy_gev, fake).mean()}
        raise ValueError(f"fastcalo_gan has phases 'critic' and 'generator', not '{phase}'")

    def validation_terms(self, energy_gev: Tensor, showers: Tensor) -> dict[str, Tensor]:
        """``loss``: the mismatch of the mean total and layer energies (units of E_inc) between
        generated and validation showers at the same energies; ``wasserstein``: the critic's
        estimate ``E[D(real)] - E[D(fake)]`` (Gulrajani et al.: it tracks sample quality).

        The Wasserstein estimate is measured with a critic that changes every epoch, so the best
        checkpoint is chosen on the moment mismatch, which compares physics quantities directly.
        """
        real = self._scaled(energy_gev, showers)
        fake = self._generate_scaled(energy_gev, self._noise(len(real), real))
        e = energy_gev.reshape(-1, 1).float()
        lay_r = self.layer_energies(showers.float() / e)
        lay_f = self.layer_energies(fake * self.voxel_scale)
        mismatch = (lay_r.mean(0) - lay_f.mean(0)).abs().sum() + (
            lay_r.sum(1) - lay_f.sum(1)
        ).mean().abs()
        w = self.critic_score(energy_gev, real).mean() - self.critic_score(energy_gev, fake).mean()
        return {"loss": mismatch, "wasserstein": w}
