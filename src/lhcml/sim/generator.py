"""Pythia 8 event generation into an Awkward particle table (docs/simulation.md).

Events come out of Pythia with ``Pythia.nextBatch(n)`` (Awkward arrays), never through a
per-particle Python loop; truth ancestry (origin labels, heavy-flavour ancestors, vertex ids)
is computed by numba kernels on the flattened record.

The particle table
------------------
:meth:`PythiaGenerator.generate` returns one list of particles per event with the fields of
:data:`PARTICLE_FIELDS` (GeV, mm, mm/c). All particles of the Pythia event record are kept
(intermediate partons and hadrons included, ``final`` marks the stable final state), so that
indices stored in ``hf_hadron`` point into the same list. Vertices are in the detector frame:
the hard-scatter primary vertex sits at the event's beam-spot position.

``origin`` follows ATLAS's ``ftagTruthOriginLabel`` (:data:`lhcml.data.schema.TRUTH_ORIGIN`):
a particle whose ancestry (through decays) reaches a weakly decaying b-hadron is ``fromB``,
through a c-hadron that itself comes from a b-hadron ``fromBC``, a c-hadron only ``fromC``, a
τ lepton ``fromTau``; otherwise ``primary``. ``otherSecondary`` is set by the detector decays
(:mod:`lhcml.sim.decays`), ``pileup`` by the overlay (:mod:`lhcml.sim.pileup`).

``vertex_index``: 0 = hard-scatter primary vertex; every other distinct production position
(clustered within :data:`VERTEX_MERGE_DISTANCE`) gets its own id 1, 2, ... per event.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import awkward as ak
import numba
import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.errors import ConfigError
from lhcml.sim.processes import Process, get_process

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

#: production vertices closer than this (mm) are the same truth vertex (as ATLAS truth merging)
VERTEX_MERGE_DISTANCE = 0.1

#: beam-spot defaults (mm) used when ``sim/detector_params.yaml`` has no ``beam_spot`` block:
#: Run-2/3 luminous region sigma_z ~ 35 mm, sigma_xy ~ 10 um (docs/references.md §8)
BEAM_SPOT_SIGMA_Z = 35.0
BEAM_SPOT_SIGMA_XY = 0.010

ORIGIN_PRIMARY = TRUTH_ORIGIN["primary"]
ORIGIN_FROM_B = TRUTH_ORIGIN["fromB"]
ORIGIN_FROM_BC = TRUTH_ORIGIN["fromBC"]
ORIGIN_FROM_C = TRUTH_ORIGIN["fromC"]
ORIGIN_FROM_TAU = TRUTH_ORIGIN["fromTau"]


def beam_spot_sigmas() -> tuple[float, float]:
    """``(sigma_xy, sigma_z)`` in mm of the luminous region.

    Read from the ``beam_spot`` block (``sigma_xy``, ``sigma_z``, mm) of
    ``lhcml/sim/detector_params.yaml`` when present, else :data:`BEAM_SPOT_SIGMA_XY` and
    :data:`BEAM_SPOT_SIGMA_Z`.
    """
    try:
        from lhcml.sim.detector import default_detector_params

        bs = default_detector_params().beam_spot
        return float(bs.sigma_xy), float(bs.sigma_z)
    except (ImportError, AttributeError):
        pass
    try:
        import yaml

        text = resources.files("lhcml.sim").joinpath("detector_params.yaml").read_text()
        block = (yaml.safe_load(text) or {}).get("beam_spot") or {}
        return float(block.get("sigma_xy", BEAM_SPOT_SIGMA_XY)), float(block.get("sigma_z", BEAM_SPOT_SIGMA_Z))
    except (FileNotFoundError, ModuleNotFoundError, AttributeError, TypeError, ValueError):
        return BEAM_SPOT_SIGMA_XY, BEAM_SPOT_SIGMA_Z


# --------------------------------------------------------------------------------------------
# flat <-> awkward helpers
# --------------------------------------------------------------------------------------------


def to_awkward(columns: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    """Jagged record array (one list per event) from flat columns and per-event counts.

    The layout (list offsets over a record of numpy columns) is built directly, without copies.
    """
    counts = np.asarray(counts, dtype=np.int64)
    offsets = offsets_of(counts)
    n = int(offsets[-1])
    contents = []
    for name, col in columns.items():
        col = np.asarray(col)
        if len(col) != n:
            raise ValueError(f"column '{name}' has {len(col)} rows, the counts add up to {n}")
        contents.append(ak.contents.NumpyArray(col))
    record = ak.contents.RecordArray(contents, list(columns), length=n)
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def _leaf(content: Any) -> np.ndarray | None:
    """The numpy buffer of a plain (non-option, non-indexed) awkward leaf, else ``None``."""
    if isinstance(content, ak.contents.NumpyArray) and content.data.ndim == 1:
        return np.asarray(content.data)
    return None


def _list_layout(array: Any) -> tuple[np.ndarray, Any] | None:
    """``(offsets, record content)`` of a jagged record array stored as offsets, else ``None``."""
    layout = ak.to_layout(array) if isinstance(array, ak.Array) else array
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.RecordArray):
        return np.asarray(layout.offsets.data).astype(np.int64, copy=False), layout.content
    return None


def to_flat(array: ak.Array, fields: list[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat numpy columns and per-event counts of a jagged record array.

    Plain layouts (offsets over a record of numpy leaves, as built by :func:`to_awkward`) are read
    without copies; anything else goes through ``ak.flatten``.
    """
    fields = fields or list(array.fields)
    direct = _list_layout(array)
    if direct is not None:
        offs, rec = direct
        cols = {}
        for f in fields:
            leaf = _leaf(rec.content(f)) if f in rec.fields else None
            if leaf is None:
                break
            cols[f] = leaf[offs[0] : offs[-1]]
        else:
            return cols, np.diff(offs)
    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    flat = ak.flatten(array, axis=1)
    return {f: ak.to_numpy(flat[f]) for f in fields}, counts


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Offsets (length n+1) of a jagged layout with these counts."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class FlatTable:
    """A jagged table (one list of rows per event) as flat numpy columns + per-event counts.

    The simulation chain passes these between its stages (no Awkward round trips); use
    :meth:`to_awkward` / :meth:`from_awkward` at the public boundaries.

    Parameters
    ----------
    columns
        Flat columns, all of the same length ``counts.sum()``, rows grouped by event.
    counts
        Rows per event.
    """

    __slots__ = ("columns", "counts", "_offsets", "_events")

    def __init__(self, columns: dict[str, np.ndarray], counts: np.ndarray) -> None:
        self.columns = dict(columns)
        self.counts = np.asarray(counts, dtype=np.int64)
        self._offsets: np.ndarray | None = None
        self._events: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def offsets(self) -> np.ndarray:
        """Offsets (length ``n_events + 1``) of each event's first row."""
        if self._offsets is None:
            self._offsets = offsets_of(self.counts)
        return self._offsets

    @property
    def event(self) -> np.ndarray:
        """Event index of every row."""
        if self._events is None:
            self._events = event_ids(self.counts)
        return self._events

    def select(self, mask: np.ndarray) -> FlatTable:
        """The rows where ``mask`` is true (per-event order kept)."""
        idx = np.flatnonzero(mask)
        counts = np.bincount(self.event[idx], minlength=len(self))
        return FlatTable({k: v[idx] for k, v in self.columns.items()}, counts)

    def to_awkward(self) -> ak.Array:
        """The table as a jagged Awkward record array."""
        return to_awkward(self.columns, self.counts)

    @classmethod
    def from_awkward(cls, array: ak.Array, fields: list[str] | None = None) -> FlatTable:
        """Flat table of a jagged Awkward record array (``fields``: default all)."""
        cols, counts = to_flat(array, fields)
        return cls(cols, counts)


@numba.njit(cache=True)
def _interleave(a, a_off, b, b_off, out):
    """Per event ``e``: ``a[a_off[e]:a_off[e+1]]`` then ``b[b_off[e]:b_off[e+1]]`` into ``out``."""
    pos = 0
    for ev in range(a_off.shape[0] - 1):
        n = a_off[ev + 1] - a_off[ev]
        out[pos : pos + n] = a[a_off[ev] : a_off[ev + 1]]
        pos += n
        n = b_off[ev + 1] - b_off[ev]
        out[pos : pos + n] = b[b_off[ev] : b_off[ev + 1]]
        pos += n


def insert_per_event(first: FlatTable, second: FlatTable) -> FlatTable:
    """Per event, the rows of ``first`` followed by those of ``second`` (``ak.concatenate(axis=1)``).

    Both tables need the same columns and events; the dtypes of ``first`` are kept.
    """
    total = int(first.counts.sum() + second.counts.sum())
    cols = {}
    for k, a in first.columns.items():
        out = np.empty(total, dtype=a.dtype)
        _interleave(a, first.offsets, second.columns[k].astype(a.dtype, copy=False), second.offsets, out)
        cols[k] = out
    return FlatTable(cols, first.counts + second.counts)


@numba.njit(cache=True)
def segment_max(values, offsets, empty_value):
    """Maximum of ``values`` in each segment ``offsets[i]:offsets[i+1]`` (``empty_value`` if empty)."""
    n = offsets.shape[0] - 1
    out = np.full(n, empty_value, dtype=np.int64)
    for i in range(n):
        if offsets[i + 1] > offsets[i]:
            m = values[offsets[i]]
            for j in range(offsets[i] + 1, offsets[i + 1]):
                if values[j] > m:
                    m = values[j]
            out[i] = m
    return out


def event_ids(counts: np.ndarray) -> np.ndarray:
    """For each flat entry, the index of its event."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


# --------------------------------------------------------------------------------------------
# pdg-id helpers
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _heaviest_quark(pid: int) -> int:
    """Heaviest quark flavour of a hadron pdg id; 0 for non-hadrons, -1 for quarkonia."""
    a = abs(pid) % 10000
    if a < 100:
        return 0
    q3 = (a // 10) % 10
    if q3 == 0:  # diquark
        return 0
    q2 = (a // 100) % 10
    q1 = (a // 1000) % 10
    if q1 == 0:  # meson q2 q3
        if q2 == q3:
            return -1  # quarkonium (hidden flavour)
        return q2
    return q1


@numba.njit(cache=True)
def _hadron_flavour_array(pid: np.ndarray) -> np.ndarray:
    out = np.zeros(pid.shape[0], dtype=np.int8)
    for i in range(pid.shape[0]):
        out[i] = _heaviest_quark(pid[i])
    return out


def hadron_flavour(pid: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour of each hadron (5 b, 4 c, ...; 0 non-hadron, -1 quarkonium)."""
    return _hadron_flavour_array(np.ascontiguousarray(pid, dtype=np.int32))


# --------------------------------------------------------------------------------------------
# ancestry kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _weak_hf(offsets, pid, mother1, mother2, flav):
    """Flags of weakly decaying b/c hadrons and last-copy taus (no same-kind child)."""
    n = pid.shape[0]
    has_b_child = np.zeros(n, dtype=np.bool_)
    has_c_child = np.zeros(n, dtype=np.bool_)
    has_tau_child = np.zeros(n, dtype=np.bool_)
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            for m in (mother1[g], mother2[g]):
                if m <= 0:
                    continue
                gm = o + m
                if flav[g] == 5:
                    has_b_child[gm] = True
                elif flav[g] == 4:
                    has_c_child[gm] = True
                if abs(pid[g]) == 15:
                    has_tau_child[gm] = True
    weak_b = np.zeros(n, dtype=np.bool_)
    weak_c = np.zeros(n, dtype=np.bool_)
    last_tau = np.zeros(n, dtype=np.bool_)
    for g in range(n):
        weak_b[g] = flav[g] == 5 and not has_b_child[g]
        weak_c[g] = flav[g] == 4 and not has_c_child[g] and not has_b_child[g]
        last_tau[g] = abs(pid[g]) == 15 and not has_tau_child[g]
    return weak_b, weak_c, last_tau


@numba.njit(cache=True)
def _ancestry(offsets, pid, status, mother1, weak_b, weak_c, last_tau):
    """Origin label, heavy-flavour ancestor and parent pid of every particle."""
    n = pid.shape[0]
    origin = np.full(n, ORIGIN_PRIMARY, dtype=np.int8)
    hf = np.full(n, -1, dtype=np.int32)
    parent_pid = np.zeros(n, dtype=np.int32)
    c_from_b = np.zeros(n, dtype=np.bool_)
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            m = mother1[g]
            if m > 0:
                parent_pid[g] = pid[o + m]
            found_b = -1
            found_c = -1
            found_tau = False
            cur = g
            for _ in range(256):
                st = abs(status[cur])
                if st < 91 or st > 99:  # not produced in a particle decay: stop
                    break
                m = mother1[cur]
                if m <= 0:
                    break
                gm = o + m
                if weak_b[gm]:
                    found_b = m
                    break
                if weak_c[gm] and found_c < 0:
                    found_c = m
                if last_tau[gm]:
                    found_tau = True
                cur = gm
            if found_b >= 0 and found_c >= 0:
                origin[g] = ORIGIN_FROM_BC
                hf[g] = found_b
            elif found_b >= 0:
                origin[g] = ORIGIN_FROM_B
                hf[g] = found_b
            elif found_c >= 0:
                origin[g] = ORIGIN_FROM_C
                hf[g] = found_c
            elif found_tau:
                origin[g] = ORIGIN_FROM_TAU
            if weak_c[g] and found_b >= 0:
                c_from_b[g] = True
    return origin, hf, parent_pid, c_from_b


@numba.njit(cache=True)
def assign_vertices(offsets, vx, vy, vz, merge_distance, first_id):
    """Truth vertex ids per event: 0 for the origin, distinct ids for other positions.

    Positions are relative to the event's primary vertex (before the beam-spot shift).
    ``first_id[ev]`` is the first id given to a displaced vertex of event ``ev``.
    """
    n = vx.shape[0]
    out = np.zeros(n, dtype=np.int32)
    d2 = merge_distance * merge_distance
    buf = np.empty((256, 3))
    for ev in range(offsets.shape[0] - 1):
        nv = 0
        for g in range(offsets[ev], offsets[ev + 1]):
            x = vx[g]
            y = vy[g]
            z = vz[g]
            if x * x + y * y + z * z < d2:
                out[g] = 0
                continue
            found = -1
            for k in range(nv):
                dx = buf[k, 0] - x
                dy = buf[k, 1] - y
                dz = buf[k, 2] - z
                if dx * dx + dy * dy + dz * dz < d2:
                    found = k
                    break
            if found < 0:
                if nv == buf.shape[0]:
                    nb = np.empty((2 * nv, 3))
                    nb[:nv] = buf
                    buf = nb
                buf[nv, 0] = x
                buf[nv, 1] = y
                buf[nv, 2] = z
                found = nv
                nv += 1
            out[g] = first_id[ev] + found
    return out


@numba.njit(cache=True)
def _resonances(offsets, pid, daughter1, daughter2):
    """Last copies of t, W, Z, H with up to three decay quarks (global indices, -1 = none)."""
    n = pid.shape[0]
    out_idx = np.full(n, -1, dtype=np.int64)
    out_q = np.full((n, 3), -1, dtype=np.int64)
    nout = 0
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            a = abs(pid[g])
            if a != 6 and a != 23 and a != 24 and a != 25:
                continue
            d1 = daughter1[g]
            d2 = daughter2[g]
            if d1 <= 0:
                continue
            if d2 < d1:
                d2 = d1
            same = False
            for d in range(d1, d2 + 1):
                if pid[o + d] == pid[g]:
                    same = True
            if same:
                continue  # not the last copy
            nq = 0
            for d in range(d1, d2 + 1):
                gd = o + d
                ad = abs(pid[gd])
                if ad >= 1 and ad <= 5 and nq < 3:
                    out_q[nout, nq] = gd
                    nq += 1
                elif ad == 24 and a == 6:
                    # follow the W to its last copy, then take its decay quarks
                    w = gd
                    for _ in range(64):
                        e1 = daughter1[w]
                        e2 = daughter2[w]
                        if e1 <= 0:
                            break
                        if e2 < e1:
                            e2 = e1
                        nxt = -1
                        for e in range(e1, e2 + 1):
                            if pid[o + e] == pid[w]:
                                nxt = o + e
                        if nxt < 0:
                            break
                        w = nxt
                    e1 = daughter1[w]
                    e2 = daughter2[w]
                    if e2 < e1:
                        e2 = e1
                    if e1 > 0:
                        for e in range(e1, e2 + 1):
                            ae = abs(pid[o + e])
                            if ae >= 1 and ae <= 5 and nq < 3:
                                out_q[nout, nq] = o + e
                                nq += 1
            out_idx[nout] = g
            nout += 1
    return out_idx[:nout], out_q[:nout]


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
