"""What ``lhcml sim validate`` measures: samples read field by field, and the named measures.

A :class:`Sample` is the flat files of one directory (or one file), read lazily; each entry of
:data:`MEASURES` reads the fields it needs from a sample (raising :class:`NotInSample`, with
what is missing, when they are absent) and returns named
:class:`~lhcml.validation.checks.Measurement` values computed by the pure functions of
:mod:`lhcml.validation.checks`. The reference table (:mod:`lhcml.validation`) names a
measure, one of its outputs and its parameters.

Validation consumes the whole chain, so two measures reuse task-layer code (lazy imports, the one
place where the simulation stage reaches a later stage): the ATLAS 2012 photon menu of
``tasks/photon/cuts.py`` and the N-subjettiness of ``tasks/boosted/substructure.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.errors import ConfigError
from lhcml.validation import checks as vc
from lhcml.validation.checks import Measurement

_GEV = 1000.0


# ---- samples ----------------------------------------------------------------------------------


class NotInSample(Exception):
    """The sample lacks what a check needs (the message says what)."""


class Sample:
    """The flat files of one directory (or one file), read lazily and field by field.

    Parameters
    ----------
    path
        A directory of flat files (``lhcml simulate`` output; ``pileup_*`` libraries are skipped)
        or one file.
    max_rows
        Rows read at most per dataset (the per-jet datasets stay aligned: same files, same rows).
    label
        Name in tables and plot folders (default: the directory's name).
    """

    def __init__(self, path: str | Path, max_rows: int = 200_000, label: str | None = None) -> None:
        self.path = Path(path)
        self.max_rows = int(max_rows)
        self._label = label
        self._files: list[Path] | None = None
        self._fields: dict[str, set[str]] | None = None
        self._mu: float | None | bool = False

    @property
    def label(self) -> str:
        """Short name in tables and plot folders (default: the directory name)."""
        return self._label or self.path.name or str(self.path)

    @property
    def files(self) -> list[Path]:
        if self._files is None:
            if self.path.is_file():
                files = [self.path]
            elif self.path.is_dir():
                files = [p for p in sorted(self.path.glob("*.h5")) if not p.name.startswith("pileup_")]
            else:
                raise FileNotFoundError(f"{self.path} is neither a directory nor a file")
            if not files:
                raise FileNotFoundError(
                    f"no flat files (*.h5) in {self.path}; give a `lhcml simulate` output directory"
                )
            self._files = files
        return self._files

    @property
    def fields(self) -> dict[str, set[str]]:
        """``{dataset: fields}`` present in every file."""
        if self._fields is None:
            from lhcml.data.checks import datasets, open_h5

            common: dict[str, set[str]] | None = None
            for p in self.files:
                with open_h5(p) as f:
                    here = {k: set(d.dtype.names or ()) for k, d in datasets(f).items()}
                if common is None:
                    common = here
                else:
                    common = {k: v & here[k] for k, v in common.items() if k in here}
            self._fields = common or {}
        return self._fields

    def has(self, dataset: str, *fields: str) -> bool:
        return dataset in self.fields and all(f in self.fields[dataset] for f in fields)

    def read(self, dataset: str, fields: list[str], optional: tuple[str, ...] = ()) -> np.ndarray:
        """The first ``max_rows`` rows of ``dataset`` with ``fields`` (+ those of ``optional`` present).

        Raises
        ------
        NotInSample
            If the dataset or a field is absent.
        """
        if dataset not in self.fields:
            raise NotInSample(f"no '{dataset}' dataset")
        missing = [f for f in fields if f not in self.fields[dataset]]
        if missing:
            raise NotInSample(f"{dataset} lacks {', '.join(missing)}")
        names = list(fields) + [f for f in optional if f in self.fields[dataset] and f not in fields]
        from lhcml.data.checks import open_h5

        parts, left = [], self.max_rows
        for p in self.files:
            if left <= 0:
                break
            with open_h5(p) as f:
                d = f[dataset]
                n = min(int(d.shape[0]), left)
                parts.append(d.fields(names)[:n])
            left -= n
        return np.concatenate(parts)

    @property
    def mu(self) -> float | None:
        """⟨μ⟩ of the sample: ``manifest.yaml``'s ``mu``, else the median ``averageInteractionsPerCrossing``."""
        if self._mu is False:
            self._mu = None
            manifest = (self.path if self.path.is_dir() else self.path.parent) / "manifest.yaml"
            if manifest.is_file():
                try:
                    mu = (yaml.safe_load(manifest.read_text()) or {}).get("mu")
                    self._mu = float(mu) if mu is not None else None
                except (yaml.YAMLError, TypeError, ValueError, AttributeError):
                    self._mu = None
            if self._mu is None:
                for ds in ("events", "jets", "photons"):
                    if self.has(ds, "averageInteractionsPerCrossing"):
                        x = self.read(ds, ["averageInteractionsPerCrossing"])["averageInteractionsPerCrossing"]
                        if len(x):
                            self._mu = float(np.median(x))
                            break
        return self._mu  # type: ignore[return-value]


# ---- measures: fields of a sample -> Measurements ---------------------------------------------


@dataclass(frozen=True)
class Measure:
    """A named measurement: what it needs (``needs``), its outputs and parameters (with defaults).

    ``fn(sample, params) -> {output: Measurement}``; for ``compare`` measures
    ``fn(samples ordered by <mu>, params) -> ({output: Measurement}, labels of the samples used)``.
    """

    fn: Callable[..., dict[str, Measurement]]
    outputs: tuple[str, ...]
    params: dict[str, Any]
    needs: str
    compare: bool = False


_OVERLAP_FLAGS = ("overlapsElectron", "overlapsMuon")


def _not_removed(jets: np.ndarray) -> np.ndarray:
    """Jets the standard overlap removal keeps (all jets when the flags are absent)."""
    keep = np.ones(len(jets), dtype=bool)
    for f in _OVERLAP_FLAGS:
        if f in (jets.dtype.names or ()):
            keep &= ~jets[f].astype(bool)
    return keep


def _jet_response(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    if s.has("jets", "R10TruthLabel"):
        raise NotInSample("large-R jets (the JES/JER checks need small-R jets)")
    jets = s.read("jets", ["pt", "truthJetPt", "truthJetEta"], optional=_OVERLAP_FLAGS)
    jets = jets[_not_removed(jets)]
    # the sample's reco-pT selection (its smallest jet pT), folded into the fit as a truncation
    reco_min = float(np.min(jets["pt"])) / _GEV if len(jets) else None
    resp, jer = vc.jet_response(jets["pt"], jets["truthJetPt"], jets["truthJetEta"],
                                (p["pt_min"], p["pt_max"]), p["eta_max"], reco_min, p["n_sigma"])  # fmt: skip
    return {"response": resp, "jer": jer}


def _large_r_mass(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    jets = s.read("jets", ["mass", "R10TruthLabel", "truthMass"])
    jets = jets[jets["R10TruthLabel"] == p["label"]]
    peak, res, delta = vc.mass_peak(jets["mass"], jets["truthMass"], p["n_sigma"])
    return {"peak": peak, "resolution": res, "peak_minus_truth": delta}


def _tau32_values(s: Sample, label: int) -> np.ndarray:
    if s.has("jets", "Tau32_wta"):
        jets = s.read("jets", ["R10TruthLabel", "Tau32_wta"])
        t = jets["Tau32_wta"][jets["R10TruthLabel"] == label]
    else:
        jets = s.read("jets", ["R10TruthLabel"])
        flow = s.read("flow", ["pt", "eta", "phi", "energy", "valid"])
        from lhcml.sim.events import LARGE_R_RADIUS
        from lhcml.tasks.boosted.substructure import substructure_from_flow

        t = substructure_from_flow(flow[jets["R10TruthLabel"] == label], radius=LARGE_R_RADIUS)["Tau32_wta"]
    t = np.asarray(t, dtype=np.float64)
    return t[np.isfinite(t) & (t > 0)]  # τ2 = 0 (one-prong) jets carry 0: no τ32


def _tau32_shift(samples: list[Sample], p: dict[str, Any]) -> tuple[dict[str, Measurement], list[str]]:
    values, used, why = [], [], []
    for s in samples:
        try:
            v = _tau32_values(s, p["label"])
        except NotInSample as err:
            why.append(f"{s.label}: {err}")
            continue
        if len(v):  # e.g. a W/Z sample has no top jets
            values.append(v)
            used.append(s.label)
    if len(values) < 2:
        raise NotInSample("needs >= 2 samples with large-R jets and tau32 (Tau32_wta or flow)"
                          + (f" ({'; '.join(why)})" if why else ""))  # fmt: skip
    return {"shift": vc.median_shift(values)}, used


def _ip_pull(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    f = p["field"]
    trk = s.read("tracks", ["pt", f, f + "Uncertainty", "ftagTruthOriginLabel", "valid"])
    from lhcml.data.schema import TRUTH_ORIGIN

    sel = trk["valid"] & (trk["ftagTruthOriginLabel"] == TRUTH_ORIGIN["primary"]) & (trk["pt"] > p["pt_min"] * _GEV)
    return {"width": vc.ip_pull_width(trk[f][sel], trk[f + "Uncertainty"][sel])}


def _track_hits(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    trk = s.read("tracks", ["numberOfPixelHits", "numberOfSCTHits", "ftagTruthOriginLabel", "valid"])
    from lhcml.data.schema import TRUTH_ORIGIN

    t = trk[trk["valid"] & (trk["ftagTruthOriginLabel"] == TRUTH_ORIGIN["primary"])]
    return {"frac_pixel_4": vc.fraction(t["numberOfPixelHits"] == 4),
            "frac_sct_8": vc.fraction(t["numberOfSCTHits"] == 8)}  # fmt: skip


def _primary_vertex(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    ev = s.read("events", ["primaryVertexZ", "truthPrimaryVertexZ", "pvIsHardScatter"])
    hs = ev["pvIsHardScatter"].astype(bool)
    return {"efficiency": vc.fraction(hs),
            "resolution_um": vc.vertex_resolution_um(ev["primaryVertexZ"], ev["truthPrimaryVertexZ"], hs)}  # fmt: skip


def _vertex_count(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    ev = s.read("events", ["nPrimaryVertices", "averageInteractionsPerCrossing"])
    mu = float(np.mean(ev["averageInteractionsPerCrossing"])) if len(ev) else 0.0
    if mu <= 0:
        raise NotInSample("<mu> = 0: no pileup vertices to count")
    m = vc.mean(ev["nPrimaryVertices"])
    return {"vertices_per_mu": Measurement(m.value / mu, m.error / mu, m.n, "mean nPrimaryVertices / <mu>")}


def _prompt_leptons(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    jets = s.read("jets", ["HadronConeExclTruthLabelID", "truthPromptLepton"], optional=_OVERLAP_FLAGS)
    removed = ~_not_removed(jets)
    return {"fraction": vc.prompt_lepton_fraction(jets["HadronConeExclTruthLabelID"], jets["truthPromptLepton"], removed)}


def _hadron_ctau(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    jets = s.read("jets", ["HadronConeExclTruthLabelID", "HadronConeExclTruthLabelLxy", "HadronConeExclTruthLabelPt"])
    f = int(p["flavour"])
    if f not in vc.CTAU_MASS:
        raise ConfigError(f"hadron_ctau: flavour must be 5 or 4, got {f}")
    v, e, n = vc.hadron_ctau(jets[jets["HadronConeExclTruthLabelID"] == f], f)
    return {"ctau": Measurement(v, e, n, "<Lxy · m / pT>")}


def _tracks_per_jet(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    jets = s.read("jets", ["HadronConeExclTruthLabelID"])
    trk = s.read("tracks", ["valid"])
    n = trk["valid"].sum(axis=1)[jets["HadronConeExclTruthLabelID"] == int(p["flavour"])]
    return {"mean": vc.mean(n)}


def _photon_tight(s: Sample, p: dict[str, Any]) -> dict[str, Measurement]:
    from lhcml.tasks.photon.cuts import NEEDED_FIELDS

    ph = s.read("photons", [*NEEDED_FIELDS, "converted", "isPromptPhoton"])
    rng = (p["pt_min"], p["pt_max"])
    return {"efficiency": vc.tight_efficiency(ph, rng, p["eta_max"], prompt=True),
            "fake_rate": vc.tight_efficiency(ph, rng, p["eta_max"], prompt=False)}  # fmt: skip


def _isolation_shift(samples: list[Sample], p: dict[str, Any]) -> tuple[dict[str, Measurement], list[str]]:
    values, used, why = [], [], []
    for s in samples:
        try:
            ph = s.read("photons", ["pt", "isPromptPhoton", "etcone20_corrected"])
        except NotInSample as err:
            why.append(f"{s.label}: {err}")
            continue
        pt = ph["pt"] / _GEV
        sel = (ph["isPromptPhoton"] == 1) & (pt >= p["pt_min"]) & (pt < p["pt_max"])
        if sel.any():
            values.append(ph["etcone20_corrected"][sel] / _GEV)
            used.append(s.label)
    if len(values) < 2:
        raise NotInSample("needs >= 2 photon samples with etcone20_corrected"
                          + (f" ({'; '.join(why)})" if why else ""))  # fmt: skip
    return {"shift": vc.median_shift(values)}, used


#: the measurements a reference table can name (``measure:``), with their default parameters
MEASURES: dict[str, Measure] = {
    "jet_response": Measure(_jet_response, ("response", "jer"),
                            {"pt_min": 20.0, "pt_max": 25.0, "eta_max": 0.8, "n_sigma": 2.0},
                            "jets: pt, truthJetPt, truthJetEta"),
    "large_r_mass": Measure(_large_r_mass, ("peak", "resolution", "peak_minus_truth"),
                            {"label": 1, "n_sigma": 1.5}, "jets: mass, R10TruthLabel, truthMass"),
    "tau32_median_shift": Measure(_tau32_shift, ("shift",), {"label": 1},
                                  "jets: R10TruthLabel + Tau32_wta or flow, in >= 2 samples", compare=True),
    "ip_pull": Measure(_ip_pull, ("width",), {"field": "d0", "pt_min": 10.0},
                       "tracks: pt, d0/z0SinTheta and uncertainty, ftagTruthOriginLabel, valid"),
    "track_hits": Measure(_track_hits, ("frac_pixel_4", "frac_sct_8"), {},
                          "tracks: numberOfPixelHits, numberOfSCTHits, ftagTruthOriginLabel, valid"),
    "primary_vertex": Measure(_primary_vertex, ("efficiency", "resolution_um"), {},
                              "events: primaryVertexZ, truthPrimaryVertexZ, pvIsHardScatter"),
    "vertex_count": Measure(_vertex_count, ("vertices_per_mu",), {},
                            "events: nPrimaryVertices, averageInteractionsPerCrossing"),
    "prompt_lepton_fraction": Measure(_prompt_leptons, ("fraction",), {},
                                      "jets: HadronConeExclTruthLabelID, truthPromptLepton"),
    "hadron_ctau": Measure(_hadron_ctau, ("ctau",), {"flavour": 5},
                           "jets: HadronConeExclTruthLabelID, ...Lxy, ...Pt"),
    "tracks_per_jet": Measure(_tracks_per_jet, ("mean",), {"flavour": 5},
                              "jets: HadronConeExclTruthLabelID; tracks: valid"),
    "photon_isolation_shift": Measure(_isolation_shift, ("shift",), {"pt_min": 25.0, "pt_max": 50.0},
                                      "photons: pt, isPromptPhoton, etcone20_corrected, in >= 2 samples",
                                      compare=True),
    "photon_tight": Measure(_photon_tight, ("efficiency", "fake_rate"),
                            {"pt_min": 25.0, "pt_max": 50.0, "eta_max": 0.6},
                            "photons: shower shapes, converted, isPromptPhoton"),
}  # fmt: skip
