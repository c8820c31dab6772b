"""Pileup: a pre-generated library of minimum-bias events overlaid Poisson(μ) per hard event.

:func:`build_pileup_library` runs Pythia ``minbias`` (``SoftQCD:inelastic``) and stores the
final-state particles of each event (positions relative to that event's own vertex) in a
compact HDF5 file (float32, gzip), written atomically. :meth:`PileupLibrary.overlay` draws
``N ~ Poisson(μ)`` library events per hard event (with replacement), places each at its own
vertex drawn from the beam spot (σ_z ≈ 35 mm, σ_xy ≈ 10 µm), and appends their particles to the
event with ``is_pileup = True``, origin ``pileup`` (0) and vertex ids distinct from the hard
scatter's (the ids continue after the hard event's largest id; each pileup interaction's own
vertex, then its displaced vertices).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numba
import numpy as np

from lhcml.atomic import atomic_path
from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.errors import CorruptFileError
from lhcml.sim.generator import (
    PARTICLE_FIELDS,
    FlatTable,
    beam_spot_sigmas,
    event_ids,
    offsets_of,
    segment_max,
    to_flat,
)

#: default mean number of interactions per crossing
DEFAULT_MU = 50.0

#: per-particle columns stored in the library (vertex positions relative to the event's PV)
_LIB_FIELDS: dict[str, str] = {
    "pid": "i4",
    "charge": "i1",
    "px": "f4",
    "py": "f4",
    "pz": "f4",
    "e": "f4",
    "m": "f4",
    "vx": "f4",
    "vy": "f4",
    "vz": "f4",
    "t": "f4",
    "parent_pid": "i4",
    "vertex_index": "i2",
}
_FORMAT = "lhcml-pileup-library-1"


@dataclass
class PileupLibrary:
    """Final-state particles of minimum-bias events (flat columns + per-event counts).

    Build with :func:`build_pileup_library`, read with :meth:`load`.
    """

    columns: dict[str, np.ndarray]
    counts: np.ndarray
    seed: int = 0

    def __post_init__(self) -> None:
        self.offsets = offsets_of(self.counts)
        self.n_vertices = np.zeros(len(self.counts), dtype=np.int64)
        if len(self.counts):
            ev = event_ids(self.counts)
            np.maximum.at(self.n_vertices, ev, self.columns["vertex_index"].astype(np.int64))
        self.n_vertices += 1  # the interaction vertex itself (id 0)

    def __len__(self) -> int:
        return len(self.counts)

    @classmethod
    def load(cls, path: str | Path) -> PileupLibrary:
        """Read a library written by :func:`build_pileup_library`.

        Raises
        ------
        CorruptFileError
            If the file is missing, not HDF5, or not a pileup library.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise CorruptFileError(f"pileup library '{path}' does not exist; build it with build_pileup_library()")
        try:  # not a flat file (lhcml.data.h5): the library's own layout and error messages
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != _FORMAT:
                    raise CorruptFileError(
                        f"'{path}' is not an lhcml pileup library (format attribute "
                        f"{f.attrs.get('format')!r}, expected {_FORMAT!r}); rebuild it with build_pileup_library()"
                    )
                counts = f["counts"][()].astype(np.int64)
                cols = {k: f["particles"][k][()] for k in _LIB_FIELDS}
                seed = int(f.attrs.get("seed", 0))
        except OSError as exc:
            if isinstance(exc, CorruptFileError):
                raise
            raise CorruptFileError(f"cannot read pileup library '{path}': {exc}; rebuild it") from exc
        except KeyError as exc:
            raise CorruptFileError(f"pileup library '{path}' lacks dataset {exc}; rebuild it") from exc
        if counts.sum() != len(cols["pid"]):
            raise CorruptFileError(f"pileup library '{path}' is truncated (counts do not match particles); rebuild it")
        return cls(cols, counts, seed)

    def save(self, path: str | Path) -> Path:
        """Write the library atomically (temporary file, then rename)."""
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = _FORMAT
            f.attrs["seed"] = self.seed
            f.attrs["energy_unit"] = "GeV"
            f.attrs["length_unit"] = "mm"
            f.create_dataset("counts", data=self.counts.astype(np.int32), compression="gzip")
            g = f.create_group("particles")
            for k, dt in _LIB_FIELDS.items():
                g.create_dataset(k, data=self.columns[k].astype(dt), compression="gzip", shuffle=True)
        return path

    def overlay(
        self, particles: ak.Array, mu: float, rng: np.random.Generator
    ) -> tuple[ak.Array, np.ndarray]:
        """Append Poisson(``mu``) pileup interactions to each event of ``particles``.

        Parameters
        ----------
        particles
            Hard-scatter particle table (:data:`~lhcml.sim.generator.PARTICLE_FIELDS`).
        mu
            Mean number of pileup interactions per hard event (``averageInteractionsPerCrossing``).
        rng
            Random generator (numbers of interactions, library draws, vertex positions).

        Returns
        -------
        (ak.Array, np.ndarray)
            The table with pileup particles appended after the hard-scatter ones in every event,
            and the actual number of pileup interactions per event.
        """
        if mu < 0 or not np.isfinite(mu):
            raise ValueError(f"mu must be a finite number >= 0, got {mu}")
        table = FlatTable.from_awkward(particles, list(PARTICLE_FIELDS))
        out, n_pu = self.overlay_flat(table, mu, rng)
        if out is table:
            return particles, n_pu
        return out.to_awkward(), n_pu

    def overlay_flat(self, particles: FlatTable, mu: float, rng: np.random.Generator) -> tuple[FlatTable, np.ndarray]:
        """:meth:`overlay` on a :class:`~lhcml.sim.generator.FlatTable` (same random draws, same result)."""
        n_ev = len(particles)
        if mu < 0 or not np.isfinite(mu):
            raise ValueError(f"mu must be a finite number >= 0, got {mu}")
        n_pu = rng.poisson(mu, n_ev) if mu > 0 else np.zeros(n_ev, dtype=np.int64)
        total = int(n_pu.sum())
        if total == 0 or len(self) == 0:
            if total and not len(self):
                raise ValueError("the pileup library is empty; build it with more events")
            return particles, n_pu.astype(np.int64)
        draw = rng.integers(0, len(self), total)
        sxy, sz = beam_spot_sigmas()
        vtx = np.column_stack([rng.normal(0, sxy, total), rng.normal(0, sxy, total), rng.normal(0, sz, total)])
        lens = self.counts[draw]
        starts = self.offsets[draw]
        host = np.repeat(np.arange(n_ev), n_pu)  # hard event of each interaction
        inter_off = offsets_of(n_pu)  # interactions of each hard event

        # vertex ids: continue after the hard event's largest id
        hard_max = segment_max(particles["vertex_index"], particles.offsets, 0)
        nv = self.n_vertices[draw]
        # cumulative vertex count of earlier interactions in the same event
        cum = np.cumsum(nv) - nv
        first_of_event = np.zeros(n_ev, dtype=np.int64)
        ev_start = inter_off[:-1]
        has = n_pu > 0
        first_of_event[has] = cum[ev_start[has]]
        base_id = hard_max[host] + 1 + cum - first_of_event[host]

        # per event: the hard rows, then each interaction's library rows (copied block by block)
        c = self._wide()
        h_off = particles.offsets
        per_event = particles.counts + np.bincount(host, weights=lens, minlength=n_ev).astype(np.int64)
        total = int(per_event.sum())
        cols = {}
        for k, dt in PARTICLE_FIELDS.items():
            hard = particles[k]
            out = np.empty(total, dtype=hard.dtype)
            if k in ("vx", "vy", "vz"):
                shift = vtx[:, "xyz".index(k[1])]
                _overlay_shift(hard, h_off, c[k], starts, lens, inter_off, shift, out)
            elif k == "vertex_index":
                _overlay_shift(hard, h_off, c[k], starts, lens, inter_off, base_id, out)
            elif k in c:
                _overlay_copy(hard, h_off, c[k], starts, lens, inter_off, out)
            else:
                value = {"status": 1, "final": True, "origin": TRUTH_ORIGIN["pileup"], "hf_hadron": -1,
                         "is_pileup": True}[k]
                _overlay_fill(hard, h_off, np.array(value, dtype=dt).reshape(1), lens, inter_off, out)
            cols[k] = out
        return FlatTable(cols, per_event), n_pu.astype(np.int64)

    def _wide(self) -> dict[str, np.ndarray]:
        """The library columns in the particle-table dtypes (converted once, then cached)."""
        wide = self.__dict__.get("_wide_columns")
        if wide is None:
            wide = {
                k: (v.astype(PARTICLE_FIELDS[k]) if k in ("pid", "charge", "px", "py", "pz", "e", "m", "t",
                                                          "parent_pid") else v)
                for k, v in self.columns.items()
            }
            self.__dict__["_wide_columns"] = wide
        return wide


@numba.njit(cache=True)
def _overlay_copy(hard, h_off, lib, starts, lens, inter_off, out):
    pos = 0
    for ev in range(h_off.shape[0] - 1):
        n = h_off[ev + 1] - h_off[ev]
        out[pos : pos + n] = hard[h_off[ev] : h_off[ev + 1]]
        pos += n
        for k in range(inter_off[ev], inter_off[ev + 1]):
            out[pos : pos + lens[k]] = lib[starts[k] : starts[k] + lens[k]]
            pos += lens[k]


@numba.njit(cache=True)
def _overlay_shift(hard, h_off, lib, starts, lens, inter_off, shift, out):
    pos = 0
    for ev in range(h_off.shape[0] - 1):
        n = h_off[ev + 1] - h_off[ev]
        out[pos : pos + n] = hard[h_off[ev] : h_off[ev + 1]]
        pos += n
        for k in range(inter_off[ev], inter_off[ev + 1]):
            for j in range(starts[k], starts[k] + lens[k]):
                out[pos] = shift[k] + lib[j]
                pos += 1


@numba.njit(cache=True)
def _overlay_fill(hard, h_off, value, lens, inter_off, out):
    pos = 0
    for ev in range(h_off.shape[0] - 1):
        n = h_off[ev + 1] - h_off[ev]
        out[pos : pos + n] = hard[h_off[ev] : h_off[ev + 1]]
        pos += n
        for k in range(inter_off[ev], inter_off[ev + 1]):
            for _ in range(lens[k]):
                out[pos] = value[0]
                pos += 1


def build_pileup_library(
    n_events: int, seed: int, path: str | Path | None = None, batch_size: int = 500, progress: bool = False
) -> PileupLibrary:
    """Generate ``n_events`` minimum-bias events and (optionally) save them to ``path``.

    Parameters
    ----------
    n_events
        Library size. Each hard event draws from it with replacement; a library of a few
        thousand events is enough for μ ≤ 200 in small samples (every draw also gets a fresh
        vertex position and fresh detector smearing).
    seed
        Pythia seed (``< 900000000``).
    path
        HDF5 output (atomic write); ``None`` keeps the library in memory only.
    batch_size
        Events per ``nextBatch`` call.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    PileupLibrary
    """
    from lhcml.sim.generator import PythiaGenerator

    if n_events <= 0:
        raise ValueError(f"n_events must be positive, got {n_events}")
    gen = PythiaGenerator("minbias", seed).init()
    parts_cols: list[dict[str, np.ndarray]] = []
    counts: list[np.ndarray] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_events, desc="pileup library", unit="evt")
    done = 0
    while done < n_events:
        n = min(batch_size, n_events - done)
        ev = gen.generate(n)
        p = ev.particles[ev.particles.final]
        # positions relative to the interaction's own vertex
        pv = ev.primary_vertex
        cols, cnt = to_flat(p, list(PARTICLE_FIELDS))
        evt = event_ids(cnt)
        cols["vx"] = cols["vx"] - pv[evt, 0]
        cols["vy"] = cols["vy"] - pv[evt, 1]
        cols["vz"] = cols["vz"] - pv[evt, 2]
        parts_cols.append({k: cols[k].astype(dt) for k, dt in _LIB_FIELDS.items()})
        counts.append(cnt)
        done += n
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    columns = {k: np.concatenate([c[k] for c in parts_cols]) for k in _LIB_FIELDS}
    lib = PileupLibrary(columns, np.concatenate(counts), seed)
    if path is not None:
        lib.save(path)
    return lib
