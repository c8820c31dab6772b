"""Flat-file reader speed: jets/s and jets+tracks per minute per core, bytes per jet on disk.

Makes a mock file (default 200k jets x 40 track slots, lzf), then streams it with lhcml's
H5Reader (all fields / a typical training selection / with cuts) and, for reference, with
atlas-ftag-tools' H5Reader. Single process (one core).

    python benchmarks/data_reader.py [--jets 200000] [--batch 100000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TRAIN_VARS = {
    "jets": ["pt", "eta", "HadronConeExclTruthLabelID"],
    "tracks": [
        "d0", "z0SinTheta", "d0Uncertainty", "z0SinThetaUncertainty", "qOverP", "deta", "dphi",
        "ptfrac", "IP3D_signed_d0_significance", "IP3D_signed_z0_significance",
        "numberOfPixelHits", "numberOfSCTHits", "numberOfInnermostPixelLayerHits",
        "numberOfNextToInnermostPixelLayerHits", "numberOfPixelSharedHits", "numberOfSCTSharedHits",
        "numberOfPixelHoles", "numberOfSCTHoles", "leptonID", "ftagTruthOriginLabel", "valid",
    ],
}  # fmt: skip
CUTS = ["pt > 20e3", "abs(eta) < 2.5", "eventNumber % 10 <= 7"]


def _time(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jets", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--compression", default="lzf", choices=["lzf", "gzip", "none"])
    ap.add_argument("--keep", type=Path, default=None, help="write the mock file here and keep it")
    args = ap.parse_args()

    from lhcml.data.h5 import H5Reader, write_h5

    load0 = f"{os.getloadavg()[0]:.1f}"
    from lhcml.data.mock import make_mock_tables

    path = args.keep or Path(tempfile.mkdtemp()) / "bench.h5"
    t0 = time.perf_counter()
    tables = make_mock_tables(args.jets, seed=1)
    t_make = time.perf_counter() - t0
    comp = None if args.compression == "none" else args.compression
    t0 = time.perf_counter()
    write_h5(path, {k: v for k, v in tables.items() if k != "events"}, compression=comp)
    t_write = time.perf_counter() - t0
    del tables
    size = path.stat().st_size
    n = args.jets
    rows = [("mock tables (make)", t_make), ("write", t_write)]

    reader = H5Reader(path, batch_size=args.batch)

    def consume(variables, cuts=None):
        def run():
            for _batch in reader.stream(variables, cuts):
                pass

        return run

    rows.append(("read all fields", _time(consume(None))))
    rows.append(("read training vars", _time(consume(TRAIN_VARS))))
    rows.append(("read training vars + cuts", _time(consume(TRAIN_VARS, CUTS))))
    try:
        from ftag.hdf5 import H5Reader as FtagReader

        fr = FtagReader(path, batch_size=args.batch, shuffle=False)

        def ftag_run():
            for _ in fr.stream({k: list(v) for k, v in TRAIN_VARS.items()}):
                pass

        rows.append(("ftag H5Reader, training vars", _time(ftag_run)))
    except ImportError:
        pass

    print(
        f"load average before/after: {load0} / {os.getloadavg()[0]:.1f} (2-core machine is shared)"
    )
    print(f"file: {n} jets x 40 track slots, {args.compression}, {size / 1e6:.1f} MB, "
          f"{size / n:.0f} bytes/jet on disk")  # fmt: skip
    print(f"{'step':<32s} {'seconds':>8s} {'jets/s':>12s} {'jets+tracks/min/core':>22s}")
    for name, t in rows:
        print(f"{name:<32s} {t:8.2f} {n / t:12.3g} {60 * n / t:22.3g}")
    if args.keep is None:
        path.unlink()


if __name__ == "__main__":
    main()
