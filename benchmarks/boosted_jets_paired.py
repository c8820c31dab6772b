"""Large-R jets of the same Pythia events simulated twice (two commits or two settings), compared
jet by jet: what moved in the properties the top taggers read.

``lhcml simulate`` with the same process, ``-n``, ``--seed`` and ``--events-per-shard`` generates the
same Pythia events; only the detector chain differs between the two runs. Jets are matched on
(shard, event number, truth-jet pT); the substructure is computed from each jet's ``flow``.

Usage::

    python benchmarks/boosted_jets_paired.py --old-top OLD/top --old-qcd OLD/qcd \
        --new-top NEW/top --new-qcd NEW/qcd [--labels old new] [--write-split DIR]

Prints, per class: matched jets, constituents per jet, new/old ratios of pT and masses, the mass
response and resolution against the truth jet, medians and paired differences of τ32, τ21, D2; then
per run (all jets): single-variable AUCs (τ32, τ21, D2, |m − m_t|), τ21's R50 and 1/JSD50 (50 bins
over the QCD mass range, and fixed 0-300 GeV bins), the 145-205 GeV mass-window efficiencies and
the QCD ⟨τ21⟩ in mass bins (the τ21-mass correlation that decides τ21's mass sculpting).
Each option takes one or more folders (in the same order for both runs). ``--write-split DIR``
also writes the matched jets of both runs with the same 70/10/20 split per event, for
``boosted_taggers.py --reuse-split --work DIR/<label>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

M_TOP = 172.5  # GeV
MASS_BINS = (0, 10, 20, 40, 60, 80, 120, 160, 250)  # GeV, QCD <tau21> profile


def fail(msg: str) -> None:
    """Bad input: one message naming the problem and the fix, exit code 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def load(directories: list[str]) -> dict[str, np.ndarray]:
    """Jets, flow, substructure and constituent counts of simulation outputs (all shards, sorted)."""
    from lhcml.data.files import expand_inputs
    from lhcml.errors import LhcmlError
    from lhcml.tasks.boosted.substructure import substructure_from_flow

    files = []
    for directory in directories:
        try:
            found = [f for f in expand_inputs(directory) if "pileup" not in f.name]
        except LhcmlError as e:
            fail(str(e))
        if not found:
            fail(f"no simulation shards in '{directory}' (give an `lhcml simulate -o` folder)")
        files += found
    jets, flow, shard = [], [], []
    for f in files:
        with h5py.File(f) as h:
            if "jets" not in h or "flow" not in h:
                fail(f"'{f}' has no jets/flow datasets (not a large-R jet sample)")
            jets.append(h["jets"][:])
            flow.append(h["flow"][:])
            shard.append(np.full(len(jets[-1]), len(shard)))
    j, fl = np.concatenate(jets), np.concatenate(flow)
    out = {k: j[k] for k in j.dtype.names}
    out.update(substructure_from_flow(fl))
    out["n_flow"] = fl["valid"].sum(axis=1)
    out["shard"] = np.concatenate(shard)
    out["files"] = np.array([f"{i}/{f.name}" for i, f in enumerate(files)])
    out["_jets"], out["_flow"] = j, fl
    return out


def match(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the jets present in both runs (same shard, event and truth-jet pT to 1 MeV)."""
    if list(a["files"]) != list(b["files"]):
        fail(
            "the two runs have different shard files (simulate both with the same -n and --events-per-shard)"
        )

    def keys(d):
        return {(int(s), int(e), round(float(t))): i
                for i, (s, e, t) in enumerate(zip(d["shard"], d["eventNumber"], d["truthJetPt"], strict=True))}  # fmt: skip

    ka, kb = keys(a), keys(b)
    common = sorted(set(ka) & set(kb))
    return np.array([ka[k] for k in common], dtype=np.int64), np.array(
        [kb[k] for k in common], dtype=np.int64
    )


def q(x: np.ndarray) -> tuple[float, float, float]:
    """16 %, 50 %, 84 % quantiles."""
    lo, med, hi = np.percentile(x, [16, 50, 84])
    return float(lo), float(med), float(hi)


def write_split(out: Path, runs: dict[str, tuple[dict, dict]], labels: tuple[str, str]) -> None:
    """Matched jets of both runs into ``out/<label>/{train,val,test}.h5`` (with substructure), split
    70/10/20 per event by a hash of (shard, event) (:func:`group_split`): the same jets in the same
    split for both runs, so a tagger trained on each compares the jets alone."""
    from lhcml.data.h5 import write_h5
    from lhcml.tasks.boosted.substructure import add_substructure_to_file
    from lhcml.tasks.photon.dataset import group_split

    parts: dict[str, list] = {lab: [] for lab in labels}
    for a, b in runs.values():
        ia, ib = match(a, b)
        group = (b["shard"][ib].astype(np.int64) << 32) + b["eventNumber"][ib].astype(np.int64)
        parts[labels[0]].append((a["_jets"][ia], a["_flow"][ia], group))
        parts[labels[1]].append((b["_jets"][ib], b["_flow"][ib], group))
    for lab, chunks in parts.items():
        jets = np.concatenate([c[0] for c in chunks])
        flow = np.concatenate([c[1] for c in chunks])
        group = np.concatenate([c[2] for c in chunks])
        split = group_split(group, (0.7, 0.8))
        order = np.random.default_rng(0).permutation(len(jets))  # same order in both runs
        (out / lab).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(("train", "val", "test")):
            sel = order[split[order] == k]
            p = out / lab / f"{name}.h5"
            write_h5(p, {"jets": jets[sel], "flow": flow[sel]})
            add_substructure_to_file(p, progress=False)
            lab_ = jets["R10TruthLabel"][sel]
            print(
                f"{lab}/{name}.h5: {len(sel)} jets ({int((lab_ == 1).sum())} top, {int((lab_ == 0).sum())} QCD)"
            )


def paired(name: str, a: dict, b: dict, labels: tuple[str, str]) -> None:
    ia, ib = match(a, b)
    la, lb = labels
    print(f"\n{name}: {len(a['pt'])} {la} / {len(b['pt'])} {lb} jets, {len(ia)} matched")
    print(f"| property ({la} -> {lb}) | value |\n|---|---|")
    print(
        f"| constituents per jet (mean) | {a['n_flow'][ia].mean():.2f} -> {b['n_flow'][ib].mean():.2f} |"
    )
    for f in ("pt", "mass", "massUngroomed"):
        ok = a[f][ia] > 0
        lo, med, hi = q(b[f][ib][ok] / a[f][ia][ok])
        print(f"| {f} {lb}/{la}: median (16-84 %) | {med:.4f} ({lo:.3f}-{hi:.3f}) |")
    for d, tag in ((a, ia), (b, ib)):
        r = d["mass"][tag] / d["truthJetMass"][tag]
        lo, med, hi = q(r[np.isfinite(r)])
        print(
            f"| m / m(truth jet), {la if d is a else lb}: median, 16-84 % half-width | {med:.3f}, {(hi - lo) / 2:.3f} |"
        )
    for f in ("Tau32_wta", "Tau21_wta", "D2"):
        diff = b[f][ib] - a[f][ia]
        lo, med, hi = q(diff)
        print(f"| median {f} (paired difference, 16-84 %) | {np.median(a[f][ia]):.3f} -> {np.median(b[f][ib]):.3f} "
              f"({med:+.3f}, {lo:+.3f}..{hi:+.3f}) |")  # fmt: skip


def separation(label: str, top: dict, qcd: dict) -> None:
    from lhcml.metrics.classification import auc
    from lhcml.metrics.decorrelation import inverse_jsd_at_efficiency, r50

    mt, mq = top["mass"] / 1e3, qcd["mass"] / 1e3
    print(f"\n{label}: {len(mt)} top, {len(mq)} QCD jets (all jets)")
    print("| quantity | value |\n|---|---|")
    for f in ("Tau32_wta", "Tau21_wta", "D2"):
        print(f"| AUC of {f} (smaller = top) | {auc(-top[f], -qcd[f]):.4f} |")
    print(f"| AUC of abs(m - {M_TOP}) | {auc(-np.abs(mt - M_TOP), -np.abs(mq - M_TOP)):.4f} |")
    dt, dq = -top["Tau21_wta"].astype(np.float64), -qcd["Tau21_wta"].astype(np.float64)
    fixed = np.linspace(0.0, 300e3, 51)
    ij = inverse_jsd_at_efficiency(dt, dq, qcd["mass"].astype(np.float64), 0.5, 50)
    ij_fixed = inverse_jsd_at_efficiency(
        dt, dq, np.clip(qcd["mass"], 0, 299.9e3).astype(np.float64), 0.5, fixed
    )
    print(
        f"| tau21: R50, 1/JSD50 (50 bins over the QCD mass range; fixed 0-300 GeV) | {r50(dt, dq):.2f}, {ij:.2f}; {ij_fixed:.2f} |"
    )
    wt, wq = (mt > 145) & (mt < 205), (mq > 145) & (mq < 205)
    print(f"| 145 < m < 205 GeV: top, QCD efficiency | {wt.mean():.3f}, {wq.mean():.4f} |")
    passing = qcd["Tau21_wta"] <= np.median(top["Tau21_wta"])
    idx = np.digitize(mq, MASS_BINS) - 1
    rows = []
    for i in range(len(MASS_BINS) - 1):
        s = idx == i
        if s.any():
            rows.append(f"{MASS_BINS[i]}-{MASS_BINS[i + 1]}: {qcd['Tau21_wta'][s].mean():.3f} "
                        f"(pass {passing[s].mean():.2f}, n {s.sum()}, constituents {qcd['n_flow'][s].mean():.1f})")  # fmt: skip
    print(
        f"| QCD <tau21> per mass bin (GeV), fraction passing the 50 % top tau21 cut | {'; '.join(rows)} |"
    )
    print(f"| corr(tau21, m) of the QCD jets | {np.corrcoef(qcd['Tau21_wta'], mq)[0, 1]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for k in ("old-top", "old-qcd", "new-top", "new-qcd"):
        ap.add_argument(f"--{k}", required=True, nargs="+", help="`lhcml simulate -o` folder(s)")
    ap.add_argument("--labels", nargs=2, default=["old", "new"])
    ap.add_argument("--write-split", type=Path, default=None,
                    help="write the matched jets of both runs, split alike, to DIR/<label>/{train,val,test}.h5")  # fmt: skip
    args = ap.parse_args()
    for k in ("old_top", "old_qcd", "new_top", "new_qcd"):
        for d in getattr(args, k):
            if not Path(d).exists():
                fail(f"--{k.replace('_', '-')} '{d}' does not exist")
    ot, oq, nt, nq = (load(getattr(args, k)) for k in ("old_top", "old_qcd", "new_top", "new_qcd"))
    labels = tuple(args.labels)
    paired("top", ot, nt, labels)
    paired("QCD", oq, nq, labels)
    separation(labels[0], ot, oq)
    separation(labels[1], nt, nq)
    if args.write_split:
        write_split(args.write_split, {"top": (ot, nt), "qcd": (oq, nq)}, labels)


if __name__ == "__main__":
    main()
