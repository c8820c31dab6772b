"""Particle flow and leptons use impact parameters w.r.t. the reconstructed primary vertex.

Constructed events: muons produced at a primary vertex displaced from the beam line (0.4, −0.3,
12) mm, their tracks the exact helices (no smearing), and a vertex result holding that vertex.
W.r.t. the beam line their d0 is a few tenths of a mm (tens of σ); w.r.t. the vertex it is 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable
from lhcml.sim.helix import true_perigee
from lhcml.sim.leptons import reconstruct_leptons
from lhcml.sim.vertexing import VertexResult, impact_parameters

PV = np.array([0.4, -0.3, 12.0])
N = 300
SIGMA_D0 = 0.012  # mm, a 40 GeV track (docs/references.md §1: 11.5-14 µm)
SIGMA_Z0ST = 0.05  # mm


def _event(rng: np.random.Generator):
    pt = 40.0
    eta = rng.uniform(-1.0, 1.0, N)
    phi = rng.uniform(-np.pi, np.pi, N)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    m = 0.1056584
    q = np.where(rng.random(N) < 0.5, -1, 1).astype(np.int8)
    parts = FlatTable({
        "pid": (-13 * q).astype(np.int32), "charge": q, "px": px, "py": py, "pz": pz,
        "e": np.sqrt(px**2 + py**2 + pz**2 + m**2), "m": np.full(N, m),
        "vx": np.full(N, PV[0]), "vy": np.full(N, PV[1]), "vz": np.full(N, PV[2]), "t": np.zeros(N),
        "status": np.full(N, 23, np.int32), "final": np.ones(N, bool), "parent_pid": np.full(N, 24, np.int32),
        "origin": np.full(N, 2, np.int8), "hf_hadron": np.full(N, -1, np.int32),
        "vertex_index": np.zeros(N, np.int32), "is_pileup": np.zeros(N, bool),
    }, np.ones(N, np.int64))
    d0, z0, phi0, theta, _ = true_perigee(PV[0], PV[1], PV[2], px, py, pz, q.astype(float))
    tracks = FlatTable({
        "pt": np.full(N, pt), "eta": eta, "phi": phi0, "theta": theta, "charge": q, "d0": d0, "z0": z0,
        "d0Uncertainty": np.full(N, SIGMA_D0), "z0SinThetaUncertainty": np.full(N, SIGMA_Z0ST),
        "particle_index": np.zeros(N, np.int64), "numberOfPixelHits": np.full(N, 4, np.uint8),
        "numberOfSCTHits": np.full(N, 8, np.uint8),
    }, np.ones(N, np.int64))
    return parts, tracks


def _vertices(position) -> VertexResult:
    """One reconstructed vertex per event at ``position`` (1 µm precision; the tracks are not in its fit)."""
    pos = np.tile(np.asarray(position, float), (N, 1))
    cov = np.tile(np.eye(3) * 1e-6, (N, 1, 1))
    return VertexResult(
        position=pos, covariance=cov, information=np.linalg.inv(cov), found=np.ones(N, bool),
        n_vertices=np.ones(N, np.int64), vertex_offsets=np.arange(N + 1), vertex_position=pos.copy(),
        vertex_ntracks=np.zeros(N, np.int64), vertex_sumpt2=np.zeros(N), hs_index=np.zeros(N, np.int64),
        track_vertex=np.full(N, -1, np.int64), track_weight=np.zeros(N))


def test_constructed_event_is_displaced_from_the_beam_line():
    parts, tracks = _event(np.random.default_rng(1))
    # the beam-line d0 of a track from the displaced vertex: |d0| up to |PV_xy| = 0.5 mm
    assert np.median(np.abs(tracks["d0"]) / SIGMA_D0) > 10
    ips = impact_parameters(tracks, _vertices(PV))
    assert np.abs(ips["d0"]).max() < 1e-3 and np.abs(ips["z0SinTheta"]).max() < 1e-3


def test_leptons_track_to_vertex_association_uses_the_reconstructed_pv():
    parts, tracks = _event(np.random.default_rng(2))
    pv_z = np.full(N, PV[2])
    right = impact_parameters(tracks, _vertices(PV))
    wrong = impact_parameters(tracks, _vertices([0.0, 0.0, PV[2]]))  # the beam line at the PV's z
    _, mu_right = reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(3), track_ips=right)
    _, mu_wrong = reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(3), track_ips=wrong)
    assert len(mu_right["pt"]) > 0.9 * N and (mu_right["track"] >= 0).all()
    # w.r.t. the vertex they come from every muon passes |d0/σ| < 3 and |Δz0 sinθ| < 0.5 mm ...
    assert mu_right["passTTVA"].all()
    assert np.abs(mu_right["d0sig"]).max() < 0.2
    # ... w.r.t. the beam line (the old behaviour) most fail, and fail the overlap-removal input too
    assert mu_wrong["passTTVA"].mean() < 0.2
    assert not (mu_wrong["passOR"] & ~mu_wrong["passTTVA"]).any()
    assert mu_right["passOR"].mean() > 0.9  # Medium 96 % x FCLoose (isolated muons)
    # without impact parameters no d0 cut is made (d0sig unknown)
    _, mu_none = reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(3))
    assert mu_none["passTTVA"].all() and np.isnan(mu_none["d0sig"]).all()
    with pytest.raises(ConfigError, match="track_ips"):
        reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(3),
                            track_ips={k: v[:-1] for k, v in right.items()})


def test_pflow_charged_objects_carry_impact_parameters_wrt_the_reconstructed_pv():
    from lhcml.sim.pflow import KIND_MUON, build_pflow_flat

    parts, tracks = _event(np.random.default_rng(4))
    pv_z = np.full(N, PV[2])
    ips = impact_parameters(tracks, _vertices(PV))
    flow = build_pflow_flat(parts, tracks, pv_z, np.random.default_rng(5), mu=0.0, track_ips=ips)
    muons = flow.select(flow["kind"] == KIND_MUON)
    assert len(muons["pt"]) == N  # every muon track is a PV track (|Δz0 sinθ| < 2 mm): a charged object
    t = muons["track_index"].astype(np.int64) + tracks.offsets[muons.event]
    np.testing.assert_allclose(muons["d0"], ips["d0"][t])
    np.testing.assert_allclose(muons["z0SinTheta"], ips["z0SinTheta"][t])
    np.testing.assert_allclose(muons["d0Uncertainty"], ips["d0Uncertainty"][t])
    assert np.abs(muons["d0"]).max() < 1e-3
    # without them the objects carry the beam-line d0 (tens of σ off for this vertex)
    flow_bl = build_pflow_flat(parts, tracks, pv_z, np.random.default_rng(5), mu=0.0)
    mu_bl = flow_bl.select(flow_bl["kind"] == KIND_MUON)
    assert np.median(np.abs(mu_bl["d0"])) > 10 * SIGMA_D0
    with pytest.raises(ConfigError, match="track_ips"):
        build_pflow_flat(parts, tracks, pv_z, np.random.default_rng(5), mu=0.0,
                         track_ips={k: v[:-1] for k, v in ips.items()})
