"""Fit and apply the baseline flavour taggers; write their outputs into the ``jets`` dataset.

``fit_baselines`` streams training files once, filling the IP2D/IP3D track templates and the
SV1 (mass, efrac, N2T) templates, and saves them to an HDF5 templates file. ``apply_baselines``
streams each file, computes the IP2D/IP3D, SV1, JetFitter and soft-muon jet variables and
rewrites the file with these fields added to ``jets`` (a new file written under a temporary
name and renamed, so a failure never leaves a half-written file; other datasets are copied by
HDF5 without decoding).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from lhcml.atomic import atomic_path
from lhcml.data.checks import open_h5
from lhcml.data.h5 import H5Reader
from lhcml.errors import CorruptFileError, SchemaError
from lhcml.tasks.ftag.ip_taggers import IPTemplates, IPTrackSelection
from lhcml.tasks.ftag.jetfitter import JF_OUTPUTS, JetFitterConfig, find_jetfitter
from lhcml.tasks.ftag.soft_muon import soft_muon_variables
from lhcml.tasks.ftag.sv_finder import SV1_OUTPUTS, SV1Config, SV1Templates, find_sv1

log = logging.getLogger(__name__)

TEMPLATES_FORMAT = "lhcml-ftag-baseline-templates-v1"
#: the taggers ``apply_baselines`` can run
TAGGERS = ("IP2D", "IP3D", "SV1", "JetFitter", "SMT")

JET_FIELDS = ("pt", "eta", "phi", "HadronConeExclTruthLabelID")
TRACK_FIELDS = (
    "valid", "pt", "eta", "phi", "qOverP", "d0", "z0SinTheta", "d0Uncertainty",
    "z0SinThetaUncertainty", "phiUncertainty", "thetaUncertainty",
    "IP3D_signed_d0_significance", "IP3D_signed_z0_significance",
    "numberOfInnermostPixelLayerHits", "numberOfNextToInnermostPixelLayerHits",
    "numberOfPixelHits", "numberOfPixelSharedHits", "numberOfSCTHits", "numberOfSCTSharedHits",
    "leptonID",
)  # fmt: skip
_OPTIONAL_TRACK_FIELDS = (
    "phiUncertainty", "thetaUncertainty", "IP3D_signed_d0_significance",
    "IP3D_signed_z0_significance",
)  # fmt: skip


def _fields(path: Path, tracks_name: str) -> dict[str, list[str]]:
    with open_h5(path) as f:
        for g in ("jets", tracks_name):
            if g not in f:
                raise SchemaError(f"{path}: no '{g}' dataset (datasets: {', '.join(f)})")
        have = set(f[tracks_name].dtype.names)
        have_j = set(f["jets"].dtype.names)
    missing = [v for v in TRACK_FIELDS if v not in have and v not in _OPTIONAL_TRACK_FIELDS]
    missing += [v for v in JET_FIELDS if v not in have_j and v != "HadronConeExclTruthLabelID"]
    if missing:
        raise SchemaError(
            f"{path}: the baseline taggers need {', '.join(missing)} which the file lacks"
        )
    return {
        "jets": [v for v in JET_FIELDS if v in have_j],
        tracks_name: [v for v in TRACK_FIELDS if v in have],
    }


def fit_baselines(
    train_files: list[str | Path],
    output: str | Path,
    max_jets: int | None = None,
    batch_size: int = 5000,
    ip_selection: IPTrackSelection = IPTrackSelection(),
    sv1: SV1Config = SV1Config(),
    tracks_name: str = "tracks",
) -> Path:
    """Fill the IP2D/IP3D and SV1 templates on training files and save them to ``output``.

    Parameters
    ----------
    train_files
        Flat files (globs allowed) with ``jets`` (``HadronConeExclTruthLabelID``) and tracks.
    output
        Templates file to write (HDF5; written atomically).
    max_jets
        Use at most this many jets (default all).
    """
    from tqdm import tqdm

    reader = H5Reader([str(p) for p in train_files], batch_size=batch_size)
    fields = _fields(reader.files[0], tracks_name)
    if "HadronConeExclTruthLabelID" not in fields["jets"]:
        raise SchemaError("fitting the templates needs the truth label HadronConeExclTruthLabelID")
    ip = IPTemplates(selection=ip_selection)
    svt = SV1Templates()
    total = min(reader.n_jets, max_jets or reader.n_jets)
    with tqdm(total=total, desc="baselines: fit", unit="jet", disable=None) as bar:
        for batch in reader.stream(fields, num_jets=max_jets):
            jets, tracks = batch["jets"], batch[tracks_name]
            ip.fill(jets, tracks)
            svt.fill(jets["HadronConeExclTruthLabelID"], find_sv1(jets, tracks, sv1))
            bar.update(len(jets))
    if ip.counts2d.sum(axis=(1, 2, 3)).min() == 0:
        raise SchemaError("the training files lack b, c or light jets with selected tracks")
    output = Path(output)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = TEMPLATES_FORMAT
        f.attrs["n_jets"] = total
        f.attrs["train_files"] = json.dumps([str(p) for p in reader.files])
        g = f.create_group("IP")
        g["counts2d"] = ip.counts2d
        g["sd0_bins"] = ip.sd0_bins
        g["sz0_bins"] = ip.sz0_bins
        g.attrs["selection"] = json.dumps(asdict(ip_selection))
        g.attrs["smoothing"] = ip.smoothing
        s = f.create_group("SV1")
        s["counts"] = svt.counts
        s["n_novtx"] = svt.n_novtx
        s.attrs["config"] = json.dumps(asdict(sv1))
        s.attrs["smoothing"] = svt.smoothing
    return output


def load_templates(path: str | Path) -> tuple[IPTemplates, SV1Templates, SV1Config]:
    """Read a templates file written by :func:`fit_baselines`."""
    path = Path(path)
    with open_h5(path) as f:
        if f.attrs.get("format") != TEMPLATES_FORMAT:
            raise CorruptFileError(
                f"{path} is not a baseline-templates file (make one with `lhcml ftag baselines fit`)"
            )
        g = f["IP"]
        ip = IPTemplates(
            sd0_bins=g["sd0_bins"][...],
            sz0_bins=g["sz0_bins"][...],
            counts2d=g["counts2d"][...],
            selection=IPTrackSelection(**json.loads(g.attrs["selection"])),
            smoothing=float(g.attrs["smoothing"]),
        )
        s = f["SV1"]
        svt = SV1Templates(s["counts"][...], s["n_novtx"][...], float(s.attrs["smoothing"]))
        sv1 = SV1Config(**json.loads(s.attrs["config"]))
    return ip, svt, sv1


def baseline_variables(
    jets: np.ndarray,
    tracks: np.ndarray,
    ip: IPTemplates | None,
    svt: SV1Templates | None,
    sv1: SV1Config = SV1Config(),
    jf: JetFitterConfig = JetFitterConfig(),
    taggers: tuple[str, ...] = TAGGERS,
) -> dict[str, np.ndarray]:
    """All baseline jet variables of one chunk (``{field: array}``)."""
    out: dict[str, np.ndarray] = {}
    if ("IP2D" in taggers or "IP3D" in taggers) and ip is not None:
        res = ip.apply(jets, tracks)
        out.update({k: v for k, v in res.items() if k.split("_")[0] in taggers})
    if "SV1" in taggers:
        sv = find_sv1(jets, tracks, sv1)
        out.update({k: sv[k] for k in SV1_OUTPUTS})
        if svt is not None:
            out.update(svt.apply(sv))
    if "JetFitter" in taggers:
        jfr = find_jetfitter(jets, tracks, jf)
        out.update({k: jfr[k] for k in JF_OUTPUTS})
    if "SMT" in taggers:
        out.update(soft_muon_variables(jets, tracks))
    return out


def apply_baselines(
    templates: str | Path,
    files: list[str | Path],
    output_dir: str | Path | None = None,
    batch_size: int = 5000,
    taggers: tuple[str, ...] = TAGGERS,
    jetfitter: JetFitterConfig = JetFitterConfig(),
    tracks_name: str = "tracks",
) -> list[Path]:
    """Add the baseline tagger variables to the ``jets`` dataset of each file.

    Parameters
    ----------
    templates
        File written by :func:`fit_baselines`.
    files
        Flat files (globs allowed). Rewritten in place (atomically) unless ``output_dir`` is given.
    output_dir
        Write the augmented files there (same names) and leave the inputs untouched.
    taggers
        Subset of :data:`TAGGERS`.

    Returns
    -------
    list of Path
        The written files.
    """
    from tqdm import tqdm

    bad = [t for t in taggers if t not in TAGGERS]
    if bad:
        raise ValueError(f"unknown tagger(s) {bad} (valid: {', '.join(TAGGERS)})")
    ip, svt, sv1 = load_templates(templates)
    paths = H5Reader([str(p) for p in files]).files
    written = []
    for path in paths:
        fields = _fields(path, tracks_name)
        dest = Path(output_dir) / path.name if output_dir is not None else path
        with atomic_path(dest) as tmp:
            with open_h5(path) as src, h5py.File(tmp, "w") as dst:
                for k, v in src.attrs.items():
                    dst.attrs[k] = v
                for name in src:
                    if name != "jets":
                        src.copy(src[name], dst, name=name)
                n = len(src["jets"])
                jets_ds = src["jets"]
                new_ds = None
                with tqdm(total=n, desc=f"baselines: {path.name}", unit="jet", disable=None) as bar:
                    for a in range(0, max(n, 1), batch_size):
                        b = min(a + batch_size, n)
                        jets_all = jets_ds[a:b]
                        jets = jets_all[[v for v in fields["jets"]]]
                        tracks = src[tracks_name].fields(fields[tracks_name])[a:b]
                        new = baseline_variables(jets, tracks, ip, svt, sv1, jetfitter, taggers)
                        keep = [x for x in jets_all.dtype.names if x not in new]
                        dt = np.dtype(
                            [(x, jets_all.dtype.fields[x][0]) for x in keep]
                            + [(k, v.dtype) for k, v in new.items()]
                        )
                        if new_ds is None:
                            new_ds = dst.create_dataset(
                                "jets", shape=(n,), dtype=dt, chunks=(min(max(n, 1), 1000),),
                                compression="lzf",
                            )  # fmt: skip
                            for k, v in jets_ds.attrs.items():
                                new_ds.attrs[k] = v
                        out = np.zeros(b - a, dtype=dt)
                        for x in keep:
                            out[x] = jets_all[x]
                        for k, v in new.items():
                            out[k] = v
                        new_ds[a:b] = out
                        bar.update(b - a)
                dst.attrs["baselines_templates"] = str(templates)
                dst.attrs["baselines_taggers"] = json.dumps(list(taggers))
        written.append(dest)
    return written
