"""Pythia 8 event generation into the particle table (docs/simulation.md).

Events come out of Pythia with ``Pythia.nextBatch(n)`` (Awkward arrays), never through a
per-particle Python loop; truth ancestry (origin labels, heavy-flavour ancestors, vertex ids)
is computed by the numba kernels of :mod:`lhcml.sim.truth_ancestry` on the flattened record.

The particle table
------------------
:meth:`PythiaGenerator.generate` returns one list of particles per event with the fields of
:data:`PARTICLE_FIELDS` (GeV, mm, mm/c). All particles of the Pythia event record are kept
(intermediate partons and hadrons included, ``final`` marks the stable final state), so that
indices stored in ``hf_hadron`` point into the same list. Vertices are in the detector frame:
the hard-scatter primary vertex sits at the event's beam-spot position
(:mod:`lhcml.sim.beam_spot`).

``origin`` and ``vertex_index``: see :mod:`lhcml.sim.truth_ancestry`. ``otherSecondary`` is set
by the detector decays (:mod:`lhcml.sim.decays`), ``pileup`` by the overlay
(:mod:`lhcml.sim.pileup`).

Related modules (split out of this one; the names are re-exported here so that
``from lhcml.sim.generator import ...`` keeps working): :mod:`lhcml.sim.flat_table` (flat
tables and Awkward round trips), :mod:`lhcml.sim.truth_ancestry` (ancestry kernels),
:mod:`lhcml.sim.beam_spot` (luminous region).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.beam_spot import BEAM_SPOT_SIGMA_XY, BEAM_SPOT_SIGMA_Z, beam_spot_sigmas
from lhcml.sim.flat_table import (
    FlatTable,
    _leaf,
    _list_layout,
    event_ids,
    insert_per_event,
    offsets_of,
    segment_max,
    to_awkward,
    to_flat,
)
from lhcml.sim.processes import Process, get_process
from lhcml.sim.truth_ancestry import (
    ORIGIN_FROM_B,
    ORIGIN_FROM_BC,
    ORIGIN_FROM_C,
    ORIGIN_FROM_TAU,
    ORIGIN_PRIMARY,
    VERTEX_MERGE_DISTANCE,
    _ancestry,
    _resonances,
    _weak_hf,
    assign_vertices,
    hadron_flavour,
)

__all__ = [
    "BEAM_SPOT_SIGMA_XY",
    "BEAM_SPOT_SIGMA_Z",
    "ORIGIN_FROM_B",
    "ORIGIN_FROM_BC",
    "ORIGIN_FROM_C",
    "ORIGIN_FROM_TAU",
    "ORIGIN_PRIMARY",
    "PARTICLE_FIELDS",
    "VERTEX_MERGE_DISTANCE",
    "FlatTable",
    "GeneratedEvents",
    "PythiaGenerator",
    "assign_vertices",
    "beam_spot_sigmas",
    "event_ids",
    "hadron_flavour",
    "insert_per_event",
    "offsets_of",
    "segment_max",
    "to_awkward",
    "to_flat",
]

#: fields of the particle table and their numpy dtypes
PARTICLE_FIELDS: dict[str, str] = {
    "pid": "i4",
    "charge": "i1",
    "px": "f8",
    "py": "f8",
    "pz": "f8",
    "e": "f8",
    "m": "f8",
    "vx": "f8",
    "vy": "f8",
    "vz": "f8",
    "t": "f8",
    "status": "i4",
    "final": "?",
    "parent_pid": "i4",
    "origin": "i1",
    "hf_hadron": "i4",
    "vertex_index": "i4",
    "is_pileup": "?",
}


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


class GeneratedEvents:
    """One batch of generated events.

    Attributes
    ----------
    particles
        The particle table (fields :data:`PARTICLE_FIELDS`), one list per event.
    hadrons
        Per event: weakly decaying b/c hadrons and last-copy τ leptons with fields ``index``
        (in the particle list), ``pid``, ``flavour`` (5, 4, 15), ``px, py, pz, e, m`` (GeV),
        ``pt, eta, phi``, production vertex ``vx, vy, vz`` and decay vertex ``dx, dy, dz``
        (mm, detector frame), ``lxy`` (transverse distance of the decay vertex from the primary
        vertex, mm), ``from_b`` (c hadrons from b-hadron decays).
    partons
        Per event: quarks (|pid| 1-5) and gluons from the hard process and parton showers
        (``pid, px, py, pz, e``), for ``PartonTruthLabelID``.
    resonances
        Per event: last copies of t, W, Z, H (``pid, px, py, pz, e, m``) and the directions of up
        to three decay quarks (``q_eta``, ``q_phi`` with NaN for missing ones, ``n_quarks``).
    weights
        Pythia event weights (``info.weight()``), shape ``(n_events,)``.
    primary_vertex
        Hard-scatter vertex positions ``(n_events, 3)`` in mm (the beam-spot draw).

    The tables are stored as :class:`FlatTable` (what the simulation chain uses, see
    :meth:`flat`) and turned into Awkward arrays on first access.
    """

    def __init__(
        self,
        particles: ak.Array | FlatTable,
        hadrons: ak.Array | FlatTable,
        partons: ak.Array | FlatTable,
        resonances: ak.Array | FlatTable,
        weights: np.ndarray,
        primary_vertex: np.ndarray,
    ) -> None:
        self._store: dict[str, ak.Array | FlatTable] = {
            "particles": particles, "hadrons": hadrons, "partons": partons, "resonances": resonances
        }
        self._ak: dict[str, ak.Array] = {}
        self.weights = weights
        self.primary_vertex = primary_vertex

    def __len__(self) -> int:
        return len(self.weights)

    def flat(self, name: str) -> FlatTable:
        """One of the tables (``particles``, ``hadrons``, ``partons``, ``resonances``) as flat columns."""
        v = self._store[name]
        if not isinstance(v, FlatTable):
            v = self._store[name] = FlatTable.from_awkward(v)
        return v

    def _awkward(self, name: str) -> ak.Array:
        if name not in self._ak:
            v = self._store[name]
            self._ak[name] = v.to_awkward() if isinstance(v, FlatTable) else v
        return self._ak[name]

    @property
    def particles(self) -> ak.Array:
        return self._awkward("particles")

    @property
    def hadrons(self) -> ak.Array:
        return self._awkward("hadrons")

    @property
    def partons(self) -> ak.Array:
        return self._awkward("partons")

    @property
    def resonances(self) -> ak.Array:
        return self._awkward("resonances")


def _record_leaves(rec: Any, names: tuple[str, ...]) -> list[np.ndarray] | None:
    out = []
    for n in names:
        leaf = _leaf(rec.content(n)) if n in rec.fields else None
        if leaf is None:
            return None
        out.append(leaf)
    return out


def _batch_columns(batch: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
    """Flat particle columns, counts and event weights read straight from the buffers of a
    ``Pythia.nextBatch`` layout; ``None`` for any other layout (then :func:`_batch_columns_ak`)."""
    layout = ak.to_layout(batch)
    if not isinstance(layout, ak.contents.RecordArray) or not {"prt", "info"} <= set(layout.fields):
        return None
    direct = _list_layout(layout.content("prt"))
    info = layout.content("info")
    if direct is None or not isinstance(info, ak.contents.RecordArray) or "weights" not in info.fields:
        return None
    offs, rec = direct
    a, b = offs[0], offs[-1]
    plain = _record_leaves(rec, ("id", "status", "mother1", "mother2", "daughter1", "daughter2", "m", "tau"))
    if plain is None or "p" not in rec.fields or "vProd" not in rec.fields:
        return None
    p = rec.content("p")
    vprod = rec.content("vProd")
    if not isinstance(p, ak.contents.RecordArray) or not isinstance(vprod, ak.contents.IndexedOptionArray):
        return None
    mom = _record_leaves(p, ("px", "py", "pz", "e"))
    vrec = vprod.content
    vtx = _record_leaves(vrec, ("px", "py", "pz", "e")) if isinstance(vrec, ak.contents.RecordArray) else None
    wl = info.content("weights")
    if mom is None or vtx is None or not isinstance(wl, ak.contents.ListOffsetArray):
        return None
    wdata = _leaf(wl.content)
    if wdata is None:
        return None
    cols = dict(zip(("id", "status", "mother1", "mother2", "daughter1", "daughter2", "m", "tau"),
                    (x[a:b] for x in plain), strict=True))
    cols.update(zip(("px", "py", "pz", "e"), (x[a:b] for x in mom), strict=True))
    vidx = np.asarray(vprod.index.data)[a:b].astype(np.int64)
    have = vidx >= 0
    safe = np.where(have, vidx, 0)
    for name, leaf in zip(("vx", "vy", "vz", "t"), vtx, strict=True):
        cols[name] = np.where(have, leaf[safe] if len(leaf) else 0.0, 0.0).astype(np.float64)
    woff = np.asarray(wl.offsets.data).astype(np.int64)
    n_ev = len(offs) - 1
    nw = np.diff(woff)[:n_ev]
    weights = np.ones(n_ev, dtype=np.float64)
    weights[nw > 0] = wdata[woff[:-1][:n_ev][nw > 0]]
    return cols, np.diff(offs), weights


def _batch_columns_ak(batch: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """As :func:`_batch_columns` through Awkward operations (any layout)."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    flat = ak.flatten(prt, axis=1)
    cols = {k: ak.to_numpy(flat[k]) for k in ("id", "status", "mother1", "mother2", "daughter1", "daughter2",
                                             "m", "tau")}
    p = flat.p
    for k in ("px", "py", "pz", "e"):
        cols[k] = ak.to_numpy(p[k])
    vprod = flat.vProd
    for name, k in (("vx", "px"), ("vy", "py"), ("vz", "pz"), ("t", "e")):
        cols[name] = ak.to_numpy(ak.fill_none(vprod[k], 0.0)).astype(np.float64)
    weights = ak.to_numpy(ak.fill_none(ak.firsts(batch.info.weights), 1.0)).astype(np.float64)
    return cols, counts, weights


class PythiaGenerator:
    """Pythia 8 generator of one registered process.

    The constructor is pure (no Pythia object is built); :meth:`init` starts Pythia and
    :meth:`generate` produces events. Same ``(process, seed)`` → same events.

    Parameters
    ----------
    process
        A registered process name or a :class:`~lhcml.sim.processes.Process`.
    seed
        Pythia random seed, ``0 <= seed < 900000000``; it also seeds the beam-spot draws.
    extra_settings
        Additional Pythia settings (applied last).
    """

    def __init__(self, process: str | Process, seed: int, extra_settings: tuple[str, ...] = ()) -> None:
        self.process = get_process(process) if isinstance(process, str) else process
        self.settings = self.process.pythia_settings(seed) + tuple(extra_settings)
        self.seed = int(seed)
        self._pythia: Any = None
        self._charge_table: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int32), np.zeros(0, np.int8))
        self._rng = np.random.default_rng([self.seed, 0x5EED])

    def init(self) -> PythiaGenerator:
        """Build and initialise Pythia (idempotent); returns ``self``."""
        if self._pythia is not None:
            return self
        try:
            import pythia8mc
        except ImportError as exc:  # pragma: no cover - environment dependent
            raise ImportError(
                "the simulation needs Pythia 8: pip install 'lhcml[sim]' (pythia8mc)"
            ) from exc
        pythia = pythia8mc.Pythia("", False)
        for line in self.settings:
            if not pythia.readString(line):
                raise ConfigError(f"Pythia rejected the setting '{line}' of process '{self.process.name}'")
        if not pythia.init():
            raise ConfigError(f"Pythia failed to initialise process '{self.process.name}'")
        self._pythia = pythia
        return self

    # -- helpers ------------------------------------------------------------------------------
    def _charges(self, pid: np.ndarray) -> np.ndarray:
        # lookup in a sorted table of the pdg ids seen so far (Pythia is asked once per new id)
        keys, vals = self._charge_table
        pos = np.minimum(np.searchsorted(keys, pid), max(len(keys) - 1, 0))
        known = (keys[pos] == pid) if len(keys) else np.zeros(len(pid), dtype=bool)
        if not known.all():
            pdata = self._pythia.particleData
            new = np.unique(pid[~known])
            newv = np.array([int(round(pdata.charge(p))) if p != 0 else 0 for p in new.tolist()], dtype=np.int8)
            keys = np.concatenate([keys, new.astype(np.int32)])
            vals = np.concatenate([vals, newv])
            order = np.argsort(keys, kind="stable")
            keys, vals = keys[order], vals[order]
            self._charge_table = (keys, vals)
            pos = np.searchsorted(keys, pid)
        return vals[pos]

    def generate_raw(self, n_events: int) -> ak.Array:
        """``n_events`` events straight from ``Pythia.nextBatch`` (failed events skipped)."""
        self.init()
        batch = self._pythia.nextBatch(int(n_events))
        # nextBatch skips failed events: top up until n_events
        while len(batch) < n_events:
            more = self._pythia.nextBatch(int(n_events - len(batch)))
            batch = ak.concatenate([batch, more]) if len(more) else batch
        return batch

    def generate(self, n_events: int) -> GeneratedEvents:
        """Generate ``n_events`` events and build the particle table and truth records.

        Parameters
        ----------
        n_events
            Number of events (positive).

        Returns
        -------
        GeneratedEvents
        """
        if n_events <= 0:
            raise ValueError(f"n_events must be positive, got {n_events}")
        batch = self.generate_raw(n_events)
        return self._build(batch)

    def _build(self, batch: ak.Array) -> GeneratedEvents:
        raw = _batch_columns(batch)
        cols, counts, weights = raw if raw is not None else _batch_columns_ak(batch)
        offsets = offsets_of(counts)
        pid = cols["id"].astype(np.int32)
        status = cols["status"].astype(np.int32)
        mother1 = cols["mother1"].astype(np.int32)
        mother2 = cols["mother2"].astype(np.int32)
        daughter1 = cols["daughter1"].astype(np.int32)
        daughter2 = cols["daughter2"].astype(np.int32)
        px, py, pz, e, m = cols["px"], cols["py"], cols["pz"], cols["e"], cols["m"]
        vx, vy, vz, t = cols["vx"], cols["vy"], cols["vz"], cols["t"]
        tau = cols["tau"]

        flav = hadron_flavour(pid)
        weak_b, weak_c, last_tau = _weak_hf(offsets, pid, mother1, mother2, flav)
        origin, hf, parent_pid, c_from_b = _ancestry(offsets, pid, status, mother1, weak_b, weak_c, last_tau)
        n_ev = len(counts)
        vertex_index = assign_vertices(offsets, vx, vy, vz, VERTEX_MERGE_DISTANCE, np.ones(n_ev, dtype=np.int64))

        # beam spot: shift every vertex of the event
        sxy, sz = beam_spot_sigmas()
        pv = np.column_stack(
            [self._rng.normal(0, sxy, n_ev), self._rng.normal(0, sxy, n_ev), self._rng.normal(0, sz, n_ev)]
        )
        evt = event_ids(counts)
        vx_d = vx + pv[evt, 0]
        vy_d = vy + pv[evt, 1]
        vz_d = vz + pv[evt, 2]

        charge = self._charges(pid)
        final = status > 0
        columns = {
            "pid": pid,
            "charge": charge,
            "px": px,
            "py": py,
            "pz": pz,
            "e": e,
            "m": m,
            "vx": vx_d,
            "vy": vy_d,
            "vz": vz_d,
            "t": t,
            "status": status,
            "final": final,
            "parent_pid": parent_pid,
            "origin": origin,
            "hf_hadron": hf,
            "vertex_index": vertex_index,
            "is_pileup": np.zeros(len(pid), dtype=bool),
        }
        particles = FlatTable(columns, counts)

        # weakly decaying heavy-flavour hadrons and taus
        sel = weak_b | weak_c | last_tau
        gi = np.nonzero(sel)[0]
        mm = np.where(m[gi] > 0, m[gi], 1.0)
        # decay vertex = production + c*tau * p/m (Pythia's tau is the proper lifetime in mm/c)
        dx = vx[gi] + tau[gi] * px[gi] / mm
        dy = vy[gi] + tau[gi] * py[gi] / mm
        dz = vz[gi] + tau[gi] * pz[gi] / mm
        pt = np.hypot(px[gi], py[gi])
        flavour = np.where(weak_b[gi], 5, np.where(weak_c[gi], 4, 15)).astype(np.int8)
        hcols = {
            "index": (gi - offsets[evt[gi]]).astype(np.int32),
            "pid": pid[gi],
            "flavour": flavour,
            "px": px[gi],
            "py": py[gi],
            "pz": pz[gi],
            "e": e[gi],
            "m": m[gi],
            "pt": pt,
            "eta": np.arcsinh(np.divide(pz[gi], pt, out=np.zeros_like(pt), where=pt > 0)),
            "phi": np.arctan2(py[gi], px[gi]),
            "vx": vx_d[gi],
            "vy": vy_d[gi],
            "vz": vz_d[gi],
            "dx": dx + pv[evt[gi], 0],
            "dy": dy + pv[evt[gi], 1],
            "dz": dz + pv[evt[gi], 2],
            "lxy": np.hypot(dx, dy),
            "proper_decay_length": tau[gi],
            "from_b": c_from_b[gi],
        }
        hadrons = FlatTable(hcols, np.bincount(evt[gi], minlength=n_ev))

        # partons for PartonTruthLabelID: hard process (22-29 outgoing), MPI, ISR, FSR
        ast = np.abs(status)
        apid = np.abs(pid)
        psel = ((apid <= 5) & (apid >= 1) | (apid == 21)) & (ast >= 22) & (ast <= 59)
        pi_ = np.nonzero(psel)[0]
        partons = FlatTable(
            {"pid": pid[pi_], "px": px[pi_], "py": py[pi_], "pz": pz[pi_], "e": e[pi_]},
            np.bincount(evt[pi_], minlength=n_ev),
        )

        # resonances for large-R truth labels
        ridx, rq = _resonances(offsets, pid, daughter1, daughter2)
        q_eta = np.full(rq.shape, np.nan)
        q_phi = np.full(rq.shape, np.nan)
        ok = rq >= 0
        qi = rq[ok]
        qpt = np.hypot(px[qi], py[qi])
        q_eta[ok] = np.arcsinh(pz[qi] / np.maximum(qpt, 1e-12))
        q_phi[ok] = np.arctan2(py[qi], px[qi])
        q_pid = np.zeros(rq.shape, dtype=np.int32)
        q_pid[ok] = pid[qi]
        rcols = {
            "pid": pid[ridx],
            "px": px[ridx],
            "py": py[ridx],
            "pz": pz[ridx],
            "e": e[ridx],
            "m": m[ridx],
            "n_quarks": ok.sum(axis=1).astype(np.int8),
            "q_eta": q_eta,
            "q_phi": q_phi,
            "q_pid": q_pid,
        }
        resonances = FlatTable(rcols, np.bincount(evt[ridx], minlength=n_ev))
        return GeneratedEvents(particles, hadrons, partons, resonances, weights, pv)
