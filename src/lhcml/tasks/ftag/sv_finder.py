"""SV1-like inclusive secondary-vertex finder (after ATLAS's SV1, ATL-PHYS-PUB-2017-011).

Per jet, on its tracks:

1. track selection: valid, ``pT > pt_min``, ``|d0| < d0_max``, ``|z0 sinθ| < z0sintheta_max``
   (pileup tracks would make fake vertices displaced in z), at least ``min_si_hits``;
2. two-track vertices from every pair of tracks whose 3-D impact-parameter significance exceeds
   ``track_sig_min``, fitted on the helices (:mod:`lhcml.tasks.ftag.tracks`); a pair is kept if
   ``χ² < pair_chi2_max`` (1 dof), the vertex lies in the jet hemisphere with
   ``L3d / σ > pair_sig_min`` and ``Lxy / σ > pair_sig_xy_min`` (pairs of pileup tracks form
   vertices on the beam line, displaced only in z), and it is not
   * a V0: opposite charges and ``m(ππ)`` within ``k0s_window`` of the K0S mass, or ``m(pπ)``
     (higher-momentum track the proton) within ``lambda_window`` of the Λ mass, or ``m(ee)`` below
     ``conversion_mass_max`` (photon conversion);
   * a material interaction: transverse radius within ``material_window`` of the beam pipe or of
     a pixel layer;
   * inconsistent with the hit pattern: radius beyond the IBL (B-layer) while a track has an
     IBL (B-layer) hit;
3. the tracks of all kept pairs are fitted to one vertex; the track with the largest χ²
   contribution is removed while it exceeds ``track_chi2_max`` (and refitted), and until the
   vertex mass is below ``mass_max``; at least two tracks must remain.

Outputs (jet variables): ``SV1_masssvx`` (MeV, π hypothesis), ``SV1_efracsvx`` (energy of the
vertex tracks over all tracks of the jet), ``SV1_N2Tpair``, ``SV1_NGTinSvx``, ``SV1_Lxy``, ``SV1_L3d``
(mm, from the primary vertex at the origin of the track frame), ``SV1_significance3d`` and
``SV1_deltaR`` (between the jet axis and the PV→SV direction). Without a vertex: ``NGTinSvx = 0``
and the continuous variables are -1 (``N2Tpair`` keeps its count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from lhcml.tasks.ftag.tracks import (
    B_FIELD,
    D0,
    QOP,
    fit_vertex,
    line_seed,
    momentum_at,
    residuals,
    track_parameters,
)

M_K0S = 497.611
M_LAMBDA = 1115.683
M_PROTON = 938.272
M_PION = 139.57039
M_ELECTRON = 0.51099895
#: radii (mm) of the beam pipe, IBL and pixel layers (ATLAS Run 2)
MATERIAL_RADII = (23.5, 33.25, 50.5, 88.5, 122.5)

SV1_OUTPUTS = (
    "SV1_masssvx", "SV1_efracsvx", "SV1_N2Tpair", "SV1_NGTinSvx", "SV1_Lxy", "SV1_L3d",
    "SV1_significance3d", "SV1_deltaR",
)  # fmt: skip


@dataclass(frozen=True)
class SV1Config:
    """Cuts of the SV1-like finder (mm, MeV)."""

    pt_min: float = 500.0
    d0_max: float = 5.0
    min_si_hits: int = 7
    z0sintheta_max: float = 2.0  # removes pileup tracks (they form fake vertices far in z)
    track_sig_min: float = 2.0
    pair_chi2_max: float = 4.5
    pair_sig_min: float = 4.0
    pair_sig_xy_min: float = 3.0
    k0s_window: float = 15.0
    lambda_window: float = 8.0
    conversion_mass_max: float = 40.0
    material_window: float = 2.5
    track_chi2_max: float = 6.0
    mass_max: float = 6000.0
    pv_sigma_xy: float = 0.015
    pv_sigma_z: float = 0.03


@njit(cache=True)
def _pair_mass(pa, pb, ma, mb):
    e = np.sqrt(pa[0] ** 2 + pa[1] ** 2 + pa[2] ** 2 + ma * ma) + np.sqrt(
        pb[0] ** 2 + pb[1] ** 2 + pb[2] ** 2 + mb * mb
    )
    px = pa[0] + pb[0]
    py = pa[1] + pb[1]
    pz = pa[2] + pb[2]
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(max(m2, 0.0))


@njit(cache=True)
def two_track_vertices(params, sel, sig3d, ibl, bl, jetdir, cuts, b_field, out_v, out_ok):
    """Fit and select all two-track vertices of one jet; return the number of pairs kept.

    ``out_v[k]`` receives the k-th kept vertex, ``out_ok[i, j]`` marks kept pairs.
    ``cuts``: (track_sig_min, pair_chi2_max, pair_sig_min, k0s_window, lambda_window,
    conversion_mass_max, material_window, pv_sigma_xy, pv_sigma_z, pair_sig_xy_min).
    """
    n_t = params.shape[0]
    chi = np.zeros(2)
    cov = np.zeros((3, 3))
    idx = np.zeros(2, dtype=np.int64)
    res = np.zeros(9)
    mat = np.array([23.5, 33.25, 50.5, 88.5, 122.5])
    n_kept = 0
    for i in range(n_t):
        if not sel[i] or sig3d[i] < cuts[0]:
            continue
        for j in range(i + 1, n_t):
            if not sel[j] or sig3d[j] < cuts[0]:
                continue
            idx[0] = i
            idx[1] = j
            v = fit_vertex(params, idx, 2, line_seed(params[i], params[j]), b_field, 10, chi, cov)
            if chi[0] + chi[1] > cuts[1] or not np.all(np.isfinite(v)):
                continue
            l3 = np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
            if v[0] * jetdir[0] + v[1] * jetdir[1] + v[2] * jetdir[2] <= 0:
                continue
            u = v / max(l3, 1e-12)
            var = 0.0
            for a in range(3):
                for b in range(3):
                    var += u[a] * cov[a, b] * u[b]
            var += (u[0] ** 2 + u[1] ** 2) * cuts[7] ** 2 + u[2] ** 2 * cuts[8] ** 2
            if l3 / np.sqrt(var) < cuts[2]:
                continue
            r = np.sqrt(v[0] ** 2 + v[1] ** 2)
            # transverse displacement significance: pileup pairs sit on the beam line
            ux = v[0] / max(r, 1e-12)
            uy = v[1] / max(r, 1e-12)
            var_xy = ux * ux * cov[0, 0] + 2 * ux * uy * cov[0, 1] + uy * uy * cov[1, 1]
            if r / np.sqrt(var_xy + cuts[7] ** 2) < cuts[9]:
                continue
            # hit-pattern consistency: no hits inside the vertex radius
            if r > 33.25 + cuts[6] and (ibl[i] > 0 or ibl[j] > 0):
                continue
            if r > 50.5 + cuts[6] and (bl[i] > 0 or bl[j] > 0):
                continue
            is_mat = False
            for rm in mat:
                if abs(r - rm) < cuts[6]:
                    is_mat = True
            if is_mat:
                continue
            residuals(params[i], v, b_field, res)
            px, py, pz, e = momentum_at(params[i], res[4], b_field)
            pa = np.array([px, py, pz])
            residuals(params[j], v, b_field, res)
            px, py, pz, e = momentum_at(params[j], res[4], b_field)
            pb = np.array([px, py, pz])
            if params[i, QOP] * params[j, QOP] < 0:
                if abs(_pair_mass(pa, pb, M_PION, M_PION) - M_K0S) < cuts[3]:
                    continue
                na = pa[0] ** 2 + pa[1] ** 2 + pa[2] ** 2
                nb = pb[0] ** 2 + pb[1] ** 2 + pb[2] ** 2
                m_l = (
                    _pair_mass(pa, pb, M_PROTON, M_PION)
                    if na > nb
                    else _pair_mass(pa, pb, M_PION, M_PROTON)
                )
                if abs(m_l - M_LAMBDA) < cuts[4]:
                    continue
                if _pair_mass(pa, pb, M_ELECTRON, M_ELECTRON) < cuts[5]:
                    continue
            out_ok[i, j] = True
            out_ok[j, i] = True
            out_v[n_kept] = v
            n_kept += 1
    return n_kept


@njit(cache=True)
def _vertex_mass(params, idx, n, v, b_field):
    res = np.zeros(9)
    px = py = pz = e = 0.0
    for k in range(n):
        residuals(params[idx[k]], v, b_field, res)
        a, b, c, d = momentum_at(params[idx[k]], res[4], b_field)
        px += a
        py += b
        pz += c
        e += d
    return np.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0)), e


@njit(cache=True)
def _sv1_kernel(params, sel, sig3d, ibl, bl, jetdir, e_all, cuts, merge_cuts, b_field, out, in_vtx):
    n_jets, n_t = sel.shape
    out_v = np.zeros((n_t * (n_t - 1) // 2 + 1, 3))
    chi = np.zeros(n_t)
    cov = np.zeros((3, 3))
    for jj in range(n_jets):
        ok = np.zeros((n_t, n_t), dtype=np.bool_)
        n2t = two_track_vertices(
            params[jj], sel[jj], sig3d[jj], ibl[jj], bl[jj], jetdir[jj], cuts, b_field, out_v, ok
        )
        out[jj, 2] = n2t
        for c in (0, 1, 4, 5, 6, 7):
            out[jj, c] = -1.0
        out[jj, 3] = 0
        if n2t == 0:
            continue
        idx = np.zeros(n_t, dtype=np.int64)
        n = 0
        for i in range(n_t):
            used = False
            for j in range(n_t):
                if ok[i, j]:
                    used = True
            if used:
                idx[n] = i
                n += 1
        v0 = np.zeros(3)
        for k in range(n2t):
            v0 += out_v[k] / n2t
        v = v0
        while n >= 2:
            v = fit_vertex(params[jj], idx, n, v0, b_field, 20, chi, cov)
            worst = 0
            for k in range(1, n):
                if chi[k] > chi[worst]:
                    worst = k
            mass, esv = _vertex_mass(params[jj], idx, n, v, b_field)
            if chi[worst] > merge_cuts[0] or mass > merge_cuts[1]:
                for k in range(worst, n - 1):
                    idx[k] = idx[k + 1]
                n -= 1
                v0 = v
                continue
            break
        if n < 2 or not np.all(np.isfinite(v)):
            continue
        mass, esv = _vertex_mass(params[jj], idx, n, v, b_field)
        l3 = np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
        u = v / max(l3, 1e-12)
        var = 0.0
        for a in range(3):
            for b in range(3):
                var += u[a] * cov[a, b] * u[b]
        var += (u[0] ** 2 + u[1] ** 2) * cuts[7] ** 2 + u[2] ** 2 * cuts[8] ** 2
        out[jj, 0] = mass
        out[jj, 1] = esv / e_all[jj] if e_all[jj] > 0 else -1.0
        out[jj, 3] = n
        out[jj, 4] = np.sqrt(v[0] ** 2 + v[1] ** 2)
        out[jj, 5] = l3
        out[jj, 6] = l3 / np.sqrt(var)
        # deltaR between jet axis and PV->SV direction
        eta_v = np.arcsinh(v[2] / max(out[jj, 4], 1e-12))
        phi_v = np.arctan2(v[1], v[0])
        jt = np.sqrt(jetdir[jj, 0] ** 2 + jetdir[jj, 1] ** 2)
        eta_j = np.arcsinh(jetdir[jj, 2] / max(jt, 1e-12))
        phi_j = np.arctan2(jetdir[jj, 1], jetdir[jj, 0])
        dphi = phi_v - phi_j
        while dphi > np.pi:
            dphi -= 2 * np.pi
        while dphi < -np.pi:
            dphi += 2 * np.pi
        out[jj, 7] = np.sqrt((eta_v - eta_j) ** 2 + dphi**2)
        out[jj, 8:11] = v
        for k in range(n):
            in_vtx[jj, idx[k]] = True


def jet_direction(jets: np.ndarray) -> np.ndarray:
    """Unit vectors of the jet axes, ``(n_jets, 3)``."""
    th = 2 * np.arctan(np.exp(-jets["eta"].astype(np.float64)))
    phi = jets["phi"].astype(np.float64)
    return np.stack([np.sin(th) * np.cos(phi), np.sin(th) * np.sin(phi), np.cos(th)], axis=1)


def track_energy(tracks: np.ndarray) -> np.ndarray:
    """Energy of each track under the pion hypothesis (MeV); 0 for padding."""
    p = np.abs(1.0 / np.where(tracks["qOverP"] == 0, np.inf, tracks["qOverP"].astype(np.float64)))
    return np.where(tracks["valid"], np.sqrt(p**2 + M_PION**2), 0.0)


def ip3d_significance(params: np.ndarray) -> np.ndarray:
    """Unsigned 3-D impact-parameter significance ``sqrt((d0/σ)² + (z0/σ)²)`` per track."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.hypot(params[..., D0] / params[..., 5], params[..., 1] / params[..., 6])


def find_sv1(
    jets: np.ndarray, tracks: np.ndarray, cfg: SV1Config = SV1Config(), b_field: float = B_FIELD
) -> dict[str, np.ndarray]:
    """Run the SV1-like finder on a chunk of jets; return the jet variables.

    Also returns ``SV1_x/_y/_z`` (vertex position, NaN without vertex) and ``SV1_trackInVertex``
    (``(n_jets, n_tracks)`` bool) for validation; :func:`lhcml.tasks.ftag.baselines.apply_baselines`
    writes only :data:`SV1_OUTPUTS`.
    """
    params = track_parameters(tracks)
    si = tracks["numberOfPixelHits"].astype(int) + tracks["numberOfSCTHits"]
    sel = (
        tracks["valid"]
        & (tracks["pt"] > cfg.pt_min)
        & (np.abs(tracks["d0"]) < cfg.d0_max)
        & (np.abs(tracks["z0SinTheta"]) < cfg.z0sintheta_max)
        & (si >= cfg.min_si_hits)
    )
    sig = ip3d_significance(params)
    cuts = np.array(
        [cfg.track_sig_min, cfg.pair_chi2_max, cfg.pair_sig_min, cfg.k0s_window,
         cfg.lambda_window, cfg.conversion_mass_max, cfg.material_window, cfg.pv_sigma_xy,
         cfg.pv_sigma_z, cfg.pair_sig_xy_min],
        dtype=np.float64,
    )  # fmt: skip
    merge = np.array([cfg.track_chi2_max, cfg.mass_max], dtype=np.float64)
    out = np.zeros((len(jets), 11))
    in_vtx = np.zeros(sel.shape, dtype=bool)
    _sv1_kernel(
        params, sel, np.nan_to_num(sig), tracks["numberOfInnermostPixelLayerHits"].astype(np.int64),
        tracks["numberOfNextToInnermostPixelLayerHits"].astype(np.int64), jet_direction(jets),
        track_energy(tracks).sum(axis=1), cuts, merge, float(b_field), out, in_vtx,
    )  # fmt: skip
    res: dict[str, np.ndarray] = {}
    for k, name in enumerate(SV1_OUTPUTS):
        dt = np.int16 if name in ("SV1_N2Tpair", "SV1_NGTinSvx") else np.float32
        res[name] = out[:, k].astype(dt)
    has = out[:, 3] > 0
    for k, ax in enumerate("xyz"):
        res[f"SV1_{ax}"] = np.where(has, out[:, 8 + k], np.nan)
    res["SV1_trackInVertex"] = in_vtx
    return res


# ------------------------------------------------------------------------ SV1 likelihood
MASS_BINS = np.array([0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 6000.0, 1e9])
EFRAC_BINS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0001])
N2T_BINS = np.array([1, 2, 3, 5, 9, 10_000])


@dataclass
class SV1Templates:
    """3-D templates of (mass, efrac, N2T) per flavour and the vertex-finding efficiency.

    ``P_f(jet) = ε_f · pdf_f(m, efrac, N2T)`` for jets with a vertex and ``1 - ε_f`` without.
    """

    counts: np.ndarray | None = None  # (n_flav, n_mass, n_efrac, n_n2t)
    n_novtx: np.ndarray | None = None  # (n_flav,)
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros((3, len(MASS_BINS) - 1, len(EFRAC_BINS) - 1, len(N2T_BINS) - 1))
        if self.n_novtx is None:
            self.n_novtx = np.zeros(3)

    @staticmethod
    def _bins(sv: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        def dig(x, e):
            return np.clip(np.searchsorted(e, x, side="right") - 1, 0, len(e) - 2)

        return (
            dig(sv["SV1_masssvx"], MASS_BINS),
            dig(np.clip(sv["SV1_efracsvx"], 0, 1), EFRAC_BINS),
            dig(sv["SV1_N2Tpair"], N2T_BINS),
        )

    def fill(self, flavour_label: np.ndarray, sv: dict[str, np.ndarray]) -> None:
        has = sv["SV1_NGTinSvx"] > 0
        bm, be, bn = self._bins(sv)
        for i, code in enumerate((5, 4, 0)):
            f = flavour_label == code
            np.add.at(self.counts[i], (bm[f & has], be[f & has], bn[f & has]), 1.0)
            self.n_novtx[i] += np.sum(f & ~has)

    def apply(self, sv: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_vtx = self.counts.sum(axis=(1, 2, 3))
        if np.any(n_vtx + self.n_novtx == 0):
            raise ValueError("SV1 templates are empty for some flavour: fit on b, c and light jets")
        eff = (n_vtx + 0.5) / (n_vtx + self.n_novtx + 1.0)
        c = self.counts + self.smoothing
        pdf = c / c.sum(axis=(1, 2, 3), keepdims=True)
        has = sv["SV1_NGTinSvx"] > 0
        bm, be, bn = self._bins(sv)
        like = np.where(has[None], eff[:, None] * pdf[:, bm, be, bn], (1 - eff)[:, None])
        p = like / like.sum(axis=0, keepdims=True)
        return {f"SV1_p{f}": p[k].astype(np.float32) for k, f in enumerate("bcu")}
