"""IP2D and IP3D: likelihood-ratio taggers from track impact-parameter templates (ATLAS Run 2).

Each selected track contributes the probability of its lifetime-signed transverse impact-parameter
significance ``S_d0`` (IP2D) or of the pair ``(S_d0, S_z0)`` (IP3D) under each flavour hypothesis
(b, c, light), taken from templates filled on training jets of that flavour. Tracks are split in
categories by hit pattern (the ATLAS "grades", which differ in resolution tails):

====  ============  ===========================================================
 0    good          hits in the innermost and next-to-innermost pixel layers, no shared hits
 1    shared        at least one shared pixel hit (or more than one shared SCT hit)
 2    noIBL         no innermost-layer (IBL) hit, hit in the next layer
 3    noInnerHits   no hit in either of the two innermost pixel layers
====  ============  ===========================================================

Templates are normalised per flavour over (category, bins) jointly, so a category's population
difference between flavours enters the likelihood as well. The jet likelihood is the product over
tracks, ``L_f = Π_i P_f(track_i)``; outputs are ``<T>_pb/_pc/_pu = L_f / Σ L`` (equal 1/3 when a
jet has no selected track), ``<T>_llr = ln(L_b / L_u)`` and ``<T>_nTrks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lhcml.errors import SchemaError

#: flavours of the templates, with their HadronConeExclTruthLabelID
FLAVOURS = {"b": 5, "c": 4, "u": 0}
CATEGORIES = ("good", "shared", "noIBL", "noInnerHits")

#: default binning of the signed significances (finer near zero, wide tails)
SD0_BINS = np.concatenate(
    [[-50.0, -20.0, -10.0, -6.0, -4.0], np.arange(-3.0, 3.01, 0.5), [4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 17.0, 22.0, 30.0, 45.0, 70.0]]
)
SZ0_BINS = np.array([-50.0, -10.0, -5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0])


@dataclass(frozen=True)
class IPTrackSelection:
    """Track selection of IP2D/IP3D (ATLAS-like defaults; lengths in mm, momenta in MeV)."""

    pt_min: float = 1000.0
    d0_max: float = 1.0
    z0sintheta_max: float = 1.5
    min_pixel_hits: int = 1
    min_silicon_hits: int = 7


def signed_significances(jets: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lifetime-signed d0 and z0 significances (dumper fields if present, else computed).

    Signs: ``sign(sin(φ_jet - φ_trk) · d0)`` and ``sign((η_jet - η_trk) · z0 sinθ)``.
    """
    names = tracks.dtype.names
    if "IP3D_signed_d0_significance" in names and "IP3D_signed_z0_significance" in names:
        return (
            tracks["IP3D_signed_d0_significance"].astype(np.float64),
            tracks["IP3D_signed_z0_significance"].astype(np.float64),
        )
    sd0 = np.abs(tracks["d0"] / tracks["d0Uncertainty"])
    sz0 = np.abs(tracks["z0SinTheta"] / tracks["z0SinThetaUncertainty"])
    s_d = np.sign(np.sin(jets["phi"][:, None] - tracks["phi"]) * tracks["d0"])
    s_z = np.sign((jets["eta"][:, None] - tracks["eta"]) * tracks["z0SinTheta"])
    return np.where(s_d == 0, 1, s_d) * sd0, np.where(s_z == 0, 1, s_z) * sz0


def track_category(tracks: np.ndarray) -> np.ndarray:
    """Hit-pattern category of each track (see the module docstring)."""
    ibl = tracks["numberOfInnermostPixelLayerHits"]
    nibl = tracks["numberOfNextToInnermostPixelLayerHits"]
    shared = (tracks["numberOfPixelSharedHits"] > 0) | (tracks["numberOfSCTSharedHits"] > 1)
    cat = np.where(shared, 1, 0)
    cat = np.where((ibl == 0) & (nibl > 0), 2, cat)
    cat = np.where((ibl == 0) & (nibl == 0), 3, cat)
    return cat.astype(np.int64)


def select_tracks(tracks: np.ndarray, sel: IPTrackSelection = IPTrackSelection()) -> np.ndarray:
    """Boolean mask of the tracks IP2D/IP3D use."""
    si = tracks["numberOfPixelHits"].astype(int) + tracks["numberOfSCTHits"]
    return (
        tracks["valid"]
        & (tracks["pt"] > sel.pt_min)
        & (np.abs(tracks["d0"]) < sel.d0_max)
        & (np.abs(tracks["z0SinTheta"]) < sel.z0sintheta_max)
        & (tracks["numberOfPixelHits"] >= sel.min_pixel_hits)
        & (si >= sel.min_silicon_hits)
    )


REQUIRED_TRACK_FIELDS = (
    "valid", "pt", "eta", "phi", "d0", "z0SinTheta", "d0Uncertainty", "z0SinThetaUncertainty",
    "numberOfInnermostPixelLayerHits", "numberOfNextToInnermostPixelLayerHits",
    "numberOfPixelHits", "numberOfPixelSharedHits", "numberOfSCTHits", "numberOfSCTSharedHits",
)  # fmt: skip


def _check(tracks: np.ndarray, fields) -> None:
    missing = [f for f in fields if f not in (tracks.dtype.names or ())]
    if missing:
        raise SchemaError(f"the tracks dataset lacks {', '.join(missing)} needed by the IP taggers")


def _digitise(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


@dataclass
class IPTemplates:
    """Counts and pdfs of the IP2D (1-D) and IP3D (2-D) templates per flavour and category."""

    sd0_bins: np.ndarray = field(default_factory=lambda: SD0_BINS.copy())
    sz0_bins: np.ndarray = field(default_factory=lambda: SZ0_BINS.copy())
    counts2d: np.ndarray | None = None  # (n_flav, n_cat, n_sd0, n_sz0)
    selection: IPTrackSelection = IPTrackSelection()
    smoothing: float = 0.5  # pseudo-count added to every bin (Jeffreys prior)

    def __post_init__(self) -> None:
        if self.counts2d is None:
            self.counts2d = np.zeros(
                (len(FLAVOURS), len(CATEGORIES), len(self.sd0_bins) - 1, len(self.sz0_bins) - 1)
            )

    def fill(self, jets: np.ndarray, tracks: np.ndarray) -> None:
        """Add the selected tracks of jets of known flavour (b, c, light) to the templates."""
        _check(tracks, REQUIRED_TRACK_FIELDS)
        sel = select_tracks(tracks, self.selection)
        sd0, sz0 = signed_significances(jets, tracks)
        cat = track_category(tracks)
        flav = jets["HadronConeExclTruthLabelID"]
        for i, code in enumerate(FLAVOURS.values()):
            m = sel & (flav == code)[:, None]
            np.add.at(
                self.counts2d[i],
                (cat[m], _digitise(sd0[m], self.sd0_bins), _digitise(sz0[m], self.sz0_bins)),
                1.0,
            )

    def pdf2d(self) -> np.ndarray:
        c = self.counts2d + self.smoothing
        return c / c.sum(axis=(1, 2, 3), keepdims=True)

    def pdf1d(self) -> np.ndarray:
        c = self.counts2d.sum(axis=3) + self.smoothing
        return c / c.sum(axis=(1, 2), keepdims=True)

    def apply(self, jets: np.ndarray, tracks: np.ndarray) -> dict[str, np.ndarray]:
        """IP2D and IP3D jet outputs (see the module docstring)."""
        _check(tracks, REQUIRED_TRACK_FIELDS)
        if self.counts2d.sum(axis=(1, 2, 3)).min() == 0:
            raise SchemaError("IP templates are empty for some flavour: fit them on b, c and light jets")
        sel = select_tracks(tracks, self.selection)
        sd0, sz0 = signed_significances(jets, tracks)
        cat = track_category(tracks)
        i_d = _digitise(np.nan_to_num(sd0), self.sd0_bins)
        i_z = _digitise(np.nan_to_num(sz0), self.sz0_bins)
        out: dict[str, np.ndarray] = {}
        for name, logp in (
            ("IP2D", np.log(self.pdf1d())[:, cat, i_d]),
            ("IP3D", np.log(self.pdf2d())[:, cat, i_d, i_z]),
        ):
            ll = np.where(sel[None], logp, 0.0).sum(axis=2)  # (n_flav, n_jets)
            ll -= ll.max(axis=0, keepdims=True)
            p = np.exp(ll)
            p /= p.sum(axis=0, keepdims=True)
            for k, f in enumerate(FLAVOURS):
                out[f"{name}_p{f}"] = p[k].astype(np.float32)
            out[f"{name}_llr"] = (ll[0] - ll[2]).astype(np.float32)
            out[f"{name}_nTrks"] = sel.sum(axis=1).astype(np.int16)
        return out
