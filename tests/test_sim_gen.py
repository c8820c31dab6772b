"""Tests of the event generation, pileup, V0 decays, jets/labels and event assembly (sim/)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from lhcml.data import schema  # noqa: E402
from lhcml.errors import ConfigError, CorruptFileError  # noqa: E402
from lhcml.sim.decays import decay_v0s  # noqa: E402
from lhcml.sim.events import simulate_events  # noqa: E402
from lhcml.sim.generator import PythiaGenerator  # noqa: E402
from lhcml.sim.pileup import PileupLibrary, build_pileup_library  # noqa: E402
from lhcml.sim.processes import get_process, list_processes  # noqa: E402

O = schema.TRUTH_ORIGIN  # noqa: E741


@pytest.fixture(scope="session")
def ttbar_truth():
    return PythiaGenerator("ttbar", 11).generate(120)


@pytest.fixture(scope="session")
def pu_library(tmp_path_factory):
    path = tmp_path_factory.mktemp("pu") / "minbias.h5"
    build_pileup_library(150, seed=5, path=path)
    return PileupLibrary.load(path)


@pytest.fixture(scope="session")
def ttbar_jets():
    return simulate_events("ttbar", 80, mu=0, seed=5)


# -- registry ------------------------------------------------------------------------------------


def test_registry_and_errors():
    names = list_processes()
    for required in ("ttbar", "zprime", "qcd", "minbias", "top", "wz", "qcd_boosted", "qg", "gamma_jet",
                     "h_gamgam", "dijet_photon", "hbb"):
        assert required in names
    with pytest.raises(ConfigError, match="did you mean 'ttbar'"):
        get_process("ttbarr")
    with pytest.raises(ConfigError, match="seed"):
        get_process("ttbar").pythia_settings(900_000_000)
    s = get_process("ttbar").pythia_settings(7)
    assert "310:mayDecay = off" in s and "Random:seed = 7" in s and "Beams:eCM = 13600" in s
    with pytest.raises(ConfigError, match="minbias"):
        simulate_events("minbias", 10, mu=0)


# -- generator truth ---------------------------------------------------------------------------


def test_b_hadron_proper_decay_length(ttbar_truth):
    """cτ of weakly decaying b-hadrons from their daughters' displaced vertices: ⟨cτ⟩ ≈ 0.45-0.5 mm."""
    p, h = ttbar_truth.particles, ttbar_truth.hadrons
    ctau = []
    for ev in range(len(p)):
        pe, he = p[ev], h[ev]
        hf = ak.to_numpy(pe.hf_hadron)
        orig = ak.to_numpy(pe.origin)
        vx, vy, vz = (ak.to_numpy(pe[k]) for k in ("vx", "vy", "vz"))
        for had in he[he.flavour == 5]:
            d = np.nonzero((hf == had.index) & (orig == O["fromB"]))[0]
            if len(d) == 0:
                continue
            # the b-hadron's own decay vertex is the closest daughter vertex
            dist = np.sqrt((vx[d] - had.vx) ** 2 + (vy[d] - had.vy) ** 2 + (vz[d] - had.vz) ** 2)
            pabs = np.sqrt(had.px**2 + had.py**2 + had.pz**2)
            ctau.append(dist.min() * had.m / pabs)
    ctau = np.array(ctau)
    assert len(ctau) > 150
    assert 0.40 < ctau.mean() < 0.56, ctau.mean()
    # exponential: the median is ln2 times the mean
    assert 0.55 < np.median(ctau) / ctau.mean() < 0.85


def test_origins_and_vertices(ttbar_truth):
    p = ttbar_truth.particles
    fin = ak.flatten(p[p.final])
    origin = ak.to_numpy(fin.origin)
    for o in ("primary", "fromB", "fromBC", "fromC"):
        assert (origin == O[o]).sum() > 0, o
    # primary particles come from the hard-scatter vertex (id 0) at the beam-spot position
    prim = fin[(fin.origin == O["primary"]) & (fin.vertex_index == 0)]
    assert len(prim) > 0.8 * (origin == O["primary"]).sum()
    # fromB particles are displaced and carry a b-hadron index
    fb = fin[fin.origin == O["fromB"]]
    assert np.all(ak.to_numpy(fb.hf_hadron) >= 0)
    assert np.mean(ak.to_numpy(fb.vertex_index) > 0) > 0.95
    # beam spot: the spread of primary-vertex z is about 35 mm, xy about 10 um
    pv = ttbar_truth.primary_vertex
    assert 20 < pv[:, 2].std() < 50 and pv[:, 0].std() < 0.03
    assert np.all(ttbar_truth.weights > 0)


def test_v0_decays(ttbar_truth):
    rng = np.random.default_rng(1)
    out = decay_v0s(ttbar_truth.particles, rng)
    # existing particles keep their indices
    n_before = ak.to_numpy(ak.num(ttbar_truth.particles))
    assert np.array_equal(ak.to_numpy(out.pid[:, :1]).ravel(), ak.to_numpy(ttbar_truth.particles.pid[:, :1]).ravel())
    new = ak.flatten(out[ak.local_index(out) >= n_before])
    assert len(new) > 50
    assert set(np.abs(ak.to_numpy(new.parent_pid))) <= {310, 3122}
    r = np.hypot(ak.to_numpy(new.vx), ak.to_numpy(new.vy))
    assert np.median(r) > 10.0  # displaced (cτ = 27/79 mm, boosted)
    org = ak.to_numpy(new.origin)
    assert np.mean(org == O["otherSecondary"]) > 0.8
    # K0S -> pi+ pi-: the pair from one vertex has the K0S mass
    new_j = out[ak.local_index(out) >= n_before]
    kk_j = new_j[(new_j.parent_pid == 310) & (abs(new_j.pid) == 211)]
    kk = ak.flatten(kk_j)
    key = ak.to_numpy(kk.vertex_index) * 100000 + np.repeat(np.arange(len(out)), ak.to_numpy(ak.num(kk_j)))
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    e = np.bincount(inv, ak.to_numpy(kk.e))
    px, py, pz = (np.bincount(inv, ak.to_numpy(kk[c])) for c in ("px", "py", "pz"))
    m = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))[cnt == 2]
    assert len(m) > 5
    np.testing.assert_allclose(m, 0.497611, atol=2e-3)
    # decayed mothers are no longer final
    moms = ak.flatten(out[(abs(out.pid) == 310)])
    assert np.any(~ak.to_numpy(moms.final))


# -- pileup --------------------------------------------------------------------------------------


def test_pileup_linear_in_mu(ttbar_truth, pu_library):
    hard = ttbar_truth.particles[:40]
    n_hard = ak.to_numpy(ak.num(hard))
    means = {}
    for mu in (10.0, 40.0):
        out, n_pu = pu_library.overlay(hard, mu, np.random.default_rng(3))
        n_added = ak.to_numpy(ak.num(out)) - n_hard
        assert abs(n_pu.mean() - mu) < 4 * np.sqrt(mu / len(n_pu)) + 0.5
        added = ak.flatten(out[ak.local_index(out) >= n_hard])
        assert np.all(ak.to_numpy(added.is_pileup)) and np.all(ak.to_numpy(added.origin) == O["pileup"])
        # pileup vertex ids are distinct from the hard scatter's
        hard_max = ak.to_numpy(ak.max(hard.vertex_index, axis=1))
        assert np.all(ak.to_numpy(ak.min(out[ak.local_index(out) >= n_hard].vertex_index, axis=1, mask_identity=False))[n_pu > 0] > hard_max[n_pu > 0])
        assert 20 < np.std(ak.to_numpy(added.vz)) < 50
        means[mu] = n_added.mean()
    assert 3.2 < means[40.0] / means[10.0] < 4.8


def test_pileup_library_io(tmp_path, pu_library):
    path = pu_library.save(tmp_path / "lib.h5")
    again = PileupLibrary.load(path)
    assert np.array_equal(again.counts, pu_library.counts)
    assert np.array_equal(again.columns["pid"], pu_library.columns["pid"])
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CorruptFileError, match="rebuild"):
        PileupLibrary.load(bad)
    with pytest.raises(CorruptFileError, match="does not exist"):
        PileupLibrary.load(tmp_path / "missing.h5")


# -- assembled events -----------------------------------------------------------------------------


def test_small_r_output_schema_and_labels(ttbar_jets):
    out = ttbar_jets
    assert set(out) == {"jets", "tracks", "events"}
    assert out["jets"].dtype == schema.JET_DTYPE
    assert out["tracks"].dtype == schema.TRACK_DTYPE
    assert out["events"].dtype == schema.EVENT_DTYPE
    j, t = out["jets"], out["tracks"]
    assert t.shape == (len(j), schema.N_TRACKS)
    assert np.all(j["pt"] > 20e3) and np.all(np.abs(j["eta"]) < 2.5)
    assert out["events"]["n_jets"].sum() == len(j)
    lab = j["HadronConeExclTruthLabelID"]
    frac = {f: np.mean(lab == f) for f in (0, 4, 5)}
    assert 0.2 < frac[5] < 0.5 and 0.03 < frac[4] < 0.2 and frac[0] > 0.3, frac
    # b-jets: labelling hadron pT > 5 GeV within 0.3, positive Lxy; light jets: NaN
    b = lab == 5
    assert np.all(j["HadronConeExclTruthLabelPt"][b] > 5e3) and np.all(j["HadronConeExclTruthLabelDR"][b] < 0.3)
    assert np.all(np.isnan(j["HadronConeExclTruthLabelPt"][lab == 0]))
    assert np.median(j["HadronConeExclTruthLabelLxy"][b]) > 0.5
    assert set(np.unique(j["HadronConeExclExtendedTruthLabelID"][b])) <= {5, 54, 55}
    # physics: b-jet tracks have larger lifetime-signed IP significance than light-jet tracks
    sd0 = t["IP3D_signed_d0_significance"]
    assert np.median(sd0[b][t["valid"][b]]) > np.median(sd0[lab == 0][t["valid"][lab == 0]]) + 0.3
    assert j["n_tracks"][b].mean() > j["n_tracks"][lab == 0].mean()


def test_determinism(pu_library):
    a = simulate_events("ttbar", 12, mu=5, seed=21, pileup=pu_library)
    b = simulate_events("ttbar", 12, mu=5, seed=21, pileup=pu_library)
    c = simulate_events("ttbar", 12, mu=5, seed=22, pileup=pu_library)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert a["jets"].shape != c["jets"].shape or a["jets"].tobytes() != c["jets"].tobytes()
    assert np.all(a["jets"]["averageInteractionsPerCrossing"] == 5)
    assert np.all(a["events"]["eventNumber"] == 21 * 10_000_000 + np.arange(12))


@pytest.mark.parametrize(("process", "label", "lo", "hi"), [("top", 1, 150.0, 195.0), ("wz", None, 70.0, 105.0)])
def test_large_r_mass_peaks(process, label, lo, hi):
    out = simulate_events(process, 60, mu=0, seed=3)
    j, f = out["jets"], out["flow"]
    assert j.dtype == schema.LARGE_R_JET_DTYPE and f.dtype == schema.FLOW_DTYPE
    assert f.shape == (len(j), schema.N_FLOW)
    assert len(j) >= 10
    assert np.all((j["pt"] > 550e3) & (j["pt"] < 650e3))
    if label is not None:
        assert np.all(j["R10TruthLabel"] == label)
    else:
        assert set(np.unique(j["R10TruthLabel"])) <= {2, 3}
    assert lo < np.median(j["mass"]) / 1e3 < hi
    # constituents: pT ordered, valid count = n_constituents (capped), relative coordinates small
    nvalid = f["valid"].sum(axis=1)
    assert np.array_equal(nvalid, np.minimum(j["n_constituents"], schema.N_FLOW))
    assert np.all(np.diff(np.where(f["valid"], f["pt"], -1), axis=1) <= 0)
    assert np.all(np.hypot(f["deta"], f["dphi"])[f["valid"]] < 1.0)


# -- flat pipeline (speed) vs. Awkward reference operations ------------------------------------------


def test_flat_helpers_match_awkward(ttbar_truth):
    from lhcml.sim.generator import FlatTable, insert_per_event, segment_max, to_awkward

    rng = np.random.default_rng(4)
    counts = np.array([3, 0, 2, 5])
    cols = {"x": rng.normal(size=10), "i": rng.integers(-5, 5, 10).astype(np.int32), "q": rng.normal(size=(10, 3))}
    ref = ak.unflatten(ak.zip(cols, depth_limit=1), counts)
    assert ak.array_equal(to_awkward(cols, counts), ref)
    with pytest.raises(ValueError, match="rows"):
        to_awkward({"x": np.zeros(3)}, counts)
    # insert_per_event == ak.concatenate(axis=1), also with empty events on either side
    a = FlatTable({"x": cols["x"], "i": cols["i"]}, counts)
    b = FlatTable({"x": rng.normal(size=4), "i": np.arange(4, dtype=np.int32)}, np.array([1, 2, 0, 1]))
    both = insert_per_event(a, b).to_awkward()
    assert ak.array_equal(both, ak.concatenate([a.to_awkward(), b.to_awkward()], axis=1))
    np.testing.assert_array_equal(segment_max(cols["i"], a.offsets, -99), [*ak.fill_none(ak.max(ref.i, axis=1), -99)])
    # the particle table survives the flat <-> awkward round trip
    p = ttbar_truth.particles
    again = FlatTable.from_awkward(p).to_awkward()
    assert ak.array_equal(again, p)


def test_tower_sums_dense_equals_sorted():
    from lhcml.sim.pflow import tower_sums

    rng = np.random.default_rng(2)
    key = rng.integers(0, 5000, 20000)
    e = rng.exponential(1.0, 20000)
    k1, s1 = tower_sums(key, e, 5000, dense=True)
    k2, s2 = tower_sums(key, e, 5000, dense=False)
    assert np.array_equal(k1, k2) and s1.tobytes() == s2.tobytes()


def test_cluster_flat_matches_fastjet_awkward(ttbar_truth):
    from lhcml.sim.generator import FlatTable
    from lhcml.sim.jets import cluster, cluster_flat

    p = ttbar_truth.particles[:30]
    p = p[p.final & (abs(p.pid) != 12) & (abs(p.pid) != 14) & (abs(p.pid) != 16)]
    objects = ak.zip({"px": p.px, "py": p.py, "pz": p.pz, "E": p.e})
    jets, cidx = cluster(objects, 0.4, 10.0)
    fjets, coff, cons = cluster_flat(FlatTable.from_awkward(objects), 0.4, 10.0)
    assert np.array_equal(fjets.counts, ak.to_numpy(ak.num(jets)))
    for k in ("px", "py", "pz", "E", "pt", "eta", "phi", "mass"):
        assert fjets[k].tobytes() == ak.to_numpy(ak.flatten(jets[k])).tobytes(), k
    # the same constituents (flat rows vs. per-event local indices)
    obj_off = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(objects)))])
    ref = ak.flatten(cidx + obj_off[:-1], axis=1)
    assert np.array_equal(np.diff(coff), ak.to_numpy(ak.num(ref)))
    assert np.array_equal(cons, ak.to_numpy(ak.flatten(ref)))
    assert len(fjets["pt"]) > 60 and np.all(np.diff(fjets["pt"])[np.diff(fjets.event) == 0] <= 0)
