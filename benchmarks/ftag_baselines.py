"""Baseline flavour taggers on simulated tt̄: light and c rejection at 70 % / 77 % b-efficiency.

Usage::

    lhcml simulate ttbar --events 3000 --mu 50 -o output/sim/ttbar
    nice -n 10 python benchmarks/ftag_baselines.py "output/sim/ttbar/*.h5" [--work DIR]

Jets are split by ``eventNumber % 2``: templates are fitted on the even events and the taggers
are evaluated on the odd ones. Discriminants: ``ln(p_b / p_u)`` for IP2D, IP3D and SV1 (the
likelihood ratios), their sum for IP3D+SV1, and ``D_b = ln(p_b / (f_c p_c + (1 - f_c) p_u))`` with
``f_c = 0.07`` for the IP3D likelihoods. A working point a tagger cannot reach (SV1 finds vertices
in fewer b-jets than the target efficiency) is reported as n/a. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from lhcml.data.h5 import H5Reader, write_h5
from lhcml.formatting import pm
from lhcml.metrics.working_points import cut_at_efficiency, efficiency
from lhcml.tasks.ftag.baselines import apply_baselines, fit_baselines

WPS = (0.70, 0.77)


def _split(files: str, work: Path) -> tuple[Path, Path, int]:
    reader = H5Reader(files)
    parts: dict[str, list] = {"train": [], "test": []}
    n = 0
    for batch in reader.stream({"jets": None, "tracks": None}):
        ev = batch["jets"]["eventNumber"] % 2
        n += len(ev)
        for name, m in (("train", ev == 0), ("test", ev == 1)):
            parts[name].append({k: v[m] for k, v in batch.items()})
    out = []
    for name, chunks in parts.items():
        tables = {k: np.concatenate([c[k] for c in chunks]) for k in ("jets", "tracks")}
        out.append(write_h5(work / f"{name}.h5", tables))
    return out[0], out[1], n


def _rej(d_b: np.ndarray, d_bkg: np.ndarray, wp: float) -> tuple[float, float] | None:
    cut = cut_at_efficiency(d_b, wp)
    eff_b, _ = efficiency(d_b, cut)
    if abs(eff_b - wp) > 0.01:  # ties (e.g. all jets without SV) make the WP unreachable
        return None
    eff, err = efficiency(d_bkg, cut)
    if eff == 0:
        return float("inf"), float("nan")
    return 1 / eff, err / eff**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", help="simulated flat files (glob)")
    ap.add_argument("--work", default="benchmarks/_work/ftag_baselines")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test, n = _split(args.files, work)
    t0 = time.perf_counter()
    tmpl = fit_baselines([train], work / "templates.h5")
    t1 = time.perf_counter()
    apply_baselines(tmpl, [test])
    t2 = time.perf_counter()
    with h5py.File(test) as f:
        j = f["jets"][:]
    fl = j["HadronConeExclTruthLabelID"]
    n_b, n_c, n_u = (fl == 5).sum(), (fl == 4).sum(), (fl == 0).sum()
    eps = 1e-12
    llr = {
        "IP2D": np.log(j["IP2D_pb"] + eps) - np.log(j["IP2D_pu"] + eps),
        "IP3D": np.log(j["IP3D_pb"] + eps) - np.log(j["IP3D_pu"] + eps),
        "SV1": np.log(j["SV1_pb"] + eps) - np.log(j["SV1_pu"] + eps),
    }
    llr["IP3D+SV1"] = llr["IP3D"] + llr["SV1"]
    fc = 0.07
    llr["IP3D D_b(f_c=0.07)"] = np.log(j["IP3D_pb"] + eps) - np.log(
        fc * j["IP3D_pc"] + (1 - fc) * j["IP3D_pu"] + eps
    )
    print(f"jets: {n} total; test: {n_b} b, {n_c} c, {n_u} light")
    print(f"fit {t1 - t0:.1f} s on {n - len(j)} jets; apply {t2 - t1:.1f} s on {len(j)} jets "
          f"({1e3 * (t2 - t1) / max(len(j), 1):.2f} ms/jet)\n")  # fmt: skip
    print("| tagger | light rej. @70% | c rej. @70% | light rej. @77% | c rej. @77% |")
    print("|---|---|---|---|---|")
    for name, d in llr.items():
        cells = []
        for wp in WPS:
            for bkg in (0, 4):
                r = _rej(d[fl == 5], d[fl == bkg], wp)
                cells.append("n/a" if r is None else pm(*r))
        print(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    sv = j["SV1_NGTinSvx"] > 0
    jf = j["JetFitter_nVTX"] + j["JetFitter_nSingleTracks"] > 0
    print("\n| flavour | SV1 vertex found | JetFitter displaced vertex | soft muon |")
    print("|---|---|---|---|")
    for name, code in (("b", 5), ("c", 4), ("light", 0)):
        m = fl == code
        print(f"| {name} | {sv[m].mean():.3f} | {jf[m].mean():.3f} | "
              f"{j['SMT_hasMuon'][m].mean():.3f} |")  # fmt: skip
    mb = sv & (fl == 5)
    print(f"\nSV1 b-jets: mean mass {j['SV1_masssvx'][mb].mean():.0f} MeV, mean efrac "
          f"{j['SV1_efracsvx'][mb].mean():.2f}, mean NGTinSvx {j['SV1_NGTinSvx'][mb].mean():.2f}")


if __name__ == "__main__":
    main()
