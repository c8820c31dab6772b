"""Sliding-window clusters, ATLAS photon-ID shower shapes and per-layer cell images.

Clustering (:func:`find_clusters`): in the middle layer, the energy in every 3 x 5 (eta x phi)
window of cells is computed; a window whose energy is a local maximum among its 3 x 5
neighbours and whose E_T exceeds ``seed_et_gev`` seeds a cluster, centred on the hottest cell of
the window. Clusters with ``|eta| > acceptance_eta_max`` (1.37, the barrel acceptance before the
crack) are dropped.

Cluster energy: cells of all EM layers whose centres lie in the 3 x 7 middle-cell window
(Δη × Δφ = 0.075 × 0.172) around the centre cell; position: energy-weighted barycentre of the
middle-layer 3 x 7 cells.

Shower shapes (ATLAS definitions; ``E_T`` of the cluster ``E / cosh(eta)``):

==========  ===========================================================================
Rhad1       E_T in the first hadronic layer (cells with |Δη|, |Δφ| < 0.12) / E_T
Rhad        E_T in all hadronic layers (|Δη|, |Δφ| < 0.12) / E_T
Reta        E(3x7) / E(7x7) in the middle layer (eta x phi cells)
Rphi        E(3x3) / E(3x7) in the middle layer
weta2       energy-weighted eta width in 3 x 5 middle cells, corrected for the impact point
            in the cell (:func:`weta2_impact_correction`)
weta1       (w_s3) sqrt(sum E_i (i - i_max)^2 / sum E_i) over the 3 strips around the hottest,
            corrected for the impact point in the strip (:func:`ws3_impact_correction`)
wtots1      (w_s,tot) the same over the 21 strips around the hottest (2.5 middle cells)
fracs1      (F_side) [E(7 strips) - E(3 strips)] / E(3 strips) around the hottest strip
DeltaE      E of the second strip maximum - E of the strip minimum between the two (MeV)
Eratio      (E_1st max - E_2nd max) / (E_1st max + E_2nd max); 1 without a second maximum
f1, f3      strips and back energy in the cluster / cluster energy
==========  ===========================================================================

Impact-point corrections (as ATLAS's egamma reconstruction stores ``weta2`` and ``weta1``; the
middle-layer position is first corrected for the S-shape, :func:`s_shape_correction`): a
width computed from cell-centre positions depends on where the shower hits the cell. A shower
hitting a middle cell at its centre keeps most energy in one η row (narrow ``weta2``); one
hitting the boundary shares it between two rows, and the raw width grows by up to ~0.004 (0.0094
at the centre vs 0.0135 at the edge for 30-60 GeV photons in our simulation, the same size as
ATLAS's correction). ATLAS subtracts a parametrised function of the relative position in the cell
(``egammaqweta2c``, ``egammaqweta1c`` in athena ``Reconstruction/egamma/egammaUtils``, coefficients
quoted in :data:`WETA2_CORRECTION` / :func:`ws3_impact_correction`); the Tight cuts (docs/references.md §5
§5) are set on the corrected widths. Without the correction our prompt photons sat on the
``weta2 < 0.011`` and ``w_s3 < 0.67`` cuts (1/3 of them failing each).

Isolation: ``etcone20`` is the E_T of all read-out cells with centres in ΔR < 0.2 of the cluster
minus the 5 x 7 middle-cell core (no noise suppression; the cells carry the pile-up after the
readout's mean subtraction, :mod:`lhcml.sim.calorimeter`). ``etcone20_corrected`` subtracts the
event's ambient energy density times the cone area, as ATLAS's "ED" correction:
``etcone20 - rho * (pi 0.2^2 - 5 x 7 core area)``, with ``rho`` (``eventDensity``, MeV per unit
η×φ) the median E_T density of the event (:func:`event_density`).

The strip profile sums the two strip cells in phi nearest to the cluster (Δφ = 0.2) and keeps
only the cluster's strips: the 24 strips under the 3 middle cells of the 3 x 7 window (ATLAS's
egammaStripsShape fills its strip array from the cluster's cells; a wider profile, ±20 strips,
picked up in-time pile-up particles as second maxima). A second maximum is a strip above both
neighbours (both inside the cluster), with energy above ``second_max_noise_sigma`` times the
strip-pair noise.

Images (:data:`IMAGE_LAYERS`): for each layer the smallest fixed grid of that layer's own cells
that always covers the 7 x 11 middle-cell window (Δη × Δφ = 0.175 × 0.270) around the centre
cell, aligned to the window's lower edges: strips 56 x 4, middle 7 x 11, back 4 x 11, hadronic
(sum of the hadronic layers) 3 x 4, presampler (if enabled) 7 x 4. Cells outside the
calorimeter (beyond ``eta_max``) are zero (padding). As in the LAPP photon CNN, each image is
normalised to its own energy sum, where that sum is significant (> ``noise_significance`` times
the noise of the summed cells); otherwise the image is all zeros. The sums are kept
(``e_image_<layer>``) so the energies can be restored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lhcml.data.images import normalise_images  # the one copy (inference uses it without sim)
from lhcml.sim.calo_geometry import CaloGeometry, Layer
from lhcml.sim.calorimeter import CaloEvents

#: image datasets produced per cluster (``had`` is the sum of the hadronic layers)
IMAGE_LAYERS = ("strips", "middle", "back", "had")
#: shower-shape fields (ATLAS xAOD names)
SHOWER_SHAPES = (
    "Rhad1", "Rhad", "Reta", "Rphi", "weta2", "weta1", "wtots1", "fracs1", "DeltaE", "Eratio",
    "f1", "f3",
)
STRIP_HALF_WINDOW = 40  # strips either side of the centre cell's first strip in the wide window
#: half-width (η and φ) of the box of hadronic cells summed for R_had / R_had1: ATLAS's egammaIso
#: (athena ``Reconstruction/egamma/egammaCaloTools/src/egammaIso.cxx``: ``CaloCellList::select(eta,
#: phi, 0.12, 0.12)`` on the HEC and Tile cells, cell centres inside the box, no noise threshold)
HAD_HALF_WIDTH = 0.12


#: ATLAS ``egammaqweta2c`` coefficients (P0, P1, P2) of the weta2 impact-point correction
#: ``weta2 - (P0 + P1 u + P2 u^2)``; rows: |eta| < 0.8 and 0.8-1.5 (the barrel), columns: the
#: position ranges u < 0.1, 0.1 <= u < 0.9, u >= 0.9 (u = 0.5 at the cell centre, 0/1 at its edges)
WETA2_CORRECTION = np.array([
    [[0.0045, -0.0016, -0.0866], [0.005375, -0.0215, 0.0215], [-0.0562, 0.114, -0.053]],
    [[0.0039, 0.00816, -0.145], [0.005075, -0.0203, 0.0203], [-0.0324, 0.0653, -0.0286]],
])  # fmt: skip
#: middle-cell size in eta assumed by the ATLAS corrections (``RelPosition``)
_ATLAS_DETA2 = 0.025
#: strips per middle cell in the barrel (|eta| < 1.8) in the ws3 correction
_ATLAS_STRIPS_PER_CELL = 8


#: S-shape correction of the middle-layer cluster eta (as ATLAS's ``CaloSwEta2``): the barycentre
#: of the 3 x 7 cells is pulled towards the hottest cell's centre; the relative position ``|u|``
#: (cells, 0..0.5) of the barycentre maps to the impact point by linear interpolation between
#: these knots (odd in u); tabulated on our unconverted single photons (25-60 GeV, |eta| < 1.3,
#: median per bin) by ``benchmarks/photon_sshape.py`` (our calibration, as ATLAS's from its MC)
S_SHAPE_KNOTS: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.0, 0.0102, 0.0293, 0.0491, 0.0703, 0.0893, 0.1136, 0.1423, 0.1783, 0.2231, 0.2719, 0.3485, 0.4284, 0.5),
    (0.0, 0.0346, 0.0967, 0.1559, 0.2042, 0.2476, 0.285, 0.3252, 0.3612, 0.3923, 0.4244, 0.4582, 0.4888, 0.5),
)  # fmt: skip


def s_shape_correction(u: np.ndarray) -> np.ndarray:
    """Impact position in the cell (cells, odd in ``u``) from the barycentre position ``u`` (:data:`S_SHAPE_KNOTS`)."""
    u = np.clip(np.asarray(u, np.float64), -0.5, 0.5)
    return np.sign(u) * np.interp(np.abs(u), *S_SHAPE_KNOTS)


def weta2_impact_correction(eta: np.ndarray, eta_cell: np.ndarray, weta2: np.ndarray) -> np.ndarray:
    """ATLAS's impact-point correction of the raw middle-layer width (``egammaqweta2c``).

    Parameters
    ----------
    eta
        Cluster η in the middle layer (energy barycentre).
    eta_cell
        η centre of the hottest middle cell.
    weta2
        Raw width from cell-centre positions.

    Returns
    -------
    np.ndarray
        ``weta2 - (P0 + P1 u + P2 u^2)`` with ``u = fmod(|eta - eta_cell - 0.0125|, 0.025) / 0.025``
        (0.5 at the cell centre) and :data:`WETA2_CORRECTION` for |η| < 0.8 and 0.8-1.5.
    """
    eta = np.asarray(eta, np.float64)
    u = np.fmod(np.abs(eta - np.asarray(eta_cell, np.float64) - 0.5 * _ATLAS_DETA2), _ATLAS_DETA2) / _ATLAS_DETA2
    region = (np.abs(eta) >= 0.8).astype(np.int64)
    part = np.where(u < 0.1, 0, np.where(u < 0.9, 1, 2))
    p = WETA2_CORRECTION[region, part]
    return np.asarray(weta2, np.float64) - (p[:, 0] + p[:, 1] * u + p[:, 2] * u * u)


def ws3_impact_correction(eta: np.ndarray, eta_strip: np.ndarray, ws3: np.ndarray) -> np.ndarray:
    """ATLAS's impact-point correction of the 3-strip width w_s3 (``egammaqweta1c``).

    ``u = fmod(|eta - eta_strip - d/2|, d) / d - 0.5`` with the strip pitch ``d = 0.025/8``
    (0 at the strip centre, ±0.5 at its edges); |η| < 1.0: ``ws3 - 0.76 u^2``;
    1.0-1.45: ``ws3 - 0.85 u^2 + 1.9 u^4``; ``eta`` is the cluster η in the strips (barycentre),
    ``eta_strip`` the centre of the hottest strip.
    """
    eta = np.asarray(eta, np.float64)
    d = _ATLAS_DETA2 / _ATLAS_STRIPS_PER_CELL
    u = np.fmod(np.abs(eta - np.asarray(eta_strip, np.float64) - 0.5 * d), d) / d - 0.5
    u2 = u * u
    corr = np.where(np.abs(eta) < 1.0, 0.76 * u2, 0.85 * u2 - 1.9 * u2 * u2)
    return np.asarray(ws3, np.float64) - corr


#: patches of the median energy-density estimate: 7 x 16 patches of 0.4 x 2pi/16 in |eta| < 1.4
#: (our choice: the grid-median estimator of Cacciari, Salam, Soyez, fastjet's
#: GridMedianBackgroundEstimator, on cells; ATLAS takes the median pT/area of kt R = 0.5 jets of
#: topo-clusters in |eta| < 1.5 -- patch areas 0.16 are close to those jets' typical areas)
RHO_PATCH_DETA = 0.4
RHO_PATCH_NPHI = 16
RHO_ETA_MAX = 1.4


def event_density(calo: CaloEvents) -> np.ndarray:
    """Median E_T density per event (MeV per unit η×φ), ``rho`` of the isolation correction.

    All read-out layers' cell E_T (cell energy / cosh η of the cell centre; pile-up already
    mean-subtracted by the readout) are summed in patches of ``RHO_PATCH_DETA`` x 2π/
    ``RHO_PATCH_NPHI`` over |η| < ``RHO_ETA_MAX``; rho is the median of patch E_T / patch area.
    A hard photon or jet occupies a few of the 112 patches and barely moves the median.
    """
    geo = calo.geometry
    n_pe = int(round(2 * RHO_ETA_MAX / RHO_PATCH_DETA))
    patches = np.zeros((calo.n_events, n_pe, RHO_PATCH_NPHI))
    for lay in geo.readout_layers:
        if lay.n_phi % RHO_PATCH_NPHI:
            raise ValueError(f"layer '{lay.name}': n_phi={lay.n_phi} is not a multiple of {RHO_PATCH_NPHI}")
        centres = lay.eta_centre(np.arange(lay.n_eta))
        pe = np.floor((centres + RHO_ETA_MAX) / RHO_PATCH_DETA).astype(np.int64)
        inside = (pe >= 0) & (pe < n_pe)
        onehot = (pe[None, :] == np.arange(n_pe)[:, None]) & inside[None, :]
        et = calo.total(lay.name) / np.cosh(centres)[None, :, None].astype(np.float32)
        et_phi = et.reshape(calo.n_events, lay.n_eta, RHO_PATCH_NPHI, -1).sum(axis=3, dtype=np.float64)
        patches += np.einsum("pe,nef->npf", onehot.astype(np.float64), et_phi)
    area = RHO_PATCH_DETA * 2 * np.pi / RHO_PATCH_NPHI
    return np.median(patches.reshape(calo.n_events, -1), axis=1) / area


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return np.mod(dphi + np.pi, 2 * np.pi) - np.pi


def _gather(grid: np.ndarray, ev: np.ndarray, i0: np.ndarray, j0: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(n, h, w)`` windows of ``grid[ev]`` starting at cell ``(i0, j0)``; zero outside eta, wrap in phi."""
    n_eta, n_phi = grid.shape[1:]
    ii = i0[:, None] + np.arange(h)[None, :]
    jj = np.mod(j0[:, None] + np.arange(w)[None, :], n_phi)
    inside = (ii >= 0) & (ii < n_eta)
    iic = np.clip(ii, 0, n_eta - 1)
    out = grid[ev[:, None, None], iic[:, :, None], jj[:, None, :]]
    return np.where(inside[:, :, None], out, 0.0).astype(np.float32)


def image_shape(layer: Layer, middle: Layer, window: tuple[int, int]) -> tuple[int, int]:
    """Cells of ``layer`` needed to always cover ``window`` middle cells (aligned to its lower edge)."""

    def count(d_l: float, d_m: float, n: int) -> int:
        ratio = d_m / d_l
        if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:  # finer, aligned
            return int(round(n * ratio))
        return int(math.ceil((n * d_m + d_l - d_m) / d_l - 1e-9))

    return count(layer.deta, middle.deta, window[0]), count(layer.dphi, middle.dphi, window[1])


def layer_noise_mev(geo: CaloGeometry, name: str) -> float:
    """Noise per cell of an image layer (hadronic image: the layers' noise added in quadrature)."""
    lays = _layer_groups(geo)[name]
    return math.sqrt(sum(x.noise_mev**2 for x in lays))


@dataclass
class ClusterWindows:
    """Where each image starts, per layer: first eta and phi cell indices."""

    i0: dict[str, np.ndarray]
    j0: dict[str, np.ndarray]


def find_clusters(calo: CaloEvents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds of the sliding-window clustering: ``(event, ieta, iphi)`` of the centre middle cells."""
    geo = calo.geometry
    mid = geo.layer("middle")
    cl = geo.clustering
    grid = calo.total("middle").astype(np.float64)
    h, w = cl.seed_window
    modes = ("constant", "constant", "wrap")
    wsum = ndimage.uniform_filter(grid, size=(1, h, w), mode=modes) * (h * w)
    wmax = ndimage.maximum_filter(wsum, size=(1, h, w), mode=modes)
    eta_c = mid.eta_centre(np.arange(mid.n_eta))
    et = wsum / np.cosh(eta_c)[None, :, None]
    seed = (wsum >= wmax) & (et > cl.seed_et_gev * 1e3)
    ev, i, j = np.nonzero(seed)
    if len(ev) == 0:
        return ev, i, j
    # centre = hottest cell within the seed window
    win = _gather(grid, ev, i - h // 2, j - w // 2, h, w).reshape(len(ev), -1)
    k = np.argmax(win, axis=1)
    ic = i - h // 2 + k // w
    jc = np.mod(j - w // 2 + k % w, mid.n_phi)
    # two seeds with the same centre: keep one
    key = (ev * mid.n_eta + ic) * mid.n_phi + jc
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    return ev[first], ic[first], jc[first]


def _layer_groups(geo: CaloGeometry) -> dict[str, list[Layer]]:
    groups: dict[str, list[Layer]] = {}
    for lay in geo.em_layers:
        groups[lay.name] = [lay]
    had = list(geo.had_layers)
    ref = had[0]
    for lay in had[1:]:
        if (lay.deta, lay.n_phi, lay.eta_max) != (ref.deta, ref.n_phi, ref.eta_max):
            raise ValueError("hadronic layers must share one cell grid (deta, n_phi, eta_max)")
    groups["had"] = had
    return groups


def build_clusters(
    calo: CaloEvents,
    raw_images: bool = False,
    seeds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Find clusters and compute kinematics, shower shapes and images.

    Parameters
    ----------
    calo
        Cell energies of a batch of events.
    raw_images
        Also return the un-normalised images (MeV) as ``raw_<layer>`` and ``raw_<layer>_nopu``.
    seeds
        ``(event, ieta, iphi)`` centre middle cells to use instead of :func:`find_clusters`
        (then no acceptance cut is applied: one output row per seed, in order).

    Returns
    -------
    dict
        Per cluster: ``event`` (index in the batch), ``energy``, ``pt`` (E_T, MeV), ``eta``,
        ``phi``, the :data:`SHOWER_SHAPES`, ``e_image_<layer>`` and ``e_image_<layer>_nopu`` (MeV),
        ``etcone20`` (MeV), and images ``images_<layer>`` / ``images_<layer>_nopu``
        (float32 ``(n, H, W)``) for every image layer.
    """
    geo = calo.geometry
    cl = geo.clustering
    mid = geo.layer("middle")
    ev, ic, jc = find_clusters(calo) if seeds is None else (np.asarray(x, np.int64) for x in seeds)
    n = len(ev)
    groups = _layer_groups(geo)
    eta_mc = mid.eta_centre(ic)
    phi_mc = mid.phi_centre(jc)
    hw, ww = cl.image_window
    eta_start = mid.eta_lo + (ic - hw // 2) * mid.deta
    phi_start = -np.pi + (jc - ww // 2) * mid.dphi

    out: dict[str, np.ndarray] = {"event": ev}
    windows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, lays in groups.items():
        ref = lays[0]
        h, w = image_shape(ref, mid, cl.image_window)
        i0 = np.floor((eta_start - ref.eta_lo) / ref.deta + 1e-6).astype(np.int64)
        j0 = np.floor((phi_start + np.pi) / ref.dphi + 1e-6).astype(np.int64)
        tot = sum(_gather(calo.total(x.name), ev, i0, j0, h, w) for x in lays)
        nopu = sum(_gather(calo.nopu(x.name), ev, i0, j0, h, w) for x in lays)
        # pixel-centre offsets from the centre middle cell
        deta = ref.eta_centre(i0[:, None] + np.arange(h)[None, :]) - eta_mc[:, None]
        dphi = _wrap(ref.phi_centre(j0[:, None] + np.arange(w)[None, :]) - phi_mc[:, None])
        windows[name] = (tot, nopu, deta, dphi)

    # --- middle layer: energy, position, Reta, Rphi, weta2 -----------------------------------
    m_tot = windows["middle"][0].astype(np.float64)  # (n, 7, 11)
    ci, cj = hw // 2, ww // 2
    e37 = m_tot[:, ci - 1:ci + 2, cj - 3:cj + 4]
    e77 = m_tot[:, ci - 3:ci + 4, cj - 3:cj + 4].sum(axis=(1, 2))
    e33 = m_tot[:, ci - 1:ci + 2, cj - 1:cj + 2].sum(axis=(1, 2))
    e35 = m_tot[:, ci - 1:ci + 2, cj - 2:cj + 3]
    s37 = e37.sum(axis=(1, 2))
    wpos = np.clip(e37, 0, None)
    norm = np.maximum(wpos.sum(axis=(1, 2)), 1e-9)
    d_eta_cells = (np.arange(3) - 1) * mid.deta
    d_phi_cells = (np.arange(7) - 3) * mid.dphi
    eta = eta_mc + (wpos.sum(axis=2) * d_eta_cells).sum(axis=1) / norm
    phi = _wrap(phi_mc + (wpos.sum(axis=1) * d_phi_cells).sum(axis=1) / norm)
    w35 = e35.sum(axis=2)  # (n, 3) energy per eta row
    s35 = np.maximum(w35.sum(axis=1), 1e-9)
    eta_rows = eta_mc[:, None] + d_eta_cells[None, :]
    m1 = (w35 * eta_rows).sum(axis=1) / s35
    m2 = (w35 * eta_rows**2).sum(axis=1) / s35
    eta2 = eta_mc + mid.deta * s_shape_correction((eta - eta_mc) / mid.deta)  # impact point (S-shape)
    weta2 = weta2_impact_correction(eta2, eta_mc, np.sqrt(np.clip(m2 - m1**2, 0.0, None)))

    # --- per-layer cluster energies in the 3 x 7 window ----------------------------------------
    tol = 1e-6
    half_eta, half_phi = 1.5 * mid.deta + tol, 3.5 * mid.dphi + tol
    layer_e37 = {}
    for name in groups:
        tot, _, deta, dphi = windows[name]
        mask = (np.abs(deta)[:, :, None] < half_eta) & (np.abs(dphi)[:, None, :] < half_phi)
        layer_e37[name] = (tot * mask).sum(axis=(1, 2)).astype(np.float64)
    em_names = [x.name for x in geo.em_layers]
    energy = sum(layer_e37[x] for x in em_names)
    cosh = np.cosh(eta)
    et = energy / cosh
    safe_e = np.where(np.abs(energy) > 1e-9, energy, 1e-9)

    # --- hadronic leakage --------------------------------------------------------------------
    had_layers = groups["had"]
    ref = had_layers[0]
    hi0 = ref.eta_index(eta)
    hi0 = np.where(hi0 < 0, np.clip(np.floor((eta - ref.eta_lo) / ref.deta), 0, ref.n_eta - 1), hi0).astype(np.int64)
    hj0 = ref.phi_index(phi)
    deta_h = ref.eta_centre(hi0[:, None] - 1 + np.arange(3)) - eta[:, None]
    dphi_h = _wrap(ref.phi_centre(hj0[:, None] - 1 + np.arange(3)) - phi[:, None])
    # ATLAS egammaIso: every hadronic cell whose centre lies within |Δη| < 0.12 and |Δφ| < 0.12 of
    # the cluster (a box, no noise threshold)
    dr_mask = (np.abs(deta_h)[:, :, None] < HAD_HALF_WIDTH) & (np.abs(dphi_h)[:, None, :] < HAD_HALF_WIDTH)
    had_e = []
    for lay in had_layers:
        win = _gather(calo.total(lay.name), ev, hi0 - 1, hj0 - 1, 3, 3)
        had_e.append((win * dr_mask).sum(axis=(1, 2)).astype(np.float64))
    safe_et = np.where(np.abs(et) > 1e-9, et, 1e-9)
    rhad1 = had_e[0] / cosh / safe_et
    rhad = sum(had_e) / cosh / safe_et

    # --- strips ------------------------------------------------------------------------------
    st = geo.layer("strips")
    ratio = int(round(mid.deta / st.deta))
    s_i0 = np.floor((eta_mc - 0.5 * mid.deta - st.eta_lo) / st.deta + 1e-6).astype(np.int64) - STRIP_HALF_WINDOW
    nstrip = 2 * STRIP_HALF_WINDOW + ratio
    sj = st.phi_index(phi)
    frac = (phi + np.pi) / st.dphi - sj  # position inside the strip phi cell
    sj0 = np.where(frac >= 0.5, sj, sj - 1)
    prof = _gather(calo.total("strips"), ev, s_i0, sj0, nstrip, 2).sum(axis=2).astype(np.float64)
    k = np.arange(nstrip)
    central = (k >= STRIP_HALF_WINDOW - ratio) & (k < STRIP_HALF_WINDOW + 2 * ratio)
    # only the cluster's strips (the 3-middle-cell eta window, 24 strips) enter the strip shapes,
    # as ATLAS's egammaStripsShape fills its strip array from the cluster's cells
    prof = np.where(central[None, :], prof, 0.0)
    inner = central & np.roll(central, 1) & np.roll(central, -1)  # both neighbours in the cluster
    imax = np.argmax(np.where(central[None, :], prof, -np.inf), axis=1)
    e1 = prof[np.arange(n), imax]
    dk = k[None, :] - imax[:, None]
    pos = np.clip(prof, 0, None)

    def width(half: int) -> np.ndarray:
        m = np.abs(dk) <= half
        num = (pos * dk**2 * m).sum(axis=1)
        den = np.maximum((pos * m).sum(axis=1), 1e-9)
        return np.sqrt(num / den)

    # cluster eta in the strips: barycentre of the strips of the 3-middle-cell window
    eta_strips = st.eta_centre(s_i0[:, None] + k[None, :])
    wc = np.where(central[None, :], pos, 0.0)
    eta1 = np.where(wc.sum(axis=1) > 0, (wc * eta_strips).sum(axis=1) / np.maximum(wc.sum(axis=1), 1e-9), eta)
    weta1 = ws3_impact_correction(eta1, st.eta_centre(s_i0 + imax), width(1))
    wtots1 = width(10)
    e3 = (prof * (np.abs(dk) <= 1)).sum(axis=1)
    e7 = (prof * (np.abs(dk) <= 3)).sum(axis=1)
    fracs1 = (e7 - e3) / np.where(np.abs(e3) > 1e-9, e3, 1e-9)
    thr = cl.second_max_noise_sigma * st.noise_mev * math.sqrt(2.0)
    locmax = np.zeros_like(prof, dtype=bool)
    locmax[:, 1:-1] = (prof[:, 1:-1] > prof[:, :-2]) & (prof[:, 1:-1] >= prof[:, 2:])
    cand = locmax & inner[None, :] & (dk != 0) & (prof > thr)
    e2 = np.where(cand, prof, -np.inf).max(axis=1) if n else np.zeros(0)
    has2 = np.isfinite(e2)
    i2 = np.argmax(np.where(cand, prof, -np.inf), axis=1) if n else np.zeros(0, int)
    lo = np.minimum(imax, i2)[:, None]
    hi = np.maximum(imax, i2)[:, None]
    between = (k[None, :] > lo) & (k[None, :] < hi)
    emin = np.where(between, prof, np.inf).min(axis=1) if n else np.zeros(0)
    emin = np.where(np.isfinite(emin), emin, np.where(has2, e2, 0.0))
    delta_e = np.where(has2, e2 - emin, 0.0)
    e2c = np.where(has2, e2, 0.0)
    eratio = np.where(has2, (e1 - e2c) / np.where(np.abs(e1 + e2c) > 1e-9, e1 + e2c, 1e-9), 1.0)

    f1 = layer_e37["strips"] / safe_e
    f3 = layer_e37["back"] / safe_e

    # --- isolation: E_T in DeltaR < 0.2 minus the 5 x 7 core, all layers ----------------------
    etcone = np.zeros(n)
    for lay in geo.readout_layers:
        nh = int(math.ceil(0.2 / lay.deta)) + 1
        nw = int(math.ceil(0.2 / lay.dphi)) + 1
        li = lay.eta_index(eta)
        li = np.where(li < 0, np.clip(np.floor((eta - lay.eta_lo) / lay.deta), 0, lay.n_eta - 1), li).astype(np.int64)
        lj = lay.phi_index(phi)
        win = _gather(calo.total(lay.name), ev, li - nh, lj - nw, 2 * nh + 1, 2 * nw + 1).astype(np.float64)
        ce = lay.eta_centre(li[:, None] - nh + np.arange(2 * nh + 1))
        de = ce - eta[:, None]
        dp = _wrap(lay.phi_centre(lj[:, None] - nw + np.arange(2 * nw + 1)) - phi[:, None])
        cone = (de[:, :, None] ** 2 + dp[:, None, :] ** 2) < 0.04
        core = (np.abs(de)[:, :, None] < 2.5 * mid.deta) & (np.abs(dp)[:, None, :] < 3.5 * mid.dphi)
        etcone += ((win * (cone & ~core)) / np.cosh(ce)[:, :, None]).sum(axis=(1, 2))

    rho = event_density(calo)[ev] if n else np.zeros(0)
    cone_area = np.pi * 0.2**2 - 5 * mid.deta * 7 * mid.dphi
    out.update(
        eventDensity=rho, etcone20_corrected=etcone - rho * cone_area,
        energy=energy, pt=et, eta=eta, phi=phi, Rhad1=rhad1, Rhad=rhad,
        Reta=s37 / np.where(np.abs(e77) > 1e-9, e77, 1e-9),
        Rphi=e33 / np.where(np.abs(s37) > 1e-9, s37, 1e-9),
        weta2=weta2, weta1=weta1, wtots1=wtots1, fracs1=fracs1, DeltaE=delta_e, Eratio=eratio,
        f1=f1, f3=f3, etcone20=etcone,
    )

    # --- images ------------------------------------------------------------------------------
    for name, lays in groups.items():
        tot, nopu, _, _ = windows[name]
        sigma_cell = math.sqrt(sum(x.noise_mev**2 for x in lays))
        for suffix, img in (("", tot), ("_nopu", nopu)):
            normed, s = normalise_images(img, sigma_cell, cl.noise_significance)
            out[f"images_{name}{suffix}"] = normed
            out[f"e_image_{name}{suffix}"] = s
            if raw_images:
                out[f"raw_{name}{suffix}"] = img.astype(np.float32)

    if seeds is not None:
        return out
    keep = np.abs(eta) < geo.acceptance_eta_max
    return {k: v[keep] for k, v in out.items()}
