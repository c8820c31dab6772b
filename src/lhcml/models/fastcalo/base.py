"""The common interface of lhcml's generative fast-calorimeter models (issue 15).

A :class:`FastCaloGenerator` maps an incident energy and a noise vector to a calorimeter shower
in the CaloChallenge voxel layout (``V`` voxels, layer after layer, see
:mod:`lhcml.data.calochallenge`). Every model (``fastcalo_vae``, ``fastcalo_gan``,
``fastcalo_flow``, ``fastcalo_fm`` in :mod:`lhcml.models.registry`) provides

* construction from ``n_voxels``, ``layer_sizes`` (voxels per layer, in voxel order, summing to
  ``n_voxels``), ``e_min_gev``/``e_max_gev`` (the trained incident-energy range) and its own
  hyper-parameters; no I/O;
* :attr:`noise_dim` and :meth:`sample` ``(energy_gev [N], noise [N, noise_dim]) -> showers
  [N, V]`` in GeV, every voxel ``>= 0``, a deterministic function of its inputs in ``eval()``
  mode (so an ONNX graph with the noise as an input reproduces it exactly; flow matching and
  diffusion unroll a fixed-step solver);
* :meth:`generate` ``(energy_gev, generator=None)``, which checks the energy range, draws the
  noise (standard normal, :meth:`draw_noise`) and calls :meth:`sample`;
* the conditioning :meth:`condition`: ``log(E)`` scaled to ``[0, 1]`` over the trained range,
  and, for a model built with ``eta_range = (lo, hi)`` (``model.eta_range`` in a config; only
  ``fastcalo_fm`` takes it), the incident ``|η|`` scaled to ``[0, 1]`` over that range as a second
  column: such a model must be given each shower's ``eta`` (``sample``, ``generate``,
  ``loss_terms``), an energy-only model must not (:meth:`condition` says which in one message);
  ``model.phi_cells`` (φ cell widths, ``fastcalo_fm`` only) adds ``sin``/``cos`` of ``n φ`` per
  width ``2 pi / n``: such a model must be given each shower's ``phi`` (radians) the same way;
* the training contract used by :mod:`lhcml.train.fastcalo` (``lhcml train
  configs/fastcalo/X.yaml``): :meth:`prepare` (data-derived constants), :meth:`phases` (one optimiser per phase; a likelihood-type model
  has one phase ``"model"``, a GAN a ``"critic"`` and a ``"generator"`` phase stepped every
  ``n_critic`` batches, as WGAN-GP), :meth:`loss_terms` (named loss terms of a phase, summed by
  the trainer) and :meth:`validation_terms` (the per-epoch ``val_loss`` that selects the best
  checkpoint, and extra monitored numbers).

Showers and energies enter and leave in GeV; each model normalises internally (e.g. voxel
energies as fractions of the incident energy) and keeps its constants in buffers, so a
checkpoint or an exported graph needs nothing else.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError

#: relative slack on the trained energy range in :meth:`FastCaloGenerator.check_energies`
#: (float32 round-off of energies stored at the range's edges; our choice)
ENERGY_RANGE_SLACK = 1e-5


@dataclass(frozen=True)
class TrainPhase:
    """One optimiser of a model's training step.

    Attributes
    ----------
    name
        Phase name, passed to :meth:`FastCaloGenerator.loss_terms` (``"model"``, ``"critic"``,
        ``"generator"``).
    parameters
        The parameters this phase's optimiser updates.
    every_n_batches
        Step this phase on every ``n``-th training batch (WGAN-GP's generator: ``n_critic``);
        the phases due on a batch run in the listed order.
    lr_scale
        This phase's learning rate relative to the configured ``optimizer.lr``.
    betas
        Adam betas for this phase, or ``None`` for the configured optimiser's defaults.
    """

    name: str
    parameters: tuple[nn.Parameter, ...] = field(repr=False)
    every_n_batches: int = 1
    lr_scale: float = 1.0
    betas: tuple[float, float] | None = None


class FastCaloGenerator(nn.Module, ABC):
    """Base of the generative fast-calorimeter models (see the module docstring).

    Parameters
    ----------
    n_voxels
        Voxels per shower ``V``.
    layer_sizes
        Voxels per calorimeter layer, in voxel order; must sum to ``n_voxels``.
    e_min_gev, e_max_gev
        Trained incident-energy range in GeV (``0 < e_min_gev < e_max_gev``).
    eta_range
        ``(lo, hi)``: condition also on the incident ``|η|`` in that trained range; ``None`` (the
        default): energy only (the ATLAS setting of one η slice).
    """

    registry_name: ClassVar[str] = ""
    #: size of the noise vector :meth:`sample` takes (set by each model's constructor)
    noise_dim: int

    def __init__(
        self, n_voxels: int, layer_sizes: Sequence[int], e_min_gev: float, e_max_gev: float,
        eta_range: Sequence[float] | None = None, eta_cells: Sequence[float] | None = None,
        phi_cells: Sequence[float] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        name = self.registry_name or type(self).__name__
        layer_sizes = [int(n) for n in layer_sizes]
        if n_voxels <= 0 or not layer_sizes or any(n <= 0 for n in layer_sizes):
            raise ConfigError(
                f"model '{name}' needs n_voxels > 0 and positive layer_sizes, got {n_voxels}, {layer_sizes}"
            )
        if sum(layer_sizes) != n_voxels:
            raise ConfigError(
                f"model '{name}': layer_sizes {layer_sizes} sum to {sum(layer_sizes)}, not n_voxels = "
                f"{n_voxels} (take both from the binning file)"
            )
        if not (0 < e_min_gev < e_max_gev) or not math.isfinite(e_max_gev):
            raise ConfigError(
                f"model '{name}' needs 0 < e_min_gev < e_max_gev, got {e_min_gev}, {e_max_gev}"
            )
        self.n_voxels = int(n_voxels)
        self.layer_sizes = layer_sizes
        self.n_layers = len(layer_sizes)
        self.e_min_gev = float(e_min_gev)
        self.e_max_gev = float(e_max_gev)
        self.eta_range: tuple[float, float] | None = None
        if eta_range is not None:
            try:
                lo, hi = (float(x) for x in eta_range)
            except (TypeError, ValueError):
                raise ConfigError(f"model '{name}': eta_range must be [lo, hi] (|eta|), got {eta_range!r}") from None
            if not (0.0 <= lo < hi and math.isfinite(hi)):
                raise ConfigError(f"model '{name}' needs 0 <= eta_range[0] < eta_range[1], got {lo}, {hi}")
            self.eta_range = (lo, hi)
        #: cell widths in |eta| whose phase ``|eta| / width mod 1`` the model is told (as its sine and
        #: cosine): where inside a calorimeter cell the photon hits (:meth:`condition`)
        self.eta_cells: tuple[float, ...] = ()
        if eta_cells is not None:
            try:
                cells = tuple(float(x) for x in eta_cells)
            except (TypeError, ValueError):
                raise ConfigError(f"model '{name}': eta_cells must be a list of cell widths in eta, got {eta_cells!r}") from None
            if self.eta_range is None:
                raise ConfigError(f"model '{name}': eta_cells needs eta_range (the model must be conditioned on |eta|)")
            if not cells or any(not (0.0 < c < 1.0) for c in cells):
                raise ConfigError(f"model '{name}' needs eta_cells in (0, 1) (cell widths in eta, e.g. [0.025, 0.003125]), got {eta_cells!r}")
            self.eta_cells = cells
        #: cells around the circle (2 pi / width) per phi cell width: the model is told sin and cos of
        #: ``n phi``, where inside its phi cell the particle hits (:meth:`condition`)
        self.phi_cells: tuple[int, ...] = ()
        if phi_cells is not None:
            self.phi_cells = phi_cell_counts(phi_cells, name)
        #: columns of :meth:`condition`: log E, |eta| when conditioned on it, 2 per eta and per phi cell width
        self.cond_dim = (1 if self.eta_range is None else 2) + 2 * len(self.eta_cells) + 2 * len(self.phi_cells)
        # voxel -> layer index, for per-layer sums (a buffer: moves with .to(), no state)
        layer_of_voxel = torch.repeat_interleave(
            torch.arange(self.n_layers), torch.tensor(layer_sizes)
        )
        self.register_buffer("layer_of_voxel", layer_of_voxel, persistent=False)

    # -- conditioning and layer sums ----------------------------------------------------------
    @property
    def conditions_on_eta(self) -> bool:
        """Whether the model was built with an ``eta_range`` (conditioned on ``(E, |η|)``)."""
        return self.eta_range is not None

    def check_eta_given(self, eta: Tensor | None) -> None:
        """Raise :class:`ConfigError` if ``eta`` is missing for an η-conditioned model or given
        to an energy-only one."""
        name = self.registry_name or type(self).__name__
        if self.eta_range is not None and eta is None:
            raise ConfigError(
                f"model '{name}' is conditioned on (E, |eta|) (trained on |eta| {self.eta_range[0]:g}-"
                f"{self.eta_range[1]:g}): give each shower's eta (files with incident_eta from lhcml fastcalo "
                "simulate --eta-range; the ONNX graph's 'eta' input)"
            )
        if self.eta_range is None and eta is not None:
            raise ConfigError(
                f"model '{name}' is conditioned on the energy only (trained at one eta slice, no model.eta_range): "
                "do not pass eta, or train a model with model.eta_range"
            )

    @property
    def conditions_on_phi(self) -> bool:
        """Whether the model was built with ``phi_cells`` (told each shower's φ)."""
        return bool(self.phi_cells)

    def check_phi_given(self, phi: Tensor | None) -> None:
        """Raise :class:`ConfigError` if ``phi`` is missing for a model with ``phi_cells`` or given
        to one without."""
        name = self.registry_name or type(self).__name__
        if self.phi_cells and phi is None:
            raise ConfigError(
                f"model '{name}' is told where inside its phi cell each shower starts (model.phi_cells): give "
                "each shower's phi (files with incident_phi from lhcml fastcalo simulate; the ONNX graph's 'phi' input)"
            )
        if not self.phi_cells and phi is not None:
            raise ConfigError(f"model '{name}' has no model.phi_cells: do not pass phi")

    def condition(self, energy_gev: Tensor, eta: Tensor | None = None, phi: Tensor | None = None) -> Tensor:
        """``(log E - log E_min) / (log E_max - log E_min)`` as an ``(N, 1)`` float tensor; with
        an ``eta_range``, ``(N, 2)`` with ``(|η| - lo) / (hi - lo)`` as the second column; with
        ``eta_cells``, per cell width ``w`` two more: ``sin`` and ``cos`` of ``2 pi |η| / w`` (the
        impact position inside the cell, which sets the shower's centroid and width in the cell
        grid: docs/benchmarks/fastcalo.md, "Eleventh version"); with ``phi_cells``, per cell count
        ``n`` two more: ``sin`` and ``cos`` of ``n φ`` (the same inside the φ cells, "Twelfth version")."""
        self.check_eta_given(eta)
        self.check_phi_given(phi)
        e = energy_gev.reshape(-1, 1).float()
        lo, hi = math.log(self.e_min_gev), math.log(self.e_max_gev)
        c = (torch.log(e) - lo) / (hi - lo)
        cols = [c]
        if self.eta_range is not None and eta is not None:
            a, b = self.eta_range
            ae = eta.reshape(-1, 1).float().abs()
            cols.append((ae - a) / (b - a))
            for w in self.eta_cells:
                ph = (2.0 * math.pi / w) * ae
                cols += [torch.sin(ph), torch.cos(ph)]
        if self.phi_cells and phi is not None:
            p = phi.reshape(-1, 1).float()
            for n in self.phi_cells:
                # sin/cos(n phi) for an integer n: periodic in 2 pi, so any phi convention works
                cols += [torch.sin(n * p), torch.cos(n * p)]
        return c if len(cols) == 1 else torch.cat(cols, dim=1)

    def layer_energies(self, showers: Tensor) -> Tensor:
        """Per-layer sums ``(N, n_layers)`` of showers ``(N, V)``."""
        out = showers.new_zeros(showers.shape[0], self.n_layers)
        return out.index_add(1, self.layer_of_voxel, showers)

    def check_energies(self, energy_gev: Tensor) -> None:
        """Raise :class:`ConfigError` if an energy lies outside the trained range."""
        e = energy_gev.detach().reshape(-1)
        if e.numel() == 0:
            return
        lo, hi = float(e.min()), float(e.max())
        slack = ENERGY_RANGE_SLACK
        if (
            not (math.isfinite(lo) and math.isfinite(hi))
            or lo < self.e_min_gev * (1 - slack)
            or hi > self.e_max_gev * (1 + slack)
        ):
            raise ConfigError(
                f"incident energies {lo:.4g}-{hi:.4g} GeV lie outside the trained range "
                f"{self.e_min_gev:.4g}-{self.e_max_gev:.4g} GeV of model '{self.registry_name}': "
                "generate inside it or train on a wider range"
            )

    def check_eta(self, eta: Tensor | None) -> None:
        """Raise :class:`ConfigError` if ``eta`` does not fit the model (:meth:`check_eta_given`)
        or an ``|η|`` lies outside the trained ``eta_range``."""
        self.check_eta_given(eta)
        if eta is None or self.eta_range is None or eta.numel() == 0:
            return
        a = eta.detach().reshape(-1).abs()
        lo, hi = float(a.min()), float(a.max())
        slack = 1e-4
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < self.eta_range[0] - slack or hi > self.eta_range[1] + slack:
            raise ConfigError(
                f"|eta| {lo:.4g}-{hi:.4g} lies outside the trained range {self.eta_range[0]:g}-{self.eta_range[1]:g} "
                f"of model '{self.registry_name}': generate inside it or train on a wider eta range"
            )

    # -- sampling -----------------------------------------------------------------------------
    @abstractmethod
    def sample(self, energy_gev: Tensor, noise: Tensor) -> Tensor:
        """Showers ``(N, V)`` in GeV (>= 0) for energies ``(N,)`` GeV and noise ``(N, noise_dim)``
        (an η-conditioned model takes ``eta`` ``(N,)`` as a third argument).

        A deterministic function of its inputs in ``eval()`` mode (the exported ONNX graph).
        """

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Noise ``(n, noise_dim)`` for :meth:`sample`: standard normal."""
        dev = next((b.device for b in self.buffers()), torch.device("cpu"))
        return torch.randn(n, self.noise_dim, generator=generator, device=dev)

    @torch.no_grad()
    def generate(
        self, energy_gev: Tensor, generator: torch.Generator | None = None, eta: Tensor | None = None,
        phi: Tensor | None = None,
    ) -> Tensor:
        """Showers ``(N, V)`` GeV for incident energies ``(N,)`` GeV inside the trained range
        (and, for an η-conditioned model, the incident ``eta`` ``(N,)``; for a model with
        ``phi_cells``, the incident ``phi`` ``(N,)`` rad)."""
        energy_gev = torch.as_tensor(energy_gev, dtype=torch.float32).reshape(-1)
        self.check_energies(energy_gev)
        if eta is not None:
            eta = torch.as_tensor(eta, dtype=torch.float32).reshape(-1)
            if len(eta) != len(energy_gev):
                raise ConfigError(f"{len(eta)} eta values for {len(energy_gev)} energies")
        self.check_eta(eta)
        if phi is not None:
            phi = torch.as_tensor(phi, dtype=torch.float32).reshape(-1)
            if len(phi) != len(energy_gev) or not bool(torch.isfinite(phi).all()):
                raise ConfigError(f"{len(phi)} phi values for {len(energy_gev)} energies (one finite phi each)")
        self.check_phi_given(phi)
        noise = self.draw_noise(len(energy_gev), generator)
        if phi is not None:
            return self.sample(energy_gev.to(noise.device), noise, None if eta is None else eta.to(noise.device),
                               phi.to(noise.device))  # fmt: skip
        if eta is None:
            return self.sample(energy_gev.to(noise.device), noise)
        return self.sample(energy_gev.to(noise.device), noise, eta.to(noise.device))

    # -- training contract (lhcml.train.fastcalo) --------------------------------------------
    def prepare(self, energy_gev: Tensor, showers: Tensor) -> None:  # noqa: B027 - optional hook
        """Fill data-derived constants (buffers, saved with the weights) from the training
        sample before the first epoch (e.g. per-voxel scales); default: nothing. Called again
        on resume (the buffers then come back from the checkpoint), so it must be deterministic."""

    def phases(self) -> list[TrainPhase]:
        """The optimisers of a training step; default one phase ``"model"`` over all parameters."""
        return [TrainPhase("model", tuple(p for p in self.parameters() if p.requires_grad))]

    @abstractmethod
    def loss_terms(self, energy_gev: Tensor, showers: Tensor, phase: str) -> dict[str, Tensor]:
        """Named scalar loss terms of ``phase`` on a batch (energies ``(N,)``, showers ``(N, V)``
        GeV; an η-conditioned model also ``eta=`` ``(N,)``); the trainer minimises their sum with
        that phase's optimiser."""

    def validation_terms(self, energy_gev: Tensor, showers: Tensor, **cond: Tensor) -> dict[str, Tensor]:
        """Per-batch validation numbers; ``"loss"`` (required) is logged as ``val_loss`` and
        selects the best checkpoint, other keys as ``val_<key>``. Default: the sum of the first
        phase's loss terms, each term also logged (``cond``: ``eta=`` for an η-conditioned model)."""
        terms = self.loss_terms(energy_gev, showers, self.phases()[0].name, **cond)
        total = torch.stack([v for v in terms.values()]).sum()
        return {"loss": total, **terms} if len(terms) > 1 else {"loss": total}

    def extra_repr(self) -> str:
        eta = "" if self.eta_range is None else f", |eta|=[{self.eta_range[0]:g}, {self.eta_range[1]:g}]"
        return (
            f"n_voxels={self.n_voxels}, layers={self.n_layers}, noise_dim={self.noise_dim}, "
            f"E=[{self.e_min_gev:g}, {self.e_max_gev:g}] GeV{eta}"
        )


#: how far ``2 pi / width`` of a ``phi_cells`` entry may lie from a whole number of cells
PHI_CELLS_TOLERANCE = 0.01


def phi_cell_counts(phi_cells: Sequence[float], name: str = "fastcalo") -> tuple[int, ...]:
    """The whole numbers of cells around the circle ``n = 2 pi / w`` of ``phi_cells`` (φ cell
    widths ``w`` in rad, e.g. ``[0.0245436926, 0.0981747704]`` for 256 and 64 cells); raises
    :class:`ConfigError` for non-numbers, an empty list, or a width that does not divide 2 pi
    (the phase ``φ / w mod 1`` must be the same at φ and φ + 2 pi)."""
    try:
        widths = tuple(float(x) for x in phi_cells)
    except (TypeError, ValueError):
        raise ConfigError(f"model '{name}': phi_cells must be a list of phi cell widths in rad, got {phi_cells!r}") from None
    out = []
    for w in widths:
        n = 2.0 * math.pi / w if 0.0 < w < math.pi else float("nan")
        if not (math.isfinite(n) and abs(n - round(n)) <= PHI_CELLS_TOLERANCE):
            raise ConfigError(
                f"model '{name}' needs phi_cells = widths 2 pi / n of n cells around the circle (e.g. "
                f"0.0245436926 for 256 cells, 0.0981747704 for 64), got {w!r} in {phi_cells!r}"
            )
        out.append(round(n))
    if not out:
        raise ConfigError(f"model '{name}': phi_cells is empty (give the phi cell widths, or leave it out)")
    return tuple(out)
