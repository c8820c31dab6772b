"""Cut-based photon identification: Loose/Tight-style rectangular cuts on the shower shapes.

The menus follow ATLAS's structure (docs/references.md §5): Loose cuts on the hadronic leakage and the
middle-layer shapes (R_had, R_eta, w_eta2); Tight adds R_phi and the strip variables (w_s3,
w_s,tot, F_side, ΔE, E_ratio), which apply only where ``f1 > 0.005``. R_had uses ``Rhad1`` for
``|eta| < 0.8`` and ``Rhad`` for ``0.8 < |eta| < 1.37``. Cuts are set per bin of ``|eta|``
(ATLAS edges 0, 0.6, 0.8, 1.15, 1.37) and of E_T.

Optimisation (:func:`optimise_menu`): in each bin, start from no cuts and tighten one variable
at a time, removing ``step`` of the signal weight per iteration and choosing the variable whose
tightening removes the most background weight, until the signal efficiency in the bin reaches
the target (a greedy forward selection, exact in efficiency on the optimisation sample). Bins
with fewer than ``min_entries`` signal or background candidates use the cuts of their whole
``|eta|`` bin (all E_T).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lhcml.atomic import atomic_write_text
from lhcml.errors import ConfigError, SchemaError

#: variable -> direction of the cut ("<": pass below the cut, ">": pass above)
DIRECTIONS = {
    "Rhad": "<", "Reta": ">", "weta2": "<", "Rphi": ">", "weta1": "<", "wtots1": "<",
    "fracs1": "<", "DeltaE": "<", "Eratio": ">",
}  # fmt: skip
LOOSE_VARIABLES = ("Rhad", "Reta", "weta2")
TIGHT_VARIABLES = ("Rhad", "Reta", "weta2", "Rphi", "weta1", "wtots1", "fracs1", "DeltaE", "Eratio")
STRIP_VARIABLES = ("weta1", "wtots1", "fracs1", "DeltaE", "Eratio")
ETA_EDGES = (0.0, 0.6, 0.8, 1.15, 1.37)
PT_EDGES_GEV = (20.0, 40.0, 80.0, 1e9)
NEEDED_FIELDS = ("pt", "eta", "Rhad1", "Rhad", "Reta", "Rphi", "weta2", "weta1", "wtots1", "fracs1",
                 "DeltaE", "Eratio", "f1")  # fmt: skip


def cut_variables(photons: np.ndarray, variables: Sequence[str]) -> np.ndarray:
    """``(n, V)`` float64 matrix of the cut variables (R_had by |eta|; strip cuts off where f1 <= 0.005).

    Raises
    ------
    SchemaError
        If the photon table lacks a field (the message names it).
    """
    names = photons.dtype.names or ()
    missing = [f for f in NEEDED_FIELDS if f not in names]
    if missing:
        raise SchemaError(f"photon table lacks field(s) {missing} needed by the cut-based ID")
    aeta = np.abs(photons["eta"].astype(np.float64))
    out = np.empty((len(photons), len(variables)))
    strips_off = photons["f1"] <= 0.005
    for k, v in enumerate(variables):
        if v not in DIRECTIONS:
            raise ConfigError(f"unknown cut variable '{v}' (valid: {', '.join(DIRECTIONS)})")
        if v == "Rhad":
            x = np.where(aeta < 0.8, photons["Rhad1"], photons["Rhad"]).astype(np.float64)
        else:
            x = photons[v].astype(np.float64)
        if v in STRIP_VARIABLES:
            x = np.where(strips_off, -np.inf if DIRECTIONS[v] == "<" else np.inf, x)
        out[:, k] = np.nan_to_num(x, nan=np.inf if DIRECTIONS[v] == "<" else -np.inf)
    return out


def _passes(x: np.ndarray, cuts: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    lt = np.where(dirs, x < cuts[None, :], x > cuts[None, :])
    return lt.all(axis=1)


def optimise_bin(
    sig: np.ndarray, bkg: np.ndarray, dirs: np.ndarray, target: float,
    w_sig: np.ndarray | None = None, w_bkg: np.ndarray | None = None, step: float = 0.0025,
) -> np.ndarray:  # fmt: skip
    """Greedy rectangular-cut optimisation in one bin (module docstring).

    Parameters
    ----------
    sig, bkg
        ``(n, V)`` variables of signal and background.
    dirs
        ``(V,)`` bool, True where the cut is an upper cut (pass below).
    target
        Signal efficiency to reach.

    Returns
    -------
    np.ndarray
        ``(V,)`` cut values (±inf where a variable is not cut).
    """
    if not 0 < target <= 1:
        raise ConfigError(f"target efficiency must be in (0, 1], got {target}")
    ws = np.ones(len(sig)) if w_sig is None else np.asarray(w_sig, float)
    wb = np.ones(len(bkg)) if w_bkg is None else np.asarray(w_bkg, float)
    cuts = np.where(dirs, np.inf, -np.inf)
    total = ws.sum()
    pass_s = np.ones(len(sig), bool)
    pass_b = np.ones(len(bkg), bool)
    eff = 1.0
    for _ in range(int(np.ceil(1.0 / step)) + 5):
        if eff <= target + 1e-12:
            break
        remove = (eff - max(eff - step, target)) * total
        best = None
        for v in range(sig.shape[1]):
            x = sig[pass_s, v]
            w = ws[pass_s]
            if len(x) == 0:
                continue
            # order so that the first entries are the ones removed by tightening
            order = np.argsort(-x if dirs[v] else x, kind="stable")
            cw = np.cumsum(w[order])
            k = int(np.searchsorted(cw, remove - 1e-12))
            if k >= len(x):
                continue
            c = x[order][k]  # new cut: this value and beyond fail
            new_s = sig[:, v] < c if dirs[v] else sig[:, v] > c
            removed_s = ws[pass_s & ~new_s].sum()
            if removed_s <= 0:
                continue
            new_b = bkg[:, v] < c if dirs[v] else bkg[:, v] > c
            removed_b = wb[pass_b & ~new_b].sum()
            score = removed_b / removed_s
            if best is None or score > best[0]:
                best = (score, v, c)
        if best is None:
            break
        _, v, c = best
        cuts[v] = c
        pass_s = _passes(sig, cuts, dirs)
        pass_b = _passes(bkg, cuts, dirs)
        eff = ws[pass_s].sum() / total
    return cuts


@dataclass
class CutMenu:
    """Rectangular cuts per (|eta|, E_T) bin.

    Attributes
    ----------
    name
        Menu name (``loose``, ``tight``).
    variables
        Cut variables (:data:`DIRECTIONS`).
    eta_edges, pt_edges_gev
        Bin edges.
    cuts
        ``(n_eta, n_pt, V)`` cut values.
    target_efficiency
        The signal efficiency the menu was optimised for.
    """

    name: str
    variables: tuple[str, ...]
    eta_edges: tuple[float, ...]
    pt_edges_gev: tuple[float, ...]
    cuts: np.ndarray
    target_efficiency: float
    achieved: dict[str, float] = field(default_factory=dict)

    def bins(self, photons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ie = np.searchsorted(self.eta_edges, np.abs(photons["eta"]), side="right") - 1
        ip = np.searchsorted(self.pt_edges_gev, photons["pt"] / 1e3, side="right") - 1
        return ie, ip

    def apply(self, photons: np.ndarray) -> np.ndarray:
        """Boolean decision per photon candidate (outside the bins: False)."""
        x = cut_variables(photons, self.variables)
        ie, ip = self.bins(photons)
        inside = (ie >= 0) & (ie < len(self.eta_edges) - 1) & (ip >= 0) & (ip < len(self.pt_edges_gev) - 1)
        out = np.zeros(len(photons), bool)
        dirs = np.array([DIRECTIONS[v] == "<" for v in self.variables])
        if inside.any():
            c = self.cuts[ie[inside], ip[inside]]
            out[inside] = np.where(dirs[None, :], x[inside] < c, x[inside] > c).all(axis=1)
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name, "variables": list(self.variables), "eta_edges": list(self.eta_edges),
            "pt_edges_gev": list(self.pt_edges_gev), "target_efficiency": self.target_efficiency,
            "cuts": [[[float(c) for c in cell] for cell in row] for row in self.cuts],
            "achieved": {k: float(v) for k, v in self.achieved.items()},
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the menu as YAML (atomic)."""
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> CutMenu:
        """Read a menu written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"cut menu {path} does not exist")
        d = yaml.safe_load(path.read_text())
        try:
            return cls(d["name"], tuple(d["variables"]), tuple(d["eta_edges"]), tuple(d["pt_edges_gev"]),
                       np.array(d["cuts"], float), float(d["target_efficiency"]), dict(d.get("achieved", {})))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a cut menu: {err}") from None


def optimise_menu(
    photons: np.ndarray,
    is_signal: np.ndarray,
    target_efficiency: float,
    variables: Sequence[str] = TIGHT_VARIABLES,
    name: str = "tight",
    eta_edges: Sequence[float] = ETA_EDGES,
    pt_edges_gev: Sequence[float] = PT_EDGES_GEV,
    weights: np.ndarray | None = None,
    min_entries: int = 200,
    step: float = 0.0025,
) -> CutMenu:
    """Optimise a menu on a labelled photon table (module docstring).

    Parameters
    ----------
    photons
        :data:`lhcml.data.schema.PHOTON_DTYPE` table (or any table with :data:`NEEDED_FIELDS`).
    is_signal
        True for prompt photons.
    target_efficiency
        Signal efficiency per bin.
    variables, name
        Cut variables (:data:`LOOSE_VARIABLES`, :data:`TIGHT_VARIABLES`) and the menu name.
    weights
        Per-candidate weights (e.g. ``mcEventWeight``).
    min_entries
        Minimum signal and background candidates for a bin to be optimised on its own.

    Returns
    -------
    CutMenu
    """
    is_signal = np.asarray(is_signal, bool)
    if is_signal.all() or not is_signal.any():
        raise SchemaError("cut optimisation needs both prompt photons and fakes in the sample")
    x = cut_variables(photons, variables)
    w = np.ones(len(photons)) if weights is None else np.asarray(weights, float)
    dirs = np.array([DIRECTIONS[v] == "<" for v in variables])
    n_eta, n_pt = len(eta_edges) - 1, len(pt_edges_gev) - 1
    cuts = np.zeros((n_eta, n_pt, len(variables)))
    ie = np.searchsorted(eta_edges, np.abs(photons["eta"]), side="right") - 1
    ip = np.searchsorted(pt_edges_gev, photons["pt"] / 1e3, side="right") - 1
    in_pt = (ip >= 0) & (ip < n_pt)
    for i in range(n_eta):
        in_eta = (ie == i) & in_pt
        s_eta, b_eta = in_eta & is_signal, in_eta & ~is_signal
        if s_eta.sum() < 2 or b_eta.sum() < 1:
            s_eta, b_eta = is_signal & in_pt, ~is_signal & in_pt  # empty |eta| bin: inclusive cuts
        inclusive = optimise_bin(x[s_eta], x[b_eta], dirs, target_efficiency, w[s_eta], w[b_eta], step)
        for j in range(n_pt):
            s = s_eta & (ip == j)
            b = b_eta & (ip == j)
            if s.sum() >= min_entries and b.sum() >= min_entries:
                cuts[i, j] = optimise_bin(x[s], x[b], dirs, target_efficiency, w[s], w[b], step)
            else:
                cuts[i, j] = inclusive
    menu = CutMenu(name, tuple(variables), tuple(eta_edges), tuple(pt_edges_gev), cuts, float(target_efficiency))
    dec = menu.apply(photons)
    inside = in_pt & (ie >= 0) & (ie < n_eta)
    s_in, b_in = is_signal & inside, ~is_signal & inside
    menu.achieved = {  # on the candidates inside the menu's bins
        "signal_efficiency": float(w[dec & s_in].sum() / max(w[s_in].sum(), 1e-300)),
        "background_efficiency": float(w[dec & b_in].sum() / max(w[b_in].sum(), 1e-300)),
    }
    return menu


# --------------------------------------------------------------------------------------------
# ATLAS's published 2012 isEM menu (fixed cuts, no optimisation)
# --------------------------------------------------------------------------------------------

#: |eta| bin edges of the ATLAS 2012 photon menu in the barrel (the crack 1.37-1.52 and the
#: end-caps are outside our calorimeter)
ATLAS_2012_ETA_EDGES = (0.0, 0.6, 0.8, 1.15, 1.37)
#: E_T bin edges (GeV) of the 2012 Tight menu: only R_had changes at 80 GeV
ATLAS_2012_PT_EDGES_GEV = (0.0, 80.0, 1e9)
#: ATLAS 2012 Tight photon cuts per barrel |eta| bin (``PhotonIsEMSelectorConfig2012`` in
#: athena ``ElectronPhotonSelectorTools/python/PhotonIsEMSelectorCutDefs.py``; docs/references.md §5
#: quotes the |eta| < 0.6 column). ``Rhad``: one row per E_T bin (below / above 80 GeV); the other
#: variables do not depend on E_T. Strip cuts apply only where f1 > 0.005. DeltaE in MeV.
ATLAS_2012_TIGHT: dict[str, dict[str, tuple]] = {
    "unconverted": {
        "Rhad": ((0.020, 0.020, 0.01975, 0.01825), (0.01825, 0.01975, 0.01525, 0.01675)),
        "Reta": (0.92, 0.92, 0.93, 0.925),
        "weta2": (0.011, 0.0115, 0.0115, 0.0115),
        "Rphi": (0.93, 0.93, 0.93, 0.92),
        "weta1": (0.67, 0.69, 0.69, 0.715),
        "wtots1": (3.0, 3.0, 3.3, 3.5),
        "fracs1": (0.28, 0.33, 0.38, 0.425),
        "DeltaE": (180.0, 170.0, 165.0, 160.0),
        "Eratio": (0.80, 0.80, 0.76, 0.82),
    },
    "converted": {
        "Rhad": ((0.020, 0.018, 0.01975, 0.018), (0.01825, 0.01975, 0.01525, 0.01675)),
        "Reta": (0.92, 0.9125, 0.915, 0.91),
        "weta2": (0.011, 0.0117, 0.012, 0.0120),
        "Rphi": (0.57, 0.60, 0.60, 0.64),
        "weta1": (0.73, 0.715, 0.74, 0.75),
        "wtots1": (2.8, 2.9, 3.1, 3.3),
        "fracs1": (0.33, 0.38, 0.46, 0.52),
        "DeltaE": (160.0, 160.0, 120.0, 125.0),
        "Eratio": (0.85, 0.85, 0.80, 0.78),
    },
}  # fmt: skip


def atlas_2012_tight_menus() -> dict[str, CutMenu]:
    """The ATLAS 2012 Tight menus (:data:`ATLAS_2012_TIGHT`) as :class:`CutMenu` objects, keyed
    ``unconverted`` / ``converted``."""
    menus = {}
    n_eta, n_pt = len(ATLAS_2012_ETA_EDGES) - 1, len(ATLAS_2012_PT_EDGES_GEV) - 1
    for kind, table in ATLAS_2012_TIGHT.items():
        cuts = np.zeros((n_eta, n_pt, len(TIGHT_VARIABLES)))
        for k, v in enumerate(TIGHT_VARIABLES):
            for j in range(n_pt):
                cuts[:, j, k] = table[v][j] if v == "Rhad" else table[v]
        menus[kind] = CutMenu(f"atlas2012_tight_{kind}", TIGHT_VARIABLES, ATLAS_2012_ETA_EDGES,
                              ATLAS_2012_PT_EDGES_GEV, cuts, float("nan"))
    return menus


def atlas_2012_tight(photons: np.ndarray) -> np.ndarray:
    """Boolean ATLAS 2012 Tight decision per candidate (|eta| < 1.37; False outside).

    Converted candidates (the ``converted`` field; our simulation has no conversion-vertex
    reconstruction, so it is the truth conversion flag, documented in docs/photon.md) use the
    converted menu, the others the unconverted one.
    """
    if "converted" not in (photons.dtype.names or ()):
        raise SchemaError("photon table lacks field 'converted' needed by the ATLAS 2012 Tight menu")
    menus = atlas_2012_tight_menus()
    conv = np.asarray(photons["converted"], bool)
    return np.where(conv, menus["converted"].apply(photons), menus["unconverted"].apply(photons))
