"""Interchange with ATLAS tools: atlas-ftag-tools reads lhcml files and lhcml reads theirs."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.data.checks import check_file
from lhcml.data.h5 import H5Reader
from lhcml.data.mock import make_mock_file

ftag_hdf5 = pytest.importorskip("ftag.hdf5")
ftag_mock = pytest.importorskip("ftag.mock")


@pytest.fixture(scope="module")
def lhcml_file(tmp_path_factory):
    return make_mock_file(tmp_path_factory.mktemp("compat") / "lhcml.h5", n_jets=1500, seed=3)


def test_ftag_reader_reads_lhcml_file(lhcml_file):
    ours = H5Reader(lhcml_file).read(
        {"jets": ["pt", "eta", "HadronConeExclTruthLabelID"], "tracks": ["d0", "valid"]}
    )
    theirs = ftag_hdf5.H5Reader(lhcml_file, batch_size=400, shuffle=False)
    assert theirs.num_global_objects == 1500
    variables = {"jets": ["pt", "eta", "HadronConeExclTruthLabelID"], "tracks": ["d0", "valid"]}
    got = theirs.load(variables, num_global_objects=1500)
    for name in ("pt", "eta", "HadronConeExclTruthLabelID"):
        np.testing.assert_array_equal(got["jets"][name], ours["jets"][name])
    np.testing.assert_array_equal(got["tracks"]["d0"], ours["tracks"]["d0"])
    np.testing.assert_array_equal(got["tracks"]["valid"], ours["tracks"]["valid"])
    # their cut language gives the same selection as ours
    from ftag import Cuts as FtagCuts

    cuts = ["pt > 40e3", "eventNumber %4== 1"]  # ftag's modulo syntax, also understood by lhcml
    got = theirs.load({"jets": ["pt"]}, num_global_objects=1500, cuts=FtagCuts.from_list(cuts))
    mine = H5Reader(lhcml_file).read({"jets": ["pt"]}, cuts=cuts)
    np.testing.assert_array_equal(got["jets"]["pt"], mine["jets"]["pt"])


def test_lhcml_reads_ftag_mock_file(tmp_path):
    fname, f = ftag_mock.get_mock_file(num_jets=800, fname=str(tmp_path / "ftag.h5"))
    f.close()
    present = {
        "jets": ["pt", "eta", "mass", "HadronConeExclTruthLabelID", "n_tracks"],
        "tracks": ["d0", "z0SinTheta", "numberOfPixelHits", "valid"],
    }
    check_file(fname, present)
    check_file(fname)  # every field they have: dtypes, shapes, valid, NaN
    reader = H5Reader(fname, batch_size=300)
    assert reader.n_jets == 800
    got = reader.read(present, cuts=["HadronConeExclTruthLabelID == 5"])
    import h5py

    with h5py.File(fname) as h:
        jets, tracks = h["jets"][:], h["tracks"][:]
    sel = jets["HadronConeExclTruthLabelID"] == 5
    np.testing.assert_array_equal(got["jets"]["pt"], jets["pt"][sel])
    np.testing.assert_array_equal(got["tracks"]["d0"], tracks["d0"][sel])
    # the cutBookkeeper group is metadata, not a dataset: streaming everything ignores it
    assert set(next(reader.stream())) == {"jets", "tracks"}
