"""Jet-substructure observables computed from padded constituent arrays.

All functions take ``(n_jets, N)`` padded arrays of constituent ``pt`` [MeV], ``eta``, ``phi``,
``energy`` [MeV] and the ``valid`` mask (True = real constituent), as stored in the ``flow``
dataset (:data:`lhcml.data.schema.FLOW_FIELDS`), and return one value per jet. The per-jet work
runs in numba; no Python loop over jets or constituents.

Definitions (angles ΔR in rapidity–φ as FastJet, pseudorapidity for a constituent whose
energy is below |pz|; the jet radius ``R`` = 1.0 unless given):

* ``mass``: invariant mass of the summed constituent four-vectors.
* N-subjettiness (Thaler–Van Tilburg, β = 1):
  ``τ_N = Σ_k pT_k min_a ΔR_{a,k} / Σ_k pT_k R``, axes from exclusive-kt reclustering into N
  subjets with the winner-take-all recombination scheme (``axes="wta_kt"``, the ATLAS
  ``Tau*_wta`` convention) or the E-scheme (``axes="kt"``). ``τ21 = τ2/τ1``, ``τ32 = τ3/τ2``.
* Energy correlation functions (Larkoski–Salam–Thaler), β = 1 and 2:
  ``ECF1 = Σ pT_i``, ``ECF2 = Σ_{i<j} pT_i pT_j ΔR_ij^β``,
  ``ECF3 = Σ_{i<j<k} pT_i pT_j pT_k (ΔR_ij ΔR_ik ΔR_jk)^β``;
  ``C2 = ECF3 ECF1 / ECF2²``, ``D2 = ECF3 ECF1³ / ECF2³``.
* kt splitting scales: the constituents are reclustered with the exclusive kt algorithm
  (E-scheme, ``d_ij = min(pT_i², pT_j²) ΔR_ij²``, no beam distance); ``Split12 = √d12`` is the kt distance of
  the last merging step (two subjets → one), ``Split23 = √d23`` the one before.
* ``nChargedConstituents``: number of valid constituents with non-zero charge (track multiplicity).
* ``mSoftDrop``: soft-drop groomed mass (Larkoski–Marzani–Soyez–Thaler) with the
  Cambridge/Aachen reclustering history, ``z_cut = 0.1``, ``β = 0`` (modified mass-drop) by
  default: the last merging is undone while ``min(pT1, pT2)/(pT1 + pT2) < z_cut (ΔR12/R)^β``,
  following the harder branch.

Ratios whose denominator vanishes (a one-constituent jet has ``τ1 = ECF2 = 0``) are set to 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

#: names of the jet fields added by :func:`compute_substructure` (ATLAS dumper style)
SUBSTRUCTURE_FIELDS: tuple[str, ...] = (
    "Tau1_wta",
    "Tau2_wta",
    "Tau3_wta",
    "Tau21_wta",
    "Tau32_wta",
    "ECF1",
    "ECF2",
    "ECF3",
    "ECF2_beta2",
    "ECF3_beta2",
    "C2",
    "D2",
    "C2_beta2",
    "D2_beta2",
    "Split12",
    "Split23",
    "nChargedConstituents",
    "mSoftDrop",
    "mass_constituents",
)

_TWO_PI = 2.0 * np.pi


@njit(cache=True, inline="always")
def _dr2(eta1, phi1, eta2, phi2):
    dphi = abs(phi1 - phi2)
    if dphi > np.pi:
        dphi = _TWO_PI - dphi
    deta = eta1 - eta2
    return deta * deta + dphi * dphi


@njit(cache=True)
def _cluster(pt, eta, phi, energy, p, wta, radius, eta_in):
    """Generalised-kt clustering of one jet's constituents into a full binary tree.

    Returns node arrays of length ``2n - 1``: four-momentum, pt, eta, phi, children (``-1`` for
    leaves) and the distance ``d_ij`` at which each internal node was formed. Node ``n + s`` is
    made by merge step ``s``; the root is the last node. No beam distance is used (exclusive
    clustering), so the tree always ends in one node. Nearest-neighbour caching as in FastJet's
    N² strategy: the pair with the smallest ``d_ij`` consists of a particle and its geometric
    nearest neighbour.
    """
    n = pt.shape[0]
    m = 2 * n - 1
    npx = np.zeros(m)
    npy = np.zeros(m)
    npz = np.zeros(m)
    ne = np.zeros(m)
    npt = np.zeros(m)
    neta = np.zeros(m)
    nphi = np.zeros(m)
    c1 = -np.ones(m, dtype=np.int64)
    c2 = -np.ones(m, dtype=np.int64)
    dmerge = np.zeros(m)
    kt = np.zeros(m)  # pt^(2p)
    r2 = radius * radius
    for i in range(n):
        npt[i] = pt[i]
        neta[i] = eta[i]
        nphi[i] = phi[i]
        npx[i] = pt[i] * np.cos(phi[i])
        npy[i] = pt[i] * np.sin(phi[i])
        npz[i] = pt[i] * np.sinh(eta_in[i])
        ne[i] = energy[i]
    if n <= 1:
        return npx, npy, npz, ne, npt, neta, nphi, c1, c2, dmerge

    def _ktp(x):
        if p == 0:
            return 1.0
        return x ** (2 * p)

    active = np.arange(n)
    nact = n
    nn = np.zeros(m, dtype=np.int64)
    nnd = np.full(m, np.inf)
    for i in range(n):
        kt[i] = _ktp(max(npt[i], 1e-12))
    for a in range(nact):
        i = active[a]
        best = np.inf
        bj = -1
        for b in range(nact):
            j = active[b]
            if j == i:
                continue
            d = _dr2(neta[i], nphi[i], neta[j], nphi[j])
            if d < best:
                best = d
                bj = j
        nn[i] = bj
        nnd[i] = best
    new = n
    while nact > 1:
        # smallest d_ij = min(kt_i, kt_j) dR^2 / R^2 over (i, nn[i])
        dbest = np.inf
        ia = -1
        for a in range(nact):
            i = active[a]
            d = min(kt[i], kt[nn[i]]) * nnd[i] / r2
            if d < dbest:
                dbest = d
                ia = i
        ib = nn[ia]
        # merge ia, ib -> new
        npx[new] = npx[ia] + npx[ib]
        npy[new] = npy[ia] + npy[ib]
        npz[new] = npz[ia] + npz[ib]
        ne[new] = ne[ia] + ne[ib]
        if wta:
            npt[new] = npt[ia] + npt[ib]
            hard = ia if npt[ia] >= npt[ib] else ib
            neta[new] = neta[hard]
            nphi[new] = nphi[hard]
        else:
            ptn = np.sqrt(npx[new] ** 2 + npy[new] ** 2)
            npt[new] = ptn
            nphi[new] = np.arctan2(npy[new], npx[new])
            if ne[new] > abs(npz[new]):
                neta[new] = 0.5 * np.log((ne[new] + npz[new]) / (ne[new] - npz[new]))
            else:
                neta[new] = np.arcsinh(npz[new] / ptn) if ptn > 0 else 0.0
        kt[new] = _ktp(max(npt[new], 1e-12))
        c1[new] = ia
        c2[new] = ib
        dmerge[new] = dbest
        # update the active list: remove ia, ib, add new
        k = 0
        for a in range(nact):
            j = active[a]
            if j != ia and j != ib:
                active[k] = j
                k += 1
        active[k] = new
        nact = k + 1
        # nearest neighbours
        best = np.inf
        bj = -1
        for a in range(nact - 1):
            j = active[a]
            d = _dr2(neta[new], nphi[new], neta[j], nphi[j])
            if d < best:
                best = d
                bj = j
            if d < nnd[j]:
                nnd[j] = d
                nn[j] = new
        nn[new] = bj
        nnd[new] = best
        for a in range(nact - 1):
            j = active[a]
            if nn[j] == ia or nn[j] == ib:
                best = np.inf
                bj = -1
                for b in range(nact):
                    q = active[b]
                    if q == j:
                        continue
                    d = _dr2(neta[j], nphi[j], neta[q], nphi[q])
                    if d < best:
                        best = d
                        bj = q
                nn[j] = bj
                nnd[j] = best
        new += 1
    return npx, npy, npz, ne, npt, neta, nphi, c1, c2, dmerge


@njit(cache=True)
def _exclusive(c1, c2, n, njet, out):
    """Indices of the ``njet`` exclusive subjets (undo the last ``njet - 1`` merges)."""
    m = 2 * n - 1
    out[0] = m - 1
    cnt = 1
    while cnt < njet:
        # split the latest-formed node (largest index) among the current ones
        best = -1
        pos = -1
        for a in range(cnt):
            if out[a] > best:
                best = out[a]
                pos = a
        if c1[best] < 0:
            break
        out[pos] = c1[best]
        out[cnt] = c2[best]
        cnt += 1
    return cnt


@njit(cache=True)
def _tau(pt, eta, phi, neta, nphi, axes, naxes, radius):
    num = 0.0
    den = 0.0
    for k in range(pt.shape[0]):
        dmin = np.inf
        for a in range(naxes):
            d = np.sqrt(_dr2(eta[k], phi[k], neta[axes[a]], nphi[axes[a]]))
            if d < dmin:
                dmin = d
        if naxes == 0:
            dmin = 0.0
        num += pt[k] * dmin
        den += pt[k] * radius
    return num / den if den > 0 else 0.0


@njit(cache=True)
def _mass(px, py, pz, e):
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(m2) if m2 > 0 else 0.0


@njit(cache=True)
def _substructure_kernel(pt, eta, phi, energy, valid, charge, radius, zcut, sd_beta, wta, out):
    n_jets = pt.shape[0]
    axes = np.zeros(3, dtype=np.int64)
    for j in range(n_jets):
        idx = np.nonzero(valid[j])[0]
        n = idx.shape[0]
        cpt = pt[j][idx].astype(np.float64)
        ceta = eta[j][idx].astype(np.float64)
        cetap = ceta.copy()
        cphi = phi[j][idx].astype(np.float64)
        cen = energy[j][idx].astype(np.float64)
        # distances use the rapidity (as FastJet); pseudorapidity where E <= |pz| (smeared input)
        for i in range(n):
            pz = cpt[i] * np.sinh(ceta[i])
            if cen[i] > abs(pz):
                ceta[i] = 0.5 * np.log((cen[i] + pz) / (cen[i] - pz))
        nch = 0
        for i in range(n):
            if charge[j, idx[i]] != 0:
                nch += 1
        out[j, 16] = nch
        if n == 0:
            continue
        # mass
        spx = 0.0
        spy = 0.0
        spz = 0.0
        se = 0.0
        for i in range(n):
            spx += cpt[i] * np.cos(cphi[i])
            spy += cpt[i] * np.sin(cphi[i])
            spz += cpt[i] * np.sinh(cetap[i])
            se += cen[i]
        out[j, 18] = _mass(spx, spy, spz, se)
        # N-subjettiness with exclusive-kt (WTA or E-scheme) axes
        r = _cluster(cpt, ceta, cphi, cen, 1, wta, 1000.0, cetap)
        for nsub in range(1, 4):
            na = _exclusive(r[7], r[8], n, nsub, axes)
            out[j, nsub - 1] = _tau(cpt, ceta, cphi, r[5], r[6], axes, na, radius)
        out[j, 3] = out[j, 1] / out[j, 0] if out[j, 0] > 0 else 0.0
        out[j, 4] = out[j, 2] / out[j, 1] if out[j, 1] > 0 else 0.0
        # kt splitting scales (E-scheme kt, R = radius)
        k = _cluster(cpt, ceta, cphi, cen, 1, False, 1.0, cetap)
        m = 2 * n - 1
        if n >= 2:
            out[j, 14] = np.sqrt(k[9][m - 1])
        if n >= 3:
            out[j, 15] = np.sqrt(k[9][m - 2])
        # energy correlation functions, beta = 1 and 2
        e1 = 0.0
        e2a = 0.0
        e2b = 0.0
        e3a = 0.0
        e3b = 0.0
        dr = np.zeros((n, n))
        for a in range(n):
            e1 += cpt[a]
            for b in range(a + 1, n):
                d = np.sqrt(_dr2(ceta[a], cphi[a], ceta[b], cphi[b]))
                dr[a, b] = d
                dr[b, a] = d
                w = cpt[a] * cpt[b]
                e2a += w * d
                e2b += w * d * d
        for a in range(n):
            for b in range(a + 1, n):
                wab = cpt[a] * cpt[b]
                dab = dr[a, b]
                for c in range(b + 1, n):
                    prod = dab * dr[a, c] * dr[b, c]
                    w = wab * cpt[c]
                    e3a += w * prod
                    e3b += w * prod * prod
        out[j, 5] = e1
        out[j, 6] = e2a
        out[j, 7] = e3a
        out[j, 8] = e2b
        out[j, 9] = e3b
        if e2a > 0:
            out[j, 10] = e3a * e1 / (e2a * e2a)
            out[j, 11] = e3a * e1**3 / e2a**3
        if e2b > 0:
            out[j, 12] = e3b * e1 / (e2b * e2b)
            out[j, 13] = e3b * e1**3 / e2b**3
        # soft drop on the C/A history
        c = _cluster(cpt, ceta, cphi, cen, 0, False, radius, cetap)
        node = m - 1
        while c[7][node] >= 0:
            a_ = c[7][node]
            b_ = c[8][node]
            pa = c[4][a_]
            pb = c[4][b_]
            z = min(pa, pb) / (pa + pb) if pa + pb > 0 else 0.0
            d = np.sqrt(_dr2(c[5][a_], c[6][a_], c[5][b_], c[6][b_]))
            if z > zcut * (d / radius) ** sd_beta:
                break
            node = a_ if pa >= pb else b_
        out[j, 17] = _mass(c[0][node], c[1][node], c[2][node], c[3][node])


def _check_inputs(arrays: dict[str, np.ndarray]) -> None:
    from lhcml.errors import SchemaError

    shapes = {k: np.shape(v) for k, v in arrays.items()}
    ref = shapes["pt"]
    if len(ref) != 2:
        raise SchemaError(f"constituent arrays must be 2-D (n_jets, N), got pt with shape {ref}")
    for k, s in shapes.items():
        if s != ref:
            raise SchemaError(f"constituent field '{k}' has shape {s}, expected {ref} like 'pt'")
    valid = arrays["valid"]
    for k in ("pt", "eta", "phi", "energy"):
        v = np.asarray(arrays[k])[valid]
        if v.size and not np.all(np.isfinite(v)):
            raise SchemaError(
                f"constituent field '{k}' has NaN/inf values on valid constituents; "
                "fix the input file or set 'valid' False for those entries"
            )


def compute_substructure(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    energy: np.ndarray,
    valid: np.ndarray,
    charge: np.ndarray | None = None,
    radius: float = 1.0,
    zcut: float = 0.1,
    sd_beta: float = 0.0,
    axes: str = "wta_kt",
) -> dict[str, np.ndarray]:
    """Substructure observables of every jet from its padded constituents.

    Parameters
    ----------
    pt, eta, phi, energy, valid
        ``(n_jets, N)`` constituent arrays (MeV, rad); ``valid`` True for real constituents.
    charge
        ``(n_jets, N)`` constituent charges for the track multiplicity (all zero if omitted).
    radius
        Jet radius ``R`` used for the τ_N normalisation, the kt distance and soft drop.
    zcut, sd_beta
        Soft-drop parameters (default 0.1 and 0: modified mass-drop).
    axes
        ``"wta_kt"`` (exclusive kt, winner-take-all recombination) or ``"kt"`` (E-scheme).

    Returns
    -------
    dict
        ``{field: (n_jets,) float32}`` for every name in :data:`SUBSTRUCTURE_FIELDS`.
    """
    from lhcml.errors import ConfigError

    if axes not in ("wta_kt", "kt"):
        raise ConfigError(f"unknown N-subjettiness axes '{axes}' (valid: wta_kt, kt)")
    valid = np.asarray(valid, dtype=bool)
    arrays = {"pt": pt, "eta": eta, "phi": phi, "energy": energy, "valid": valid}
    if charge is None:
        charge = np.zeros(np.shape(pt), dtype=np.int8)
    arrays["charge"] = charge
    _check_inputs(arrays)
    n_jets = np.shape(pt)[0]
    out = np.zeros((n_jets, len(SUBSTRUCTURE_FIELDS)), dtype=np.float64)
    _substructure_kernel(
        np.ascontiguousarray(pt, dtype=np.float64),
        np.ascontiguousarray(eta, dtype=np.float64),
        np.ascontiguousarray(phi, dtype=np.float64),
        np.ascontiguousarray(energy, dtype=np.float64),
        np.ascontiguousarray(valid),
        np.ascontiguousarray(charge, dtype=np.int64),
        float(radius),
        float(zcut),
        float(sd_beta),
        axes == "wta_kt",
        out,
    )
    return {name: out[:, i].astype(np.float32) for i, name in enumerate(SUBSTRUCTURE_FIELDS)}


def substructure_from_flow(flow: np.ndarray, **kwargs) -> dict[str, np.ndarray]:
    """:func:`compute_substructure` on a structured ``flow`` array (:data:`FLOW_FIELDS`)."""
    from lhcml.errors import SchemaError

    names = flow.dtype.names or ()
    missing = [f for f in ("pt", "eta", "phi", "energy", "valid") if f not in names]
    if missing:
        raise SchemaError(
            f"flow dataset lacks the fields {missing} needed for substructure "
            "(see lhcml.data.schema.FLOW_FIELDS)"
        )
    charge = flow["charge"] if "charge" in names else None
    return compute_substructure(
        flow["pt"], flow["eta"], flow["phi"], flow["energy"], flow["valid"], charge, **kwargs
    )


def add_substructure_to_file(
    path: str | Path,
    output: str | Path | None = None,
    chunk_size: int = 5000,
    radius: float = 1.0,
    zcut: float = 0.1,
    sd_beta: float = 0.0,
    progress: bool = True,
) -> Path:
    """Add the :data:`SUBSTRUCTURE_FIELDS` to the ``jets`` dataset of a flat file.

    The file is rewritten chunk by chunk into a temporary file that replaces the output
    (``path`` itself unless ``output`` is given) only when complete: a crash leaves the input
    untouched and no partial output. Existing substructure fields are recomputed.

    Parameters
    ----------
    path
        Flat HDF5 file with ``jets`` and ``flow`` datasets.
    output
        Output path (default: rewrite ``path`` in place, atomically).
    chunk_size
        Jets per chunk.
    radius, zcut, sd_beta
        See :func:`compute_substructure`.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    Path
        The written file.
    """
    from numpy.lib import recfunctions as rfn

    from lhcml.tasks.boosted._io import rewrite_file

    def transform(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = substructure_from_flow(batch["flow"], radius=radius, zcut=zcut, sd_beta=sd_beta)
        jets = batch["jets"]
        keep = [x for x in jets.dtype.names if x not in obs]
        jets = rfn.repack_fields(jets[keep])
        batch["jets"] = rfn.append_fields(jets, list(obs), [obs[k] for k in obs], usemask=False)
        return batch

    return rewrite_file(path, output, transform, chunk_size, progress, desc="substructure")


#: names of the generalised energy-correlation observables of :func:`generalized_ecf_ratios`
GENERALIZED_ECF_FIELDS: tuple[str, ...] = (
    "M2_b1",
    "M2_b2",
    "N2_b1",
    "N2_b2",
    "D2_a1_b1",
    "D2_a1_b2",
)


@njit(cache=True)
def _generalized_ecf_kernel(pt, eta, phi, energy, valid, out):
    # out[:, k]: 1e2^(β), 1e3^(β), 2e3^(β) for β = 1 (k = 0, 1, 2) and β = 2 (k = 3, 4, 5)
    # and 3e3^(α=1) (k = 6); z_i = pT_i / Σ pT
    for j in range(pt.shape[0]):
        idx = np.nonzero(valid[j])[0]
        n = idx.shape[0]
        if n < 2:
            continue
        cpt = pt[j][idx].astype(np.float64)
        ceta = eta[j][idx].astype(np.float64)
        cphi = phi[j][idx].astype(np.float64)
        cen = energy[j][idx].astype(np.float64)
        for i in range(n):  # rapidity where E > |pz| (as _substructure_kernel)
            pz = cpt[i] * np.sinh(ceta[i])
            if cen[i] > abs(pz):
                ceta[i] = 0.5 * np.log((cen[i] + pz) / (cen[i] - pz))
        z = cpt / cpt.sum()
        dr = np.zeros((n, n))
        for a in range(n):
            for b in range(a + 1, n):
                d = np.sqrt(_dr2(ceta[a], cphi[a], ceta[b], cphi[b]))
                dr[a, b] = d
                dr[b, a] = d
                out[j, 0] += z[a] * z[b] * d
                out[j, 3] += z[a] * z[b] * d * d
        for a in range(n):
            for b in range(a + 1, n):
                for c in range(b + 1, n):
                    w = z[a] * z[b] * z[c]
                    x, y, v = dr[a, b], dr[a, c], dr[b, c]
                    lo = min(x, y, v)
                    hi = max(x, y, v)
                    mid = x + y + v - lo - hi
                    out[j, 1] += w * lo
                    out[j, 2] += w * lo * mid
                    out[j, 4] += w * lo * lo
                    out[j, 5] += w * lo * lo * mid * mid
                    out[j, 6] += w * lo * mid * hi


def generalized_ecfs(pt, eta, phi, energy, valid) -> dict[str, np.ndarray]:
    """Normalised generalised energy correlation functions (Moult, Necib, Thaler, JHEP 12 (2016)
    153; ``docs/references.md §20``) of every jet from its padded constituents (arrays as :func:`compute_substructure`).

    ``ve_n^(β) = Σ_{i1<…<in} z_i1 … z_in Π_{m=1..v} min^(m){ΔR_ik il^β}``, with ``z_i = pT_i/Σ pT``
    and ``min^(m)`` the m-th smallest of the n(n−1)/2 pairwise ΔR (rapidity–φ, as
    :func:`compute_substructure`). Returns ``e2_b1 = 1e2^(1)``, ``1e3_b1``, ``2e3_b1``, the same
    for β = 2, and ``3e3_a1 = 3e3^(1)`` (the usual e_3^(α=1)); float64, 0 for jets with < 2
    (< 3 for the 3-point functions) constituents.
    """
    valid = np.asarray(valid, dtype=bool)
    _check_inputs({"pt": pt, "eta": eta, "phi": phi, "energy": energy, "valid": valid})
    out = np.zeros((np.shape(pt)[0], 7), dtype=np.float64)
    _generalized_ecf_kernel(
        np.ascontiguousarray(pt, dtype=np.float64),
        np.ascontiguousarray(eta, dtype=np.float64),
        np.ascontiguousarray(phi, dtype=np.float64),
        np.ascontiguousarray(energy, dtype=np.float64),
        np.ascontiguousarray(valid),
        out,
    )
    names = ("e2_b1", "1e3_b1", "2e3_b1", "e2_b2", "1e3_b2", "2e3_b2", "3e3_a1")
    return {k: out[:, i] for i, k in enumerate(names)}


def generalized_ecf_ratios(pt, eta, phi, energy, valid) -> dict[str, np.ndarray]:
    """The generalised-ECF ratios of the hls4ml jet-substructure inputs (:data:`GENERALIZED_ECF_FIELDS`).

    Moult, Necib, Thaler (JHEP 12 (2016) 153): ``M2^(β) = 1e3^(β) / 1e2^(β)``,
    ``N2^(β) = 2e3^(β) / (1e2^(β))²``; ``D2^(α,β) = 3e3^(α) / (1e2^(β))^(3α/β)`` (Larkoski,
    Moult, Neill, JHEP 12 (2014) 009; ``docs/references.md §20``) with α = 1 (so ``D2_a1_b1`` equals the usual ``D2`` at
    β = 1). float32; 0 where the denominator vanishes.
    """
    g = generalized_ecfs(pt, eta, phi, energy, valid)
    out = {}
    for b in (1, 2):
        e2 = g[f"e2_b{b}"]
        ok = e2 > 0
        safe = np.where(ok, e2, 1.0)
        out[f"M2_b{b}"] = np.where(ok, g[f"1e3_b{b}"] / safe, 0.0)
        out[f"N2_b{b}"] = np.where(ok, g[f"2e3_b{b}"] / safe**2, 0.0)
        out[f"D2_a1_b{b}"] = np.where(ok, g["3e3_a1"] / safe ** (3.0 / b), 0.0)
    return {k: out[k].astype(np.float32) for k in GENERALIZED_ECF_FIELDS}
