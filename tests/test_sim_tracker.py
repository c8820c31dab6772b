"""Tests of the parametric tracker (lhcml.sim.tracker) and its parameter file (lhcml.sim.detector)."""

from __future__ import annotations

from dataclasses import replace

import awkward as ak
import numpy as np
import pytest
from scipy.optimize import brentq

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.errors import ConfigError, SchemaError
from lhcml.sim.detector import C_CURV, default_detector_params, load_detector_params
from lhcml.sim.hit_patterns import module_center
from lhcml.sim.track_resolution import (
    TAIL_DENSE_CORE,
    TAIL_MATERIAL,
    TAIL_PATTERN,
    material_scatter_probability,
)
from lhcml.sim.tracker import TRACK_OUTPUT_FIELDS, simulate_tracks, true_perigee

B = 2.0


def make_particles(events: list[dict[str, np.ndarray]]) -> ak.Array:
    """A particle table (generator layout) from per-event columns; unspecified fields defaulted."""
    cols_per_event = []
    for ev in events:
        n = len(ev["px"])
        q = np.asarray(ev.get("charge", np.ones(n)), dtype=np.int8)
        pid = np.asarray(ev.get("pid", 211 * q.astype(np.int32)), dtype=np.int32)
        m = np.asarray(ev.get("m", np.full(n, 0.13957)), dtype=np.float64)
        px, py, pz = (np.asarray(ev[k], dtype=np.float64) for k in ("px", "py", "pz"))
        cols_per_event.append({
            "pid": pid, "charge": q, "px": px, "py": py, "pz": pz,
            "e": np.sqrt(px**2 + py**2 + pz**2 + m**2), "m": m,
            "vx": np.asarray(ev.get("vx", np.zeros(n)), dtype=np.float64),
            "vy": np.asarray(ev.get("vy", np.zeros(n)), dtype=np.float64),
            "vz": np.asarray(ev.get("vz", np.zeros(n)), dtype=np.float64),
            "status": np.ones(n, dtype=np.int32), "final": np.ones(n, dtype=bool),
            "parent_pid": np.asarray(ev.get("parent_pid", np.zeros(n)), dtype=np.int32),
            "origin": np.asarray(ev.get("origin", np.full(n, 2)), dtype=np.int8),
            "hf_hadron": np.full(n, -1, dtype=np.int32),
            "vertex_index": np.asarray(ev.get("vertex_index", np.zeros(n)), dtype=np.int32),
            "is_pileup": np.asarray(ev.get("is_pileup", np.zeros(n)), dtype=bool),
        })
    counts = [len(c["px"]) for c in cols_per_event]
    flat = {k: np.concatenate([c[k] for c in cols_per_event]) for k in cols_per_event[0]}
    return ak.unflatten(ak.zip(flat), counts)


def kinematics(pt, eta, phi):
    pt, eta, phi = np.broadcast_arrays(np.asarray(pt, float), np.asarray(eta, float), np.asarray(phi, float))
    return {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta)}


@pytest.fixture(scope="session")
def params():
    return default_detector_params()


@pytest.fixture(scope="session")
def quiet(params):
    """No fakes, no material interactions, no dead modules or overlaps: only the particles we build."""
    return ideal_modules(params).with_updates(
        fakes=dict(base_rate=0.0, density_rate=0.0, occupancy_rate=0.0),
        material=dict(interaction_lengths=[0.0] * 5, radiation_lengths=[0.0] * 5),
    )


def ideal_modules(p, overlap=0.0, **modules):
    """Parameters with no dead modules (unless given) and the same φ overlap on every layer."""
    return p.with_updates(
        barrel_layers=tuple(replace(x, phi_overlap=overlap) for x in p.barrel_layers),
        end_cap_disks=tuple(replace(x, phi_overlap=overlap) for x in p.end_cap_disks),
        modules=dict(dict(dead_fraction_ibl=0.0, dead_fraction_pixel=0.0, dead_fraction_sct=0.0), **modules),
    )


NO_TAILS = dict(material=dict(elastic_to_inelastic=0.0), dense_core=dict(probability_per_shared_hit=0.0),
                pattern_recognition=dict(rate=0.0, density_rate=0.0))


# ------------------------------------------------------------------------------------------
# helix
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1, -1])
def test_helix_vertex_on_perigee(q):
    """Momentum perpendicular to the vertex position: the vertex is the perigee point."""
    x0, zv = 2.5, 7.0
    d0, z0, phi0, theta, qop = true_perigee(x0, 0.0, zv, 0.0, 3.0, 1.0, q, B)
    # moving +y at x > 0 goes anticlockwise around the beam line: ATLAS d0 < 0
    assert d0 == pytest.approx(-x0, abs=1e-9)
    assert z0 == pytest.approx(zv, abs=1e-9)
    assert phi0 == pytest.approx(np.pi / 2, abs=1e-9)
    assert qop == pytest.approx(q / np.hypot(3.0, 1.0))
    # the same vertex with the momentum reversed: clockwise, d0 > 0
    d0r, *_ = true_perigee(x0, 0.0, zv, 0.0, -3.0, 1.0, q, B)
    assert d0r == pytest.approx(+x0, abs=1e-9)


def _brute_force_perigee(v, p, q):
    """Independent parametrisation: momentum direction φ(ψ) = φ_p − sψ, arc length Rψ."""
    pt = np.hypot(p[0], p[1])
    R = pt / (C_CURV * B)
    s = np.sign(q)
    phip = np.arctan2(p[1], p[0])
    cot = p[2] / pt

    def pos(psi):
        x = v[0] + (R / s) * (np.sin(phip) - np.sin(phip - s * psi))
        y = v[1] + (R / s) * (np.cos(phip - s * psi) - np.cos(phip))
        return x, y

    grid = np.linspace(-0.5, 0.5, 200001)
    x, y = pos(grid)
    g0 = grid[np.argmin(x * x + y * y)]

    def radial_velocity(t):  # zero where the position is perpendicular to the momentum
        x, y = pos(t)
        return x * np.cos(phip - s * t) + y * np.sin(phip - s * t)

    psi = brentq(radial_velocity, g0 - 1e-4, g0 + 1e-4, xtol=1e-15)
    x, y = pos(psi)
    phi = phip - s * psi
    return -x * np.sin(phi) + y * np.cos(phi), v[2] + R * psi * cot, phi


def test_helix_displaced_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        v = np.array([*rng.normal(0, 5, 2), rng.normal(0, 30)])
        pt = rng.uniform(0.6, 5.0)
        phi = rng.uniform(-np.pi, np.pi)
        p = np.array([pt * np.cos(phi), pt * np.sin(phi), pt * rng.normal(0, 1.5)])
        q = rng.choice([-1, 1])
        d0, z0, phi0, _, _ = true_perigee(*v, *p, q, B)
        d0_bf, z0_bf, phi_bf = _brute_force_perigee(v, p, q)
        assert d0 == pytest.approx(d0_bf, abs=1e-6)  # 1 nm
        assert z0 == pytest.approx(z0_bf, abs=1e-6)
        assert np.cos(phi0 - phi_bf) == pytest.approx(1.0, abs=1e-12)


def test_helix_straight_line_limit():
    """At 1 TeV the helix is a straight line: d0 = −x sinφ + y cosφ, z0 = z − (x cosφ + y sinφ) cotθ."""
    v = np.array([1.2, -0.7, 3.0])
    phi, cot = 0.4, 0.8
    p = 1000.0 * np.array([np.cos(phi), np.sin(phi), cot])
    d0, z0, phi0, _, _ = true_perigee(*v, *p, 1, B)
    assert d0 == pytest.approx(-v[0] * np.sin(phi) + v[1] * np.cos(phi), abs=1e-5)
    assert z0 == pytest.approx(v[2] - (v[0] * np.cos(phi) + v[1] * np.sin(phi)) * cot, abs=1e-5)
    assert phi0 == pytest.approx(phi, abs=1e-5)


def test_simulated_track_carries_true_perigee(quiet):
    phi = 1.0 + 0.02 * np.arange(50)  # well separated: no merged clusters
    kin = kinematics(np.full(50, 20.0), 0.3, phi)
    ev = {**kin, "vx": np.full(50, 3.0), "vy": np.full(50, -1.0), "vz": np.full(50, 5.0),
          "vertex_index": np.ones(50)}
    tracks = simulate_tracks(make_particles([ev]), np.random.default_rng(1), quiet)
    f = ak.flatten(tracks)
    assert len(f) > 30
    i = ak.to_numpy(f.particle_index)
    d0, z0, *_ = true_perigee(3.0, -1.0, 5.0, kin["px"][i], kin["py"][i], kin["pz"][i], 1, B)
    np.testing.assert_allclose(ak.to_numpy(f.truth_d0), d0, atol=1e-9)
    np.testing.assert_allclose(ak.to_numpy(f.truth_z0), z0, atol=1e-9)
    # reconstructed d0 scatters around the true one by the reported resolution (core or tails)
    pull = ak.to_numpy((f.d0 - d0) / f.d0Uncertainty)
    assert np.median(np.abs(pull)) < 1.5


# ------------------------------------------------------------------------------------------
# resolution and tails
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def resolution_sample(quiet):
    rng = np.random.default_rng(11)
    n_ev, n_per = 400, 250
    pts = np.array([1.0, 3.0, 10.0, 40.0])
    events = []
    for _ in range(n_ev):
        pt = rng.choice(pts, n_per)
        eta = rng.uniform(-0.5, 0.5, n_per)
        phi = rng.uniform(-np.pi, np.pi, n_per)
        events.append({**kinematics(pt, eta, phi), "charge": rng.choice([-1, 1], n_per),
                       "vz": rng.normal(0, 35, n_per)})
    tracks = simulate_tracks(make_particles(events), np.random.default_rng(12), quiet)
    f = ak.flatten(tracks)
    keep = ak.to_numpy((f.numberOfPixelSharedHits == 0) & (f.numberOfInnermostPixelLayerHits > 0))
    return {k: ak.to_numpy(f[k])[keep] for k in ("d0", "truth_d0", "d0Uncertainty", "truth_pt",
                                                 "truth_theta", "z0", "truth_z0",
                                                 "z0SinThetaUncertainty")}


def _core_sigma(x):
    """σ of the Gaussian core: iterative 2.5σ clipping, corrected for the truncation."""
    from scipy.stats import norm

    c = 2.5
    trunc = np.sqrt(1 - 2 * c * norm.pdf(c) / (2 * norm.cdf(c) - 1))  # std of N(0,1) within ±c
    s = 1.4826 * np.median(np.abs(x - np.median(x)))
    for _ in range(10):
        s = np.std(x[np.abs(x) < c * s]) / trunc
    return s


def test_d0_core_resolution_follows_configuration(resolution_sample, quiet):
    r = quiet.resolution
    d = resolution_sample
    for pt in (1.0, 3.0, 10.0, 40.0):
        sel = np.isclose(d["truth_pt"], pt)
        assert sel.sum() > 5000
        resid = d["d0"][sel] - d["truth_d0"][sel]
        sin_t = np.sin(d["truth_theta"][sel])
        expected = np.mean(np.hypot(r.d0_a, r.d0_b / (pt * np.sqrt(sin_t))))
        assert _core_sigma(resid) == pytest.approx(expected, rel=0.10)
        # the reported uncertainty is the core estimate, not the realised error
        np.testing.assert_allclose(d["d0Uncertainty"][sel], np.hypot(r.d0_a, r.d0_b / (pt * np.sqrt(sin_t))))
        zres = (d["z0"][sel] - d["truth_z0"][sel]) * sin_t
        zexp = np.mean(np.hypot(r.z0st_a, r.z0st_b / (pt * np.sqrt(sin_t))))
        assert _core_sigma(zres) == pytest.approx(zexp, rel=0.10)


def _pull_width(x):
    """Robust width (IQR / 1.349)."""
    q75, q25 = np.percentile(x, [75, 25])
    return (q75 - q25) / 1.349


def test_pattern_recognition_tails_rate_and_separate_widths(quiet):
    """Set high, the pattern-recognition tail appears at its rate, with its own width per parameter."""
    scale = dict(d0=2.0, z0=3.0, phi=4.0, theta=1.5, qoverp=6.0)
    p = quiet.with_updates(tails=dict(NO_TAILS, pattern_recognition=dict(rate=0.3, density_rate=0.0,
                                                                          scale=scale)))
    rng = np.random.default_rng(21)
    ev = [{**kinematics(np.full(200, 4.0), rng.uniform(-1, 1, 200), rng.uniform(-3, 3, 200)),
           "charge": rng.choice([-1, 1], 200)} for _ in range(40)]
    f = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(22), p))
    src = ak.to_numpy(f.tailSource)
    tail = (src & TAIL_PATTERN) > 0
    assert np.all((src & (TAIL_MATERIAL | TAIL_DENSE_CORE)) == 0)
    assert tail.mean() == pytest.approx(0.3, abs=0.02)
    theta_t = ak.to_numpy(f.truth_theta)
    p_true = ak.to_numpy(f.truth_pt) / np.sin(theta_t)
    pulls = {
        "d0": ak.to_numpy(f.d0 - f.truth_d0) / ak.to_numpy(f.d0Uncertainty),
        "z0": ak.to_numpy(f.z0 - f.truth_z0) * np.sin(theta_t) / ak.to_numpy(f.z0SinThetaUncertainty),
        "phi": ((ak.to_numpy(f.phi - f.truth_phi) + np.pi) % (2 * np.pi) - np.pi) / ak.to_numpy(f.phiUncertainty),
        "theta": (ak.to_numpy(f.theta) - theta_t) / ak.to_numpy(f.thetaUncertainty),
        # 4 GeV tracks never flip charge: compare |q/p| (1/MeV in the output)
        "qoverp": (np.abs(ak.to_numpy(f.qOverP)) - 1e-3 / p_true) / ak.to_numpy(f.qOverPUncertainty),
    }
    for k, s in scale.items():
        assert _pull_width(pulls[k][~tail]) == pytest.approx(1.0, rel=0.08), k
        assert _pull_width(pulls[k][tail]) == pytest.approx(s, rel=0.12), k


def test_material_tails_at_configured_rate(params):
    """Elastic hadron scatters in the material: the configured rate, kinks that grow as 1/p."""
    p = params.with_updates(tails=dict(NO_TAILS, material=dict(elastic_to_inelastic=8.0)),
                            fakes=dict(base_rate=0.0, density_rate=0.0, occupancy_rate=0.0),
                            material=dict(radiation_lengths=[0.0] * 5))
    rng = np.random.default_rng(31)
    n = 3000
    pt = np.where(np.arange(n) % 2 == 0, 2.0, 50.0)
    pid = np.where(np.arange(n) % 3 == 0, 13, 211)  # a third are muons: no hadronic scattering
    ev = {**kinematics(pt, rng.uniform(-1.5, 1.5, n), rng.uniform(-3, 3, n)), "pid": pid, "charge": np.ones(n),
          "m": np.where(pid == 13, 0.10566, 0.13957)}
    f = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(32), p))
    prim = ak.to_numpy(f.origin) == TRUTH_ORIGIN["primary"]
    kink = (ak.to_numpy(f.tailSource) & TAIL_MATERIAL) > 0
    apid = np.abs(ak.to_numpy(f.truthPdgId))
    assert not kink[apid == 13].any()
    had = prim & (apid == 211)
    prob = material_scatter_probability(np.ones(had.sum(), bool), np.zeros(had.sum()),
                                        ak.to_numpy(f.truth_theta)[had], p)
    expected = np.mean(1.0 - np.prod(1.0 - prob, axis=1))
    assert 0.05 < expected < 0.5
    assert kink[had].mean() == pytest.approx(expected, abs=0.03)
    # the d0 shift of a kink scales as 1/p: soft kinked tracks are displaced far more than hard ones
    resid = np.abs(ak.to_numpy(f.d0 - f.truth_d0))
    tpt = ak.to_numpy(f.truth_pt)
    soft, hard = had & kink & (tpt < 10), had & kink & (tpt > 10)
    assert np.median(resid[soft]) > 8 * np.median(resid[hard])
    assert np.median(resid[soft]) > 5 * np.median(resid[had & ~kink & (tpt < 10)])


def test_dense_core_tails_follow_shared_hits(quiet):
    """Per shared pixel hit the dense-core tail fires with the configured probability."""
    p = quiet.with_updates(tails=dict(NO_TAILS, dense_core=dict(probability_per_shared_hit=0.3)),
                           shared_hits=dict(split_probability=0.0, lost_probability=0.0))
    events = []
    for ph in np.linspace(-3, 3, 400):
        events.append({**kinematics([60.0, 61.0, 60.0], [0.5, 0.5002, 0.5], [ph, ph + 3e-4, ph + 0.8])})
    f = ak.flatten(simulate_tracks(make_particles(events), np.random.default_rng(7), p))
    n_sh = ak.to_numpy(f.numberOfPixelSharedHits)
    dense = (ak.to_numpy(f.tailSource) & TAIL_DENSE_CORE) > 0
    assert not dense[n_sh == 0].any()
    assert dense[n_sh > 0].mean() == pytest.approx(np.mean(1 - 0.7 ** n_sh[n_sh > 0]), abs=0.05)


def test_no_tails_when_switched_off(quiet):
    p = quiet.with_updates(tails=NO_TAILS)
    rng = np.random.default_rng(5)
    ev = [{**kinematics(np.full(300, 5.0), rng.uniform(-1, 1, 300), rng.uniform(-3, 3, 300))}
          for _ in range(50)]
    f = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(6), p))
    pull = ak.to_numpy((f.d0 - f.truth_d0) / f.d0Uncertainty)
    assert np.all(ak.to_numpy(f.tailSource) == 0)
    assert np.abs(pull).max() < 6.0
    assert np.std(pull) == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------------------------------
# efficiency, acceptance and hit patterns
# ------------------------------------------------------------------------------------------


def _radial_sample(r, n=400, pt=5.0, eta=0.2, params=None, seed=0):
    """n particles produced at transverse radius r, flying radially outwards."""
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    ev = {**kinematics(np.full(n, pt), eta, phi), "vx": r * np.cos(phi), "vy": r * np.sin(phi),
          "vz": np.zeros(n), "vertex_index": np.ones(n)}
    return ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(seed), params))


def test_efficiency_falls_with_production_radius(quiet):
    eff = [len(_radial_sample(r, params=quiet)) / 400 for r in (0.0, 20.0, 45.0, 70.0, 110.0, 130.0, 250.0)]
    assert eff[0] > 0.85
    assert all(a >= b - 0.03 for a, b in zip(eff, eff[1:], strict=False)), eff
    assert eff[3] < eff[0] - 0.1
    assert eff[5] == 0.0 and eff[6] == 0.0  # beyond the outermost pixel layer: no standard tracks


def test_track_born_at_60mm_has_no_ibl_or_blayer_hits(quiet):
    f = _radial_sample(60.0, params=quiet)
    assert len(f) > 100
    assert np.all(ak.to_numpy(f.numberOfInnermostPixelLayerHits) == 0)
    assert np.all(ak.to_numpy(f.numberOfNextToInnermostPixelLayerHits) == 0)
    assert np.all(ak.to_numpy(f.numberOfPixelHits) <= 2)
    np.testing.assert_allclose(ak.to_numpy(f.truthProductionRadius), 60.0)
    # a prompt track crosses all four barrel pixel layers and the four SCT double layers
    f0 = _radial_sample(0.0, params=quiet)
    assert np.mean(ak.to_numpy(f0.numberOfInnermostPixelLayerHits) == 1) > 0.95
    assert np.median(ak.to_numpy(f0.numberOfPixelHits)) == 4
    assert np.median(ak.to_numpy(f0.numberOfSCTHits)) == 8
    # the lever arm: tracks without IBL/B-layer hits report a worse d0 resolution
    assert np.median(ak.to_numpy(f.d0Uncertainty)) > 2 * np.median(ak.to_numpy(f0.d0Uncertainty))


def test_acceptance_pt_and_eta(quiet):
    assert len(_radial_sample(0.0, pt=0.3, params=quiet)) == 0
    assert len(_radial_sample(0.0, eta=2.7, params=quiet)) == 0
    central = len(_radial_sample(0.0, eta=0.1, n=2000, params=quiet))
    forward = len(_radial_sample(0.0, eta=2.4, n=2000, params=quiet))
    soft = len(_radial_sample(0.0, pt=0.6, n=2000, params=quiet))
    assert forward < central - 100
    assert soft < central - 40


def test_holes_come_from_missed_layers(params):
    p = ideal_modules(params).with_updates(hit_efficiency=dict(ibl=1.0, pixel=0.5, sct=1.0),
                            fakes=dict(base_rate=0.0, density_rate=0.0, occupancy_rate=0.0))
    f = _radial_sample(0.0, n=2000, params=p)
    holes = ak.to_numpy(f.numberOfPixelHoles)
    assert holes.mean() > 0.3
    assert np.all(ak.to_numpy(f.numberOfSCTHoles) == 0)
    assert np.all(ak.to_numpy(f.numberOfPixelHits) + holes <= 8)  # 4 layers, <= 2 modules each


def test_module_overlaps_give_second_hits(quiet):
    """A track in the φ-overlap band of two modules leaves two hits on the layer, at the configured rate."""
    n = 4000
    eta = np.random.default_rng(3).uniform(-0.5, 0.5, n)
    phi = np.random.default_rng(4).uniform(-np.pi, np.pi, n)
    ev = {**kinematics(np.full(n, 50.0), eta, phi)}
    p = ideal_modules(quiet, overlap=0.2).with_updates(hit_efficiency=dict(ibl=1.0, pixel=1.0, sct=1.0))
    f = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(5), p))
    ibl = ak.to_numpy(f.numberOfInnermostPixelLayerHits)
    assert set(np.unique(ibl)) == {1, 2}
    assert np.mean(ibl == 2) == pytest.approx(0.2, abs=0.03)
    npix = ak.to_numpy(f.numberOfPixelHits)
    assert npix.mean() == pytest.approx(4 * 1.2, abs=0.1)
    assert ak.to_numpy(f.numberOfSCTHits).mean() == pytest.approx(8 * 1.2, abs=0.15)
    assert np.all(ak.to_numpy(f.numberOfPixelHoles) == 0)
    # without overlaps: exactly one module per layer
    f0 = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(5),
                                    p.with_updates(**{k: v for k, v in ideal_modules(p).__dict__.items()
                                                      if k in ("barrel_layers", "end_cap_disks")})))
    assert np.all(ak.to_numpy(f0.numberOfPixelHits) == 4)


def test_dead_module_placed_by_hand_makes_holes(quiet):
    """Tracks aimed at a hand-placed dead B-layer module lose that hit and get a pixel hole."""
    p = quiet.with_updates(hit_efficiency=dict(ibl=1.0, pixel=1.0, sct=1.0))
    dead = ideal_modules(p, dead_modules=("BLayer/5/6",))
    phi_c, z_c = module_center(dead, "BLayer", 5, 6)
    r = dead.barrel_layers[1].radius
    n = 300
    rng = np.random.default_rng(8)
    # straight (200 GeV) tracks from the origin through the module's central region
    phi = phi_c + rng.uniform(-0.3, 0.3, n) * 2 * np.pi / 22
    z = z_c + rng.uniform(-0.3, 0.3, n) * 2 * 400.5 / 13
    eta = np.arcsinh(z / r)
    # one track per event: no merged clusters between them
    ev = [{**kinematics([200.0], [e], [f])} for e, f in zip(eta, phi, strict=True)]
    live = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(9), p))
    hit = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(9), dead))
    assert len(live) == len(hit) > 0.8 * n  # the same efficiency draws: the same tracks
    assert np.all(ak.to_numpy(live.numberOfNextToInnermostPixelLayerHits) == 1)
    assert np.all(ak.to_numpy(live.numberOfPixelHoles) == 0)
    assert np.all(ak.to_numpy(hit.numberOfNextToInnermostPixelLayerHits) == 0)
    assert np.all(ak.to_numpy(hit.numberOfPixelHoles) == 1)  # between the IBL and pixel-layer-1 hits
    np.testing.assert_array_equal(ak.to_numpy(hit.numberOfPixelHits), ak.to_numpy(live.numberOfPixelHits) - 1)
    # tracks elsewhere are untouched
    ev2 = [{**kinematics([200.0], [e], [f + np.pi / 2])} for e, f in zip(eta, phi, strict=True)]
    other = ak.flatten(simulate_tracks(make_particles(ev2), np.random.default_rng(9), dead))
    assert np.all(ak.to_numpy(other.numberOfNextToInnermostPixelLayerHits) == 1)


def test_dead_module_fraction(quiet):
    """A dead-module fraction f kills ~f of the modules; tracks crossing one lose that hit."""
    from lhcml.sim.hit_patterns import surface_geometry

    p = ideal_modules(quiet, dead_fraction_pixel=0.25).with_updates(hit_efficiency=dict(ibl=1.0, pixel=1.0, sct=1.0))
    g = surface_geometry(p)
    k = 1  # B-layer: 22 staves x 13 modules
    dead = g.dead[g.module_offset[k]:g.module_offset[k + 1]].reshape(22, 13)
    assert dead.mean() == pytest.approx(0.25, abs=0.08)
    assert g.dead[:g.module_offset[1]].sum() == 0  # the IBL has its own fraction (0 here)
    rng = np.random.default_rng(10)
    n = 3000
    eta, phi = rng.uniform(-2.0, 2.0, n), rng.uniform(-np.pi, np.pi, n)
    ev = [{**kinematics([200.0], [e], [f])} for e, f in zip(eta, phi, strict=True)]
    f = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(11), p))
    # the module each (straight, 200 GeV) track crosses on the B-layer
    r = p.barrel_layers[k].radius
    i_phi = ((ak.to_numpy(f.truth_phi) + np.pi) / (2 * np.pi) * 22).astype(int) % 22
    i_z = ((r * np.sinh(ak.to_numpy(f.eta)) + 400.5) / 801.0 * 13).astype(int)
    expected_dead = dead[i_phi, i_z]
    assert 0.1 < expected_dead.mean() < 0.5
    miss = ak.to_numpy(f.numberOfNextToInnermostPixelLayerHits) == 0
    assert np.mean(miss == expected_dead) > 0.98  # only tracks at module edges may differ
    assert np.all(ak.to_numpy(f.numberOfInnermostPixelLayerHits) == 1)


# ------------------------------------------------------------------------------------------
# shared and split hits
# ------------------------------------------------------------------------------------------


def test_shared_hits_for_collinear_tracks_only(quiet):
    p = quiet.with_updates(shared_hits=dict(split_probability=0.0, lost_probability=0.0))
    n = 200
    phi = np.linspace(-3, 3, n)
    events = []
    for ph in phi:
        # two tracks 0.3 mrad apart (collinear, a dense jet core) and one isolated track
        events.append({**kinematics([60.0, 61.0, 60.0], [0.5, 0.5002, 0.5], [ph, ph + 3e-4, ph + 0.8])})
    f = simulate_tracks(make_particles(events), np.random.default_rng(2), p)
    pairs = f[:, :2]
    iso = f[:, 2:]
    assert ak.mean(ak.flatten(pairs.numberOfPixelSharedHits) >= 3) > 0.9
    assert ak.mean(ak.flatten(pairs.numberOfInnermostPixelLayerSharedHits)) > 0.9
    assert ak.sum(iso.numberOfPixelSharedHits) == 0
    # with the NN clustering splitting every merged cluster: split hits, not shared hits
    p2 = p.with_updates(shared_hits=dict(split_probability=1.0))
    g = simulate_tracks(make_particles(events), np.random.default_rng(2), p2)
    assert ak.sum(g.numberOfPixelSharedHits) == 0
    assert ak.mean(ak.flatten(g[:, :2].numberOfPixelSplitHits) >= 3) > 0.9
    # a lost-track probability of 1 removes tracks with >= 2 shared modules
    p3 = p.with_updates(shared_hits=dict(split_probability=0.0, lost_probability=1.0))
    h = simulate_tracks(make_particles(events), np.random.default_rng(2), p3)
    assert ak.mean(ak.num(h)) < 1.6


# ------------------------------------------------------------------------------------------
# fakes, secondaries, leptons, determinism
# ------------------------------------------------------------------------------------------


def test_fakes_are_labelled(params):
    p = params.with_updates(fakes=dict(base_rate=0.2, density_rate=0.0, occupancy_rate=0.0))
    rng = np.random.default_rng(1)
    ev = [{**kinematics(rng.uniform(1, 10, 100), rng.uniform(-2, 2, 100), rng.uniform(-3, 3, 100))}
          for _ in range(20)]
    f = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(3), p))
    fake = ak.to_numpy(f.origin) == TRUTH_ORIGIN["fake"]
    assert 0.1 < fake.mean() < 0.3
    assert np.all(ak.to_numpy(f.truthPdgId)[fake] == 0)
    assert np.all(ak.to_numpy(f.particle_index)[fake] == -1)
    assert np.all(ak.to_numpy(f.vertex_index)[fake] == -1)
    # broad impact parameters compared to real tracks
    d0 = np.abs(ak.to_numpy(f.d0))
    assert np.median(d0[fake]) > 5 * np.median(d0[~fake])
    n_si = ak.to_numpy(f.numberOfPixelHits + f.numberOfSCTHits)
    assert n_si[fake].min() >= 7


def test_fake_rate_grows_with_density(params):
    rng = np.random.default_rng(4)
    out = []
    for n, n_ev in ((50, 400), (1000, 20)):
        ev = [{**kinematics(rng.uniform(1, 10, n), rng.uniform(-2, 2, n), rng.uniform(-3, 3, n))}
              for _ in range(n_ev)]
        f = ak.flatten(simulate_tracks(make_particles(ev), np.random.default_rng(5), params))
        out.append(np.mean(ak.to_numpy(f.origin) == TRUTH_ORIGIN["fake"]))
    assert out[1] > 1.5 * out[0]


def test_fakes_more_frequent_in_dense_regions(params):
    """In one event, a collimated bunch of tracks seeds more fakes per track than isolated tracks."""
    p = params.with_updates(fakes=dict(base_rate=0.01, density_rate=0.02, occupancy_rate=0.0))
    rng = np.random.default_rng(12)
    events = []
    for _ in range(60):
        # 60 tracks within ΔR ~ 0.03 at (η, φ) = (0.5, 1) and 60 isolated tracks spread over φ < 0
        dense = kinematics(rng.uniform(2, 20, 60), 0.5 + 0.02 * rng.standard_normal(60),
                           1.0 + 0.02 * rng.standard_normal(60))
        iso = kinematics(rng.uniform(2, 20, 60), rng.uniform(-2, 2, 60), np.linspace(-3.0, -0.3, 60))
        events.append({k: np.concatenate([dense[k], iso[k]]) for k in dense})
    f = ak.flatten(simulate_tracks(make_particles(events), np.random.default_rng(13), p))
    fake = ak.to_numpy(f.origin) == TRUTH_ORIGIN["fake"]
    near = np.hypot(ak.to_numpy(f.eta) - 0.5, ak.to_numpy(f.phi) - 1.0) < 0.3
    n_fake_dense, n_fake_iso = np.sum(fake & near), np.sum(fake & ~near & (ak.to_numpy(f.phi) < 0))
    n_real_dense, n_real_iso = np.sum(~fake & near), np.sum(~fake & ~near)
    assert n_fake_dense / n_real_dense > 5 * max(n_fake_iso, 1) / n_real_iso


def test_fake_hit_patterns_come_from_the_geometry(params):
    """Fake hit patterns follow from their helices: no random pixel hits, no fakes; the barrel
    fakes' hit counts respect the layers they cross."""
    rng = np.random.default_rng(14)
    ev = [{**kinematics(rng.uniform(1, 10, 200), rng.uniform(-1, 1, 200), rng.uniform(-3, 3, 200))}
          for _ in range(10)]
    parts = make_particles(ev)
    p = params.with_updates(fakes=dict(base_rate=0.5, density_rate=0.0, occupancy_rate=0.0))
    f = ak.flatten(simulate_tracks(parts, np.random.default_rng(15), p))
    fake = ak.to_numpy(f.origin) == TRUTH_ORIGIN["fake"]
    assert fake.sum() > 200
    npix = ak.to_numpy(f.numberOfPixelHits)[fake]
    nsct = ak.to_numpy(f.numberOfSCTHits)[fake]
    assert npix.min() >= 1 and (npix + nsct).min() >= 7
    assert len(np.unique(npix)) >= 3  # not one drawn pattern
    assert np.mean(ak.to_numpy(f.numberOfPixelHoles)[fake] + ak.to_numpy(f.numberOfSCTHoles)[fake] > 0) > 0.2
    none = params.with_updates(fakes=dict(base_rate=0.5, density_rate=0.0, occupancy_rate=0.0, hit_probability_pixel=0.0))
    g = ak.flatten(simulate_tracks(parts, np.random.default_rng(15), none))
    assert np.sum(ak.to_numpy(g.origin) == TRUTH_ORIGIN["fake"]) == 0


def test_conversions_make_secondary_electrons(quiet):
    p = quiet.with_updates(material=dict(radiation_lengths=[0.0, 0.0, 1.0, 0.0, 0.0]))
    n = 500
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    ev = {**kinematics(np.full(n, 20.0), 0.0, phi), "pid": np.full(n, 22), "charge": np.zeros(n),
          "m": np.zeros(n)}
    f = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(0), p))
    assert len(f) > 100
    assert np.all(ak.to_numpy(f.origin) == TRUTH_ORIGIN["otherSecondary"])
    assert np.all(ak.to_numpy(f.truthParentPdgId) == 22)
    assert np.all(np.abs(ak.to_numpy(f.truthPdgId)) == 11)
    np.testing.assert_allclose(ak.to_numpy(f.truthProductionRadius), 50.5, rtol=1e-6)
    assert np.all(ak.to_numpy(f.numberOfInnermostPixelLayerHits) == 0)
    assert np.all(ak.to_numpy(f.particle_index) == -1)
    # e- has pdg +11 and negative charge
    assert np.all(np.sign(ak.to_numpy(f.truthPdgId)) == -ak.to_numpy(f.charge))
    # conversion electrons are mostly not identified as electrons (conversion veto)
    lep = ak.to_numpy(f.leptonID) != 0
    hard = ak.to_numpy(f.truth_pt) > 6
    assert np.mean(lep[hard]) == pytest.approx(p.lepton_id.conversion_electron_efficiency, abs=0.06)
    # without material: no tracks at all from photons
    assert len(ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(0), quiet))) == 0


def test_hadronic_interactions_lose_primary_and_make_secondaries(quiet):
    p = quiet.with_updates(material=dict(interaction_lengths=[0.0, 0.0, 0.0, 5.0, 0.0]))
    n = 500
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    ev = {**kinematics(np.full(n, 20.0), 0.0, phi), "charge": np.ones(n)}
    f = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(0), p))
    origin = ak.to_numpy(f.origin)
    assert np.sum(origin == TRUTH_ORIGIN["primary"]) == 0  # every pion interacted at r = 88.5 mm
    sec = origin == TRUTH_ORIGIN["otherSecondary"]
    assert sec.sum() > 100
    assert np.all(ak.to_numpy(f.truthParentPdgId)[sec] == 211)
    np.testing.assert_allclose(ak.to_numpy(f.truthProductionRadius)[sec], 88.5, rtol=1e-6)
    assert np.all(ak.to_numpy(f.vertex_index)[sec] >= 1_000_000)


def test_lepton_id(quiet):
    n = 2000
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    q = np.where(np.arange(n) % 2 == 0, 1, -1)
    pid = np.where(np.arange(n) % 4 < 2, -13 * q, -11 * q)  # mu-: 13 with charge -1
    ev = {**kinematics(np.full(n, 20.0), 0.3, phi), "charge": q, "pid": pid}
    f = ak.flatten(simulate_tracks(make_particles([ev]), np.random.default_rng(0), quiet))
    lep = ak.to_numpy(f.leptonID)
    apid = np.abs(ak.to_numpy(f.truthPdgId))
    assert np.mean(np.abs(lep[apid == 13]) == 13) == pytest.approx(quiet.lepton_id.muon_efficiency, abs=0.03)
    assert np.mean(np.abs(lep[apid == 11]) == 11) == pytest.approx(quiet.lepton_id.electron_efficiency, abs=0.04)
    tagged = lep != 0
    assert np.all(np.sign(lep[tagged]) == ak.to_numpy(f.charge)[tagged])


def test_same_seed_same_output_and_fields(params):
    rng = np.random.default_rng(9)
    ev = [{**kinematics(rng.uniform(0.5, 50, 120), rng.uniform(-2.6, 2.6, 120), rng.uniform(-3, 3, 120)),
           "vx": rng.normal(0, 3, 120), "vy": rng.normal(0, 3, 120), "charge": rng.choice([-1, 1], 120)}
          for _ in range(30)]
    parts = make_particles(ev)
    a = simulate_tracks(parts, np.random.default_rng(42), params)
    b = simulate_tracks(parts, np.random.default_rng(42), params)
    c = simulate_tracks(parts, np.random.default_rng(43), params)
    assert list(a.fields) == list(TRACK_OUTPUT_FIELDS)
    assert len(a) == 30
    for k in a.fields:
        assert ak.all(ak.flatten(a[k]) == ak.flatten(b[k]))
    assert not (ak.all(ak.num(a) == ak.num(c)) and ak.all(ak.flatten(a.d0) == ak.flatten(c.d0)))


def test_empty_events_and_missing_fields(params):
    parts = make_particles([{**kinematics([5.0], [0.0], [0.0])}])
    empty = parts[:0]
    out = simulate_tracks(empty, np.random.default_rng(0), params)
    assert len(out) == 0
    with pytest.raises(SchemaError, match="vertex_index"):
        simulate_tracks(ak.without_field(parts, "vertex_index"), np.random.default_rng(0), params)


# ------------------------------------------------------------------------------------------
# parameter file
# ------------------------------------------------------------------------------------------


def test_parameter_file_errors(tmp_path):
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("lhcml.sim").joinpath("detector_params.yaml").read_text())
    raw["resolution"]["d0_aa"] = raw["resolution"].pop("d0_a")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"unknown key 'resolution.d0_aa'.*did you mean 'd0_a'"):
        load_detector_params(bad)
    raw["resolution"]["d0_a"] = raw["resolution"].pop("d0_aa")
    raw["efficiency"]["eta_values"] = raw["efficiency"]["eta_values"][:-1]
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="same length"):
        load_detector_params(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_detector_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="did you mean 'material'"):
        default_detector_params().with_updates(tails=dict(materal=dict(q_transfer=0.1)))
    with pytest.raises(ConfigError, match="did you mean 'q_transfer'"):
        default_detector_params().with_updates(tails=dict(material=dict(q_transfr=0.1)))
    raw["efficiency"]["eta_values"] = raw["efficiency"]["eta_values"] + [0.7]
    raw["modules"]["dead_modules"] = ["IBL/99/0"]
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="dead_modules entry 'IBL/99/0'"):
        load_detector_params(bad)
