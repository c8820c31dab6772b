"""The detailed simulation's energy spots as the readout of generated showers (issue 15).

lhcml's detailed calorimeter (:mod:`lhcml.sim.showers`, GFlash-like) deposits an EM shower of
``E`` GeV as ``N = spots_per_gev * E`` energy spots of ``E / N = 1 / spots_per_gev`` GeV each
(16.7 MeV with the shipped 60 spots per GeV), each weighted by ``g ~ Gamma(k, 1/k)`` with
``k = 1 / (a^2 spots_per_gev)`` (``a`` = ``resolution.em_stochastic``, 0.10: ``k = 5/3``), and
the noise-free cells are the sums of the spots that fall in them — there is no readout threshold.
So a hit cell holds at least one spot, and a cell of a few MeV is rare: a single spot falls below
``x`` with probability ``P(k, x k / E_spot)`` (the regularised lower incomplete gamma function),
1.3 % below 1 MeV, 5 % below 2.3 MeV (docs/benchmarks/fastcalo.md, "Thirteenth version": 1.6 %
of the detailed photons' hit cells lie below 2 MeV, holding 2e-5 of their energy).

The flow-matching generator (:mod:`lhcml.models.fastcalo.fm`, ``voxel_space: log``) encodes an
empty cell as a value one to two e-folds under its 1 MeV threshold; its smeared "empty" mode leaks
over the threshold into cells of 1-5 MeV (six such cells per shower in the middle layer where the
detailed showers have 1.5), which is the excess sparsity the CaloChallenge classifier separates on.

:class:`SpotReadout` is the readout the detailed simulation implies, applied to generated showers
after the generator (numpy; the ONNX sampling graph is unchanged): every generated cell below
``threshold`` (the energy below which a fraction ``fraction`` of the detailed simulation's single
spots fall; 5 %, our choice) is read as a whole number of spots: one spot (energy drawn from the
spot distribution) with probability ``e / E_spot``, else empty — so each such cell keeps its
energy **in expectation** (and the shower its energy-weighted widths), where a hard threshold
would drop it — and each layer is then rescaled to its generated energy, so the layer energies
(and the total) are those of the generator exactly; a layer whose cells all end up empty is left
as generated. Cells at or above the threshold are untouched except for that rescaling, so a
detailed shower passes through almost unchanged (only its few cells under the threshold are
re-read; ``tests/test_fastcalo_readout.py``).

It lives in the simulation layer because it is derived from the detailed simulation's geometry
alone and because the simulation's own fast path uses it (``lhcml simulate gamma_jet --calo
fast:MODEL.onnx --spot-readout 0.05``, :class:`lhcml.sim.fastcalo.FastCalo`);
:mod:`lhcml.tasks.fastcalo.readout` re-exports it for ``lhcml fastcalo generate`` and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lhcml.errors import ConfigError, SchemaError

#: fraction of the detailed simulation's single spots below the readout threshold (our choice)
DEFAULT_FRACTION = 0.05


@dataclass(frozen=True)
class SpotReadout:
    """Read generated cells under ``threshold_gev`` as whole energy spots (module docstring).

    Attributes
    ----------
    spot_gev
        Mean energy of one spot (GeV): ``1 / spots_per_gev``.
    shape
        Gamma shape ``k`` of a spot's weight: ``1 / (a^2 spots_per_gev)``.
    threshold_gev
        Cells below this (and above zero) are re-read as zero or one spot.
    """

    spot_gev: float
    shape: float
    threshold_gev: float

    def __post_init__(self) -> None:
        if not (self.spot_gev > 0 and self.shape > 0 and 0 < self.threshold_gev < self.spot_gev):
            raise ConfigError(
                f"spot readout needs spot energy > 0, Gamma shape > 0 and 0 < threshold < spot energy, got "
                f"{self.spot_gev}, {self.shape}, {self.threshold_gev}"
            )

    @classmethod
    def from_geometry(cls, geometry: object | None = None, fraction: float = DEFAULT_FRACTION) -> SpotReadout:
        """The readout of the detailed calorimeter ``geometry`` (default: the shipped
        ``calo_geometry.yaml``): spot energy and shape from ``em_material.spots_per_gev`` and
        ``resolution.em_stochastic``, the threshold at the ``fraction`` quantile of one spot's energy."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"spot readout: fraction must be in (0, 1), got {fraction!r}")
        from scipy.special import gammaincinv

        from lhcml.sim.calo_geometry import load_geometry

        geo = load_geometry() if geometry is None else geometry
        n = float(geo.em_material.spots_per_gev)
        a = float(geo.resolution.em_stochastic)
        if not (n > 0 and a > 0):
            raise ConfigError(f"spot readout needs spots_per_gev > 0 and em_stochastic > 0, got {n}, {a}")
        spot = 1.0 / n
        k = 1.0 / (a * a * n)
        return cls(spot_gev=spot, shape=k, threshold_gev=float(gammaincinv(k, fraction)) * spot / k)

    def apply(self, showers: np.ndarray, layer_slices: Sequence[slice], rng: np.random.Generator) -> np.ndarray:
        """A copy of ``showers`` ``(N, V)`` (GeV) read out as the module docstring says; each
        layer (``layer_slices``) keeps its energy exactly (to float rounding)."""
        s = np.asarray(showers)
        if s.ndim != 2 or sum(sl.stop - sl.start for sl in layer_slices) != s.shape[1]:
            raise SchemaError(f"spot readout: showers {s.shape} do not match the layers {list(layer_slices)}")
        x = s.astype(np.float64)
        low = np.flatnonzero((x > 0) & (x < self.threshold_gev))  # random numbers for these cells only
        e = x.ravel()[low]
        keep = rng.random(len(low)) < e / self.spot_gev
        y = x.copy()
        y.ravel()[low] = np.where(keep, rng.gamma(self.shape, self.spot_gev / self.shape, len(low)), 0.0)
        out = x.copy()
        for sl in layer_slices:
            before = x[:, sl].sum(1, keepdims=True)
            after = y[:, sl].sum(1, keepdims=True)
            ok = (after > 0)[:, 0]
            out[ok, sl] = y[ok, sl] * (before[ok] / after[ok])
        return out.astype(s.dtype)


__all__ = ["DEFAULT_FRACTION", "SpotReadout"]
