"""Hit-level simulation for tracking: Pythia + pile-up -> ACTS Fatras -> digitisation -> TrackML layout.

The chain of ``lhcml tracking simulate`` (docs/tracking.md, numbers in docs/references.md §24):

1. **Generation** (lhcml's own Pythia machinery, :class:`lhcml.sim.generator.PythiaGenerator`):
   the hard scatter of a registered process and ``N ~ Poisson(mu)`` *fresh* minimum-bias
   (``minbias``) events per bunch crossing. Every interaction has its own primary vertex drawn
   from lhcml's luminous region (:mod:`lhcml.sim.beam_spot`: σ_xy = 10 µm, σ_z = 35 mm), as
   the generator places it. Fresh minimum-bias events (rather than draws with replacement from
   :class:`lhcml.sim.pileup.PileupLibrary`) keep every pile-up track pattern distinct, which
   matters for ML training. K0S, Λ and hyperons decay in Pythia (``tau0Max`` 1 m) because
   Fatras does not decay particles. Final-state particles with pT > 100 MeV, |η| < 4 and a
   production vertex inside the tracker envelope are handed to ACTS (our choice: below 100 MeV
   a particle curls up within r < 17 cm in 2 T; the GenericDetector ends at |η| ≈ 3.5).
2. **Hand-over** through ACTS's particle CSV (``CsvParticleReader``; pyacts has no Pythia
   plugin). Particle barcodes: ``vertex_primary`` = 1 for the hard scatter, 2, 3, ... for
   the pile-up interactions; ``particle`` = running number within the interaction.
3. **ACTS Fatras** in the TrackML-like ``GenericDetector`` (Gen1) in a uniform 2 T solenoidal
   field along z: multiple scattering, ionisation and radiative energy loss, photon conversions
   (Fatras' standard electromagnetic physics list, as ``acts.examples.simulation.addFatras``
   configures it) for every particle above p = 100 MeV (Fatras' default, 0.5 GeV, would drop
   most soft pile-up particles); no hadronic interactions (ACTS's Python Fatras has none) and
   no decays.
4. **Digitisation** (``configs/tracking/digi-generic.json``, docs/tracking.md): geometric
   clustering in the pixels (volumes 7, 8, 9; 50 × 50 µm² pixels, 150 µm thick, cells written),
   Gaussian smearing in the strips with σ = pitch/√12 of the TrackML detector's short (80 µm ×
   1.2 mm, volumes 12-14) and long strips (120 µm × 10.8 mm, volumes 16-18).
5. **Noise hits** (:func:`add_noise`): Poisson per module with mean = occupancy × channels,
   uniformly placed; occupancies 10⁻⁶ per pixel and 10⁻³ per strip (the upper bounds of the
   pixel and ITk-strip requirements, docs/references.md §24), scaled by ``noise_scale``.

Outputs per event (contract of issue 14): ``OUT/trackml/event{N:09d}-{hits,cells,particles,truth}.csv``
(TrackML layout, :mod:`lhcml.data.trackml`; ``hit_id`` = ACTS measurement index + 1; truth
weights from :func:`lhcml.data.trackml.hit_weights`), ACTS's own CSV in ``OUT/acts/``
(``measurements``, ``measurement-simhit-map``, ``cells``, ``hits`` (sim hits),
``particles_simulated``, readable by ACTS's CSV readers; noise measurements included, sorted by
geometry id), lhcml HDF5 shards ``OUT/h5/events_{k:04d}.h5`` and ``OUT/manifest.json``.

Sharded and resumable: a shard is finished when its HDF5 file exists (written last, atomically);
a rerun skips finished shards and redoes the others. Deterministic: every random stream is
seeded from the run seed and the shard's first event (Pythia, ACTS) or the event number
(pile-up counts, noise), so the same command (same ``--shards``) gives identical files.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lhcml.atomic import atomic_path, atomic_write_text, prepare_output
from lhcml.data import trackml
from lhcml.errors import ConfigError

#: solenoid field along z (T), the TrackML/ACTS generic-detector setup (docs/references.md §24)
FIELD_T = 2.0
#: generator-level selection handed to ACTS (our choice, see the module docstring)
PT_MIN_GEV, ETA_MAX = 0.1, 4.0
#: Fatras simulates particles (primaries and secondaries) above this momentum; its default,
#: 0.5 GeV, would drop most of the soft pile-up particles that make the HL-LHC occupancy
FATRAS_P_MIN_GEV = 0.1
#: tracker envelope of the GenericDetector (mm): particles produced outside are not simulated
ENVELOPE_R_MM, ENVELOPE_Z_MM = 1000.0, 3000.0
#: noise occupancy per channel and bunch crossing (docs/references.md §24)
NOISE_OCC_PIXEL, NOISE_OCC_STRIP = 1e-6, 1e-3
#: pixel volumes (geometric digitisation, 50 µm pitch) and strip pitches (loc0, loc1) in mm
PIXEL_VOLUMES = (7, 8, 9)
PIXEL_PITCH_MM = 0.05
STRIP_PITCH_MM = {12: (0.08, 1.2), 13: (0.08, 1.2), 14: (0.08, 1.2),
                  16: (0.12, 10.8), 17: (0.12, 10.8), 18: (0.12, 10.8)}  # fmt: skip
#: extra Pythia settings: decay K0S, Λ and hyperons in the generator (Fatras does not decay)
DECAY_SETTINGS = ("ParticleDecays:tau0Max = 1000", "310:mayDecay = on", "3122:mayDecay = on",
                  "-3122:mayDecay = on")  # fmt: skip
#: c in mm/ns (Pythia's times are in mm/c, ACTS's in ns)
C_MM_PER_NS = 299.792458
#: default events per shard
EVENTS_PER_SHARD = 5
DIGI_CONFIG = "tracking/digi-generic.json"
MANIFEST = "manifest.json"

# ACTS geometry identifier bit fields (Acts::GeometryIdentifier)
_VOL_SHIFT, _LAY_SHIFT, _SEN_SHIFT = 56, 36, 8
_VOL_MASK, _LAY_MASK, _SEN_MASK = 0xFF, 0xFFF, 0xFFFFF
# particle-id bit layout (ACTS's former Barcode, as in the TrackML files): pv 12 | sv 12 | part 16 | gen 8 | sub 16
_PID_SHIFTS = (52, 40, 24, 16, 0)


def decode_geometry_id(geo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(volume_id, layer_id, module_id)`` of ACTS geometry identifiers (the TrackML ids)."""
    g = np.asarray(geo, dtype=np.uint64)
    vol = ((g >> np.uint64(_VOL_SHIFT)) & np.uint64(_VOL_MASK)).astype(np.int32)
    lay = ((g >> np.uint64(_LAY_SHIFT)) & np.uint64(_LAY_MASK)).astype(np.int32)
    sen = ((g >> np.uint64(_SEN_SHIFT)) & np.uint64(_SEN_MASK)).astype(np.int64)
    return vol, lay, sen


def encode_particle_id(pv, sv, part, gen, sub) -> np.ndarray:
    """One int64 particle id from ACTS's barcode fields (12/12/16/8/16 bits, TrackML's layout)."""
    out = np.zeros(np.broadcast(pv, sv, part, gen, sub).shape, dtype=np.uint64)
    for v, s in zip((pv, sv, part, gen, sub), _PID_SHIFTS, strict=True):
        out |= np.asarray(v, dtype=np.uint64) << np.uint64(s)
    return out.astype(np.int64)


# --------------------------------------------------------------------------------------------
# 1. generation
# --------------------------------------------------------------------------------------------


def _seed(*parts: int) -> int:
    from lhcml.sim.runner import MAX_SEED

    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % (MAX_SEED - 1) + 1


def _final_particles(gen: Any, n: int) -> list[pd.DataFrame]:
    """``n`` events of final-state particles (pid, q, momenta GeV, vertex mm, t mm/c) of ``gen``."""
    table = gen.generate(n).flat("particles")
    keep = table["final"]
    out = []
    off = table.offsets
    for i in range(len(table)):
        sl = slice(off[i], off[i + 1])
        k = keep[sl]
        out.append(pd.DataFrame({c: table[c][sl][k] for c in ("pid", "charge", "px", "py", "pz", "m", "vx", "vy", "vz", "t")}))
    return out


def generate_particles(process: str, first: int, n: int, mu: float, seed: int) -> tuple[list[pd.DataFrame], np.ndarray]:
    """Particles (ACTS particle-CSV columns) of events ``first .. first+n-1`` and their pile-up counts.

    The hard scatter of ``process`` comes from a Pythia seeded by ``(seed, first)``; the number
    of pile-up interactions of event ``e`` is Poisson(``mu``) drawn from a generator seeded by
    ``(seed, e)``; the minimum-bias events from a Pythia seeded by ``(seed, first, 1)``.
    """
    from lhcml.sim.generator import PythiaGenerator

    hard = _final_particles(PythiaGenerator(process, _seed(seed, first, 0), DECAY_SETTINGS), n)
    n_pu = np.array([np.random.default_rng([int(seed), int(first + i), 0x9E]).poisson(mu) if mu > 0 else 0
                     for i in range(n)], dtype=np.int64)  # fmt: skip
    minbias: list[pd.DataFrame] = []
    if n_pu.sum():
        minbias = _final_particles(PythiaGenerator("minbias", _seed(seed, first, 1), DECAY_SETTINGS), int(n_pu.sum()))
    events = []
    k = 0
    for i in range(n):
        parts = [hard[i], *minbias[k : k + n_pu[i]]]
        k += n_pu[i]
        rows = []
        for j, p in enumerate(parts):
            pt = np.hypot(p["px"], p["py"])
            eta = np.arcsinh(np.divide(p["pz"], pt, out=np.zeros(len(p)), where=pt > 0))
            sel = ((pt > PT_MIN_GEV) & (np.abs(eta) < ETA_MAX) & (np.hypot(p["vx"], p["vy"]) < ENVELOPE_R_MM)
                   & (np.abs(p["vz"]) < ENVELOPE_Z_MM)).to_numpy()  # fmt: skip
            q = p[sel]
            rows.append(pd.DataFrame({
                "particle_id_pv": j + 1, "particle_id_sv": 0, "particle_id_part": np.arange(1, len(q) + 1),
                "particle_id_gen": 0, "particle_id_subpart": 0, "particle_type": q["pid"].to_numpy(),
                "process": 0, "vx": q["vx"].to_numpy(), "vy": q["vy"].to_numpy(), "vz": q["vz"].to_numpy(),
                "vt": q["t"].to_numpy() / C_MM_PER_NS, "px": q["px"].to_numpy(), "py": q["py"].to_numpy(),
                "pz": q["pz"].to_numpy(), "m": q["m"].to_numpy(), "q": q["charge"].to_numpy().astype(float),
            }))  # fmt: skip
        events.append(pd.concat(rows, ignore_index=True))
    return events, n_pu


# --------------------------------------------------------------------------------------------
# 2.-4. ACTS
# --------------------------------------------------------------------------------------------


@dataclass
class ActsSetup:
    """The ACTS detector, field and digitisation config of a run (built once per process)."""

    detector: Any
    geometry: Any
    field: Any
    digi_config: str
    modules: pd.DataFrame  # sensitive modules: geometry_id, volume, kind, bounds, affine map


_SETUP: dict[str, ActsSetup] = {}


def acts_setup(digi_config: str | Path | None = None) -> ActsSetup:
    """The GenericDetector, the 2 T field and the module table (cached per digitisation config)."""
    from lhcml.config import shipped_config

    path = str(Path(digi_config) if digi_config else shipped_config(DIGI_CONFIG))
    if path in _SETUP:
        return _SETUP[path]
    if not Path(path).is_file():
        raise ConfigError(f"digitisation config {path} does not exist; give an ACTS digitisation JSON (--digi-config)")
    import acts
    import acts.examples

    from lhcml.quiet import _stdout_to_devnull

    with _stdout_to_devnull():  # the detector builder logs at INFO level to std::cout
        det = acts.examples.GenericDetector()
        geo = det.trackingGeometry()
    field = acts.ConstantBField(acts.Vector3(0.0, 0.0, FIELD_T * acts.UnitConstants.T))
    gctx = det.nominalGeometryContext if not callable(det.nominalGeometryContext) else det.nominalGeometryContext()
    rows = []
    surfaces: list[Any] = []
    geo.visitSurfaces(surfaces.append)
    mom = acts.Vector3(0.0, 0.0, 1.0)
    for s in surfaces:
        gid = s.geometryId
        vol = gid.volume
        if vol not in PIXEL_VOLUMES and vol not in STRIP_PITCH_MM:
            continue
        b = s.bounds
        vals = list(b.values())
        if type(b).__name__ == "RectangleBounds":
            hx_lo = hx_hi = (vals[2] - vals[0]) / 2
            hy = (vals[3] - vals[1]) / 2
        else:  # TrapezoidBounds: half x at -y, half x at +y, half y
            hx_lo, hx_hi, hy = vals[0], vals[1], vals[2]
        c = np.array(s.localToGlobal(gctx, acts.Vector2(0, 0), mom))
        u = np.array(s.localToGlobal(gctx, acts.Vector2(1, 0), mom)) - c
        v = np.array(s.localToGlobal(gctx, acts.Vector2(0, 1), mom)) - c
        rows.append((int(gid.value), vol, hx_lo, hx_hi, hy, *c, *u, *v))
    cols = ["geometry_id", "volume", "hx_lo", "hx_hi", "hy", "cx", "cy", "cz", "ux", "uy", "uz", "vx", "vy", "vz"]
    modules = pd.DataFrame(rows, columns=cols).sort_values("geometry_id", kind="stable").reset_index(drop=True)
    setup = ActsSetup(det, geo, field, path, modules)
    _SETUP[path] = setup
    return setup


def run_acts(setup: ActsSetup, gen_dir: Path, out_dir: Path, n: int, seed: int) -> dict[str, float]:
    """Fatras + digitisation of the ``n`` events whose particles are in ``gen_dir`` (numbered 0..n-1).

    Writes ACTS CSV (``particles_simulated``, ``hits``, ``measurements``,
    ``measurement-simhit-map``, ``cells``) into ``out_dir`` with the same local event numbers
    (ACTS's sequencer cannot start a CSV reader at an offset); ACTS's random numbers are
    seeded by ``seed`` (per shard) and the event number. Returns the seconds spent per stage
    (ACTS's own per-algorithm timing).
    """
    import acts
    import acts.examples
    import acts.examples.json

    out_dir.mkdir(parents=True, exist_ok=True)
    rnd = acts.examples.RandomNumbers(seed=int(seed))
    s = acts.examples.Sequencer(events=n, numThreads=1, logLevel=acts.logging.WARNING,
                                outputDir=str(out_dir), trackFpes=False)  # fmt: skip
    s.addReader(acts.examples.CsvParticleReader(level=acts.logging.WARNING, inputDir=str(gen_dir), inputStem="particles",
                                                outputParticles="particles_generated"))  # fmt: skip
    fatras = acts.examples.FatrasSimulation(
        level=acts.logging.WARNING, inputParticles="particles_generated", outputParticles="particles_simulated",
        outputSimHits="simhits", randomNumbers=rnd, trackingGeometry=setup.geometry, magneticField=setup.field,
        generateHitsOnSensitive=True, emScattering=True, emEnergyLossIonisation=True, emEnergyLossRadiation=True,
        emPhotonConversion=True, pMin=FATRAS_P_MIN_GEV * acts.UnitConstants.GeV,
    )  # fmt: skip
    s.addAlgorithm(fatras)
    digi_cfg = acts.examples.DigitizationAlgorithm.Config(
        digitizationConfigs=acts.examples.json.readDigiConfigFromJson(setup.digi_config),
        surfaceByIdentifier=setup.geometry.geoIdSurfaceMap(), randomNumbers=rnd, inputSimHits="simhits",
        outputMeasurements="measurements", outputClusters="clusters",
        outputMeasurementParticlesMap="measurement_particles_map", outputMeasurementSimHitsMap="measurement_simhits_map",
        outputParticleMeasurementsMap="particle_measurements_map", outputSimHitMeasurementsMap="simhit_measurements_map",
    )  # fmt: skip
    s.addAlgorithm(acts.examples.DigitizationAlgorithm(digi_cfg, acts.logging.WARNING))
    lvl = acts.logging.WARNING
    s.addWriter(acts.examples.CsvParticleWriter(level=lvl, inputParticles="particles_simulated", outputDir=str(out_dir),
                                                outputStem="particles_simulated"))  # fmt: skip
    s.addWriter(acts.examples.CsvSimHitWriter(level=lvl, inputSimHits="simhits", outputDir=str(out_dir), outputStem="hits"))
    s.addWriter(acts.examples.CsvMeasurementWriter(level=lvl, inputMeasurements="measurements", inputClusters="clusters",
                                                   inputMeasurementSimHitsMap="measurement_simhits_map",
                                                   outputDir=str(out_dir)))  # fmt: skip
    s.run()
    return _acts_timing(out_dir / "timing.csv")


def _acts_timing(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    t = pd.read_csv(path)
    out = {"fatras": 0.0, "digitisation": 0.0, "acts_io": 0.0}
    for _, r in t.iterrows():
        name = str(r["identifier"])
        key = "fatras" if "Fatras" in name else "digitisation" if "Digitization" in name else "acts_io"
        out[key] += float(r["time_total_s"])
    path.unlink()
    return out


# --------------------------------------------------------------------------------------------
# 5. noise and the conversion to the TrackML layout
# --------------------------------------------------------------------------------------------


def add_noise(modules: pd.DataFrame, rng: np.random.Generator, scale: float = 1.0) -> pd.DataFrame:
    """Noise measurements: per module Poisson(occupancy × channels × ``scale``), uniform positions.

    Pixels (volumes 7-9): a random 50 µm pixel, measured at its centre with variance pitch²/12,
    one cell. Strips: a uniform position on the module, variance (pitch/√12)² as the smearing.
    Returns columns ``geometry_id, local0, local1, var_local0, var_local1, global_x/y/z, pixel,
    ch0, ch1``.
    """
    if scale <= 0:
        return pd.DataFrame(columns=["geometry_id", "local0", "local1", "var_local0", "var_local1", "global_x",
                                     "global_y", "global_z", "pixel", "ch0", "ch1"])  # fmt: skip
    vol = modules["volume"].to_numpy()
    hx = np.maximum(modules["hx_lo"].to_numpy(), modules["hx_hi"].to_numpy())
    hy = modules["hy"].to_numpy()
    pixel = np.isin(vol, PIXEL_VOLUMES)
    p0 = np.array([PIXEL_PITCH_MM if px else STRIP_PITCH_MM[v][0] for v, px in zip(vol, pixel, strict=True)])
    p1 = np.array([PIXEL_PITCH_MM if px else STRIP_PITCH_MM[v][1] for v, px in zip(vol, pixel, strict=True)])
    mean_w = modules["hx_lo"].to_numpy() + modules["hx_hi"].to_numpy()  # full width at mid-height
    channels = np.where(pixel, np.round(2 * hx / p0) * np.round(2 * hy / p1), np.round(mean_w / p0))
    occ = np.where(pixel, NOISE_OCC_PIXEL, NOISE_OCC_STRIP) * scale
    counts = rng.poisson(occ * channels)
    m = np.repeat(np.arange(len(modules)), counts)
    # uniform positions in the bounding box; rejection for trapezoids (redraw until inside)
    l0 = rng.uniform(-1, 1, len(m)) * hx[m]
    l1 = rng.uniform(-1, 1, len(m)) * hy[m]
    for _ in range(100):
        half = modules["hx_lo"].to_numpy()[m] + (modules["hx_hi"].to_numpy()[m] - modules["hx_lo"].to_numpy()[m]) * (
            (l1 + hy[m]) / (2 * hy[m]))
        out = np.abs(l0) > half
        if not out.any():
            break
        l0[out] = rng.uniform(-1, 1, out.sum()) * hx[m][out]
        l1[out] = rng.uniform(-1, 1, out.sum()) * hy[m][out]
    pm = pixel[m]
    ch0 = np.where(pm, np.floor((l0 + hx[m]) / PIXEL_PITCH_MM), 0).astype(np.int64)
    ch1 = np.where(pm, np.floor((l1 + hy[m]) / PIXEL_PITCH_MM), 0).astype(np.int64)
    l0 = np.where(pm, -hx[m] + (ch0 + 0.5) * PIXEL_PITCH_MM, l0)
    l1 = np.where(pm, -hy[m] + (ch1 + 0.5) * PIXEL_PITCH_MM, l1)
    var0, var1 = p0[m] ** 2 / 12.0, p1[m] ** 2 / 12.0
    md = modules.iloc[m]
    g = {a: md[f"c{a}"].to_numpy() + l0 * md[f"u{a}"].to_numpy() + l1 * md[f"v{a}"].to_numpy() for a in "xyz"}
    return pd.DataFrame({"geometry_id": modules["geometry_id"].to_numpy()[m], "local0": l0, "local1": l1,
                         "var_local0": var0, "var_local1": var1, "global_x": g["x"], "global_y": g["y"],
                         "global_z": g["z"], "pixel": pm, "ch0": ch0, "ch1": ch1})  # fmt: skip


def _pid(df: pd.DataFrame) -> np.ndarray:
    return encode_particle_id(*(df[f"particle_id_{k}"].to_numpy() for k in ("pv", "sv", "part", "gen", "subpart")))


def convert_event(acts_dir: Path, local: int, event_id: int, modules: pd.DataFrame, rng: np.random.Generator,
                  noise_scale: float) -> tuple[trackml.TrackMLEvent, dict[str, pd.DataFrame]]:  # fmt: skip
    """Add noise to ACTS's CSV of one event (file number ``local``) and build the TrackML tables of ``event_id``.

    Returns the TrackML event and the ACTS tables to write back (``measurements``,
    ``measurement-simhit-map``, ``cells``) with the noise included, sorted by geometry id and
    renumbered, so that ``hit_id`` = measurement index + 1.
    """
    stem = acts_dir / trackml.event_stem(local)
    meas = pd.read_csv(f"{stem}-measurements.csv", dtype={"local_key": str}, keep_default_na=False)
    mmap = pd.read_csv(f"{stem}-measurement-simhit-map.csv")
    cells = pd.read_csv(f"{stem}-cells.csv")
    simhits = pd.read_csv(f"{stem}-hits.csv")
    parts = pd.read_csv(f"{stem}-particles_simulated.csv")
    key = meas["local_key"].iloc[0] if len(meas) else chr(6)
    noise = add_noise(modules, rng, noise_scale)
    n_sig = len(meas)
    # noise cells take the value of a random signal cell (the deposit spectrum of the event)
    cell_vals = cells["value"].to_numpy() if len(cells) else np.array([1.0])
    nm = pd.DataFrame({
        "measurement_id": np.arange(n_sig, n_sig + len(noise)), "geometry_id": noise["geometry_id"].to_numpy(),
        "local_key": key, "local0": noise["local0"], "local1": noise["local1"], "phi": 0.0, "theta": 0.0, "time": 0.0,
        "var_local0": noise["var_local0"], "var_local1": noise["var_local1"], "var_phi": 0.0, "var_theta": 0.0,
        "var_time": 0.0, "global_x": noise["global_x"], "global_y": noise["global_y"], "global_z": noise["global_z"],
    })  # fmt: skip
    allm = pd.concat([meas, nm[meas.columns]], ignore_index=True)
    order = np.argsort(allm["geometry_id"].to_numpy(dtype=np.uint64), kind="stable")
    new_index = np.empty(len(allm), dtype=np.int64)
    new_index[order] = np.arange(len(allm))
    allm = allm.iloc[order].reset_index(drop=True)
    allm["measurement_id"] = np.arange(len(allm))
    mmap = mmap.assign(measurement_id=new_index[mmap["measurement_id"].to_numpy()])
    pix = noise["pixel"].to_numpy()
    ncells = pd.DataFrame({
        "geometry_id": noise["geometry_id"].to_numpy()[pix], "measurement_id": new_index[n_sig + np.flatnonzero(pix)],
        "channel0": noise["ch0"].to_numpy()[pix], "channel1": noise["ch1"].to_numpy()[pix], "timestamp": 0.0,
        "value": rng.choice(cell_vals, int(pix.sum())),
    })  # fmt: skip
    cells = cells.assign(measurement_id=new_index[cells["measurement_id"].to_numpy()])
    cells = pd.concat([cells, ncells[cells.columns]], ignore_index=True).sort_values(
        ["measurement_id", "channel0", "channel1"], kind="stable").reset_index(drop=True)  # fmt: skip
    mmap = mmap.sort_values(["measurement_id", "hit_id"], kind="stable").reset_index(drop=True)

    # TrackML tables: one truth particle per hit (the first sim hit of a merged cluster)
    vol, lay, mod = decode_geometry_id(allm["geometry_id"].to_numpy(dtype=np.uint64))
    hit_id = np.arange(1, len(allm) + 1)
    hits = pd.DataFrame({"hit_id": hit_id, "x": allm["global_x"], "y": allm["global_y"], "z": allm["global_z"],
                         "volume_id": vol, "layer_id": lay, "module_id": mod})  # fmt: skip
    first = mmap.drop_duplicates("measurement_id", keep="first")
    sh = simhits.iloc[first["hit_id"].to_numpy()]
    truth = pd.DataFrame({"hit_id": hit_id, "particle_id": 0, "tx": allm["global_x"], "ty": allm["global_y"],
                          "tz": allm["global_z"], "tpx": 0.0, "tpy": 0.0, "tpz": 0.0, "weight": 0.0})  # fmt: skip
    rows = first["measurement_id"].to_numpy()
    truth.loc[rows, "particle_id"] = _pid(sh)
    for a, b in (("tx", "tx"), ("ty", "ty"), ("tz", "tz"), ("tpx", "tpx"), ("tpy", "tpy"), ("tpz", "tpz")):
        truth.loc[rows, a] = sh[b].to_numpy()
    ppid = _pid(parts)
    counts = truth.loc[truth["particle_id"] != 0, "particle_id"].value_counts()
    particles = pd.DataFrame({"particle_id": ppid, "vx": parts["vx"], "vy": parts["vy"], "vz": parts["vz"],
                              "px": parts["px"], "py": parts["py"], "pz": parts["pz"], "q": parts["q"].round().astype(int),
                              "nhits": counts.reindex(ppid).fillna(0).astype(int).to_numpy()})  # fmt: skip
    particles = particles.drop_duplicates("particle_id").reset_index(drop=True)
    truth["weight"] = trackml.hit_weights(truth, particles, source=str(stem))
    tcells = pd.DataFrame({"hit_id": cells["measurement_id"].to_numpy() + 1, "ch0": cells["channel0"],
                           "ch1": cells["channel1"], "value": cells["value"]})  # fmt: skip
    ev = trackml.TrackMLEvent(int(event_id), hits, tcells, particles, truth, source=str(stem))
    trackml.check_event(ev)
    return ev, {"measurements": allm, "measurement-simhit-map": mmap, "cells": cells}


def _write_acts_csv(acts_out: Path, local: int, event_id: int, tables: dict[str, pd.DataFrame], work: Path) -> None:
    stem = trackml.event_stem(event_id)
    acts_out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        trackml.write_csv(df, acts_out / f"{stem}-{name}.csv")
    for name in ("hits", "particles_simulated"):
        src = work / f"{trackml.event_stem(local)}-{name}.csv"
        with atomic_path(acts_out / f"{stem}-{name}.csv") as tmp:
            shutil.copyfile(src, tmp)


# --------------------------------------------------------------------------------------------
# shards and the run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingShard:
    """One unit of work: events ``first .. first+n-1`` of a run."""

    index: int
    first: int
    n: int
    process: str
    mu: float
    seed: int
    out: str
    noise_scale: float
    digi_config: str | None
    write_csv: bool = True

    @property
    def h5(self) -> Path:
        return Path(self.out) / "h5" / f"events_{self.index:04d}.h5"


def run_tracking_shard(task: TrackingShard) -> dict[str, Any]:
    """Simulate one shard and write its CSV and HDF5 outputs (HDF5 last: the shard's done marker)."""
    out = Path(task.out)
    if task.h5.is_file():
        return {"index": task.index, "skipped": True, "events": task.n}
    setup = acts_setup(task.digi_config)
    work = out / ".work" / f"shard_{task.index:04d}"
    if work.exists():
        shutil.rmtree(work)
    gen_dir, acts_dir = work / "gen", work / "acts"
    gen_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    events, n_pu = generate_particles(task.process, task.first, task.n, task.mu, task.seed)
    t_gen = time.perf_counter() - t0
    for i, ev in enumerate(events):
        trackml.write_csv(ev, gen_dir / f"{trackml.event_stem(i)}-particles.csv")
    t1 = time.perf_counter()
    timing = run_acts(setup, gen_dir, acts_dir, task.n, _seed(task.seed, task.first, 0xAC75))
    t_acts = time.perf_counter() - t1
    t2 = time.perf_counter()
    tm_events = []
    stats = []
    for i in range(task.n):
        eid = task.first + i
        rng = np.random.default_rng([int(task.seed), int(eid), 0x401])
        ev, acts_tables = convert_event(acts_dir, i, eid, setup.modules, rng, task.noise_scale)
        _write_acts_csv(out / "acts", i, eid, acts_tables, acts_dir)
        if task.write_csv:
            trackml.write_event_csv(out / "trackml", ev)
        tm_events.append(ev)
        stats.append(_event_stats(ev, int(n_pu[i]), len(events[i])))
    t_conv = time.perf_counter() - t2
    times = {"pythia": t_gen, "acts_total": t_acts, **timing, "convert_write": t_conv}
    # timings vary from run to run: a side file, so that the HDF5 file is identical for the same seed
    atomic_write_text(task.h5.with_suffix(".timing.json"), json.dumps(times, indent=1))
    trackml.write_events_h5(task.h5, tm_events, attrs={"process": task.process, "mu": task.mu, "seed": task.seed,
                                                       "shard": task.index, "events": stats})  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return {"index": task.index, "skipped": False, "events": task.n, "timing_s": times, "stats": stats}


def _event_stats(ev: trackml.TrackMLEvent, n_pu: int, n_gen: int) -> dict[str, Any]:
    t = ev.truth
    noise = int((t["particle_id"] == 0).sum())
    with_hits = ev.particles[ev.particles["nhits"] > 0]
    per_vol = ev.hits["volume_id"].value_counts().sort_index()
    return {"event_id": ev.event_id, "n_pileup": n_pu, "n_generated": n_gen, "hits": len(ev.hits), "noise_hits": noise,
            "particles": len(ev.particles), "particles_with_hits": len(with_hits),
            "particles_ge3_hits_pt_gt_1": int(((with_hits["nhits"] >= 3) & (np.hypot(with_hits["px"], with_hits["py"]) > 1.0)).sum()),
            "hits_per_volume": {int(k): int(v) for k, v in per_vol.items()}}  # fmt: skip


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lhcml", "pyacts", "pythia8mc", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def plan_shards(process: str, out: Path, mu: float, events: int, seed: int, shards: int | None,
                noise_scale: float, digi_config: str | None, write_csv: bool = True) -> list[TrackingShard]:  # fmt: skip
    """The shards of a run: ``shards`` near-equal blocks (default: one per 5 events)."""
    k = shards or max(1, math.ceil(events / EVENTS_PER_SHARD))
    k = max(1, min(int(k), events))
    edges = np.linspace(0, events, k + 1).round().astype(int)
    return [TrackingShard(i, int(edges[i]), int(edges[i + 1] - edges[i]), process, float(mu), int(seed), str(out),
                          float(noise_scale), digi_config, write_csv) for i in range(k)]  # fmt: skip


def simulate_tracking(
    process: str,
    out: str | Path,
    mu: float = 0.0,
    events: int = 10,
    seed: int = 1,
    shards: int | None = None,
    workers: int = 1,
    cluster: str | None = None,
    progress: bool = True,
    noise_scale: float = 1.0,
    digi_config: str | Path | None = None,
    write_csv: bool = True,
) -> dict[str, Any]:
    """Simulate ``events`` events of ``process`` at pile-up ``mu`` and write the outputs to ``out``.

    Parameters
    ----------
    process
        A registered process (``lhcml simulate --help`` lists them), e.g. ``ttbar``, or ``minbias``.
    out
        Output directory (``trackml/``, ``acts/``, ``h5/``, ``manifest.json``).
    mu
        Mean number of pile-up interactions (Poisson), >= 0.
    events, seed, shards
        Number of events, run seed, number of shards (default one per 5 events).
    workers, cluster
        Local worker processes, or a Dask cluster (:func:`lhcml.cluster.dask_client`).
    noise_scale
        Multiplies the noise occupancies (0: no noise hits).
    digi_config
        ACTS digitisation JSON (default ``configs/tracking/digi-generic.json``).
    write_csv
        Write the TrackML CSV files (the HDF5 and ACTS CSV files are always written).

    Returns
    -------
    dict
        The manifest (also written to ``out/manifest.json``).
    """
    from lhcml.sim.processes import get_process

    if events <= 0:
        raise ConfigError(f"--events must be positive, got {events}")
    if not (mu >= 0 and math.isfinite(mu)):
        raise ConfigError(f"--mu must be a finite number >= 0, got {mu}")
    if noise_scale < 0:
        raise ConfigError(f"noise scale must be >= 0, got {noise_scale}")
    if process != "minbias":
        get_process(process)  # a clear error for an unknown process
    out = Path(out)
    prepare_output(out / MANIFEST)
    setup = acts_setup(digi_config)
    tasks = plan_shards(process, out, mu, events, seed, shards, noise_scale,
                        None if digi_config is None else str(digi_config), write_csv)  # fmt: skip
    manifest: dict[str, Any] = {
        "format": "lhcml-tracking-run-1", "process": process, "mu": float(mu), "seed": int(seed), "events": int(events),
        "shards": len(tasks), "detector": "ACTS GenericDetector (Gen1, TrackML-like)",
        "field": {"type": "uniform solenoid", "bz_tesla": FIELD_T},
        "digitisation_config": setup.digi_config, "digitisation": json.loads(Path(setup.digi_config).read_text()),
        "noise": {"occupancy_pixel": NOISE_OCC_PIXEL, "occupancy_strip": NOISE_OCC_STRIP, "scale": noise_scale},
        "generator_selection": {"pt_min_gev": PT_MIN_GEV, "abs_eta_max": ETA_MAX, "envelope_r_mm": ENVELOPE_R_MM,
                                "envelope_z_mm": ENVELOPE_Z_MM, "pythia_extra": list(DECAY_SETTINGS)},
        "fatras": {"pMin_gev": FATRAS_P_MIN_GEV, "emScattering": True, "emEnergyLossIonisation": True, "emEnergyLossRadiation": True,
                   "emPhotonConversion": True, "hadronic_interactions": False, "decays": False},
        "layout": {"trackml": "trackml/event{N:09d}-{hits,cells,particles,truth}.csv", "acts": "acts/event{N:09d}-*.csv",
                   "h5": "h5/events_{k:04d}.h5", "hit_id": "ACTS measurement index + 1"},
        "versions": _versions(), "complete": False, "shard_results": [],
    }  # fmt: skip
    mpath = out / MANIFEST
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        keys = ("process", "mu", "seed", "events", "shards", "noise", "digitisation", "generator_selection", "fatras")
        diff = [k for k in keys if old.get(k) != manifest[k]]
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {manifest[k]!r}" if k in keys[:5] else f"{k} differs"
                               for k in diff)  # fmt: skip
            raise ConfigError(f"{out} holds a different run ({detail}); use another --out to start a new run, "
                              "or repeat the original settings to resume it")  # fmt: skip
    atomic_write_text(mpath, json.dumps(manifest, indent=1))
    results: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=events, unit="evt", desc=f"tracking simulate {process} mu={mu:g}")

    def done(res: dict[str, Any]) -> None:
        results[res["index"]] = res
        if bar is not None:
            bar.update(res["events"])
        manifest["shard_results"] = [{k: v for k, v in results[i].items() if k != "skipped"} for i in sorted(results)]
        atomic_write_text(mpath, json.dumps(manifest, indent=1))

    try:
        if cluster is not None:
            from distributed import as_completed

            from lhcml.cluster import dask_client

            with dask_client(cluster) as client:
                futs = [client.submit(run_tracking_shard, t, key=f"lhcml-tracking-{t.index}-{t.seed}", pure=False)
                        for t in tasks]  # fmt: skip
                for f in as_completed(futs):
                    done(f.result())
        elif workers <= 1 or len(tasks) == 1:
            for t in tasks:
                done(run_tracking_shard(t))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                for res in pool.map(run_tracking_shard, tasks):
                    done(res)
    finally:
        if bar is not None:
            bar.close()
    shutil.rmtree(out / ".work", ignore_errors=True)
    # a resumed shard's statistics come from its HDF5 file
    for t in tasks:
        if results[t.index].get("skipped"):
            from lhcml.data.h5 import read_attrs

            a = read_attrs(t.h5)
            tpath = t.h5.with_suffix(".timing.json")
            timing = json.loads(tpath.read_text()) if tpath.is_file() else None
            results[t.index] = {"index": t.index, "events": t.n, "timing_s": timing, "stats": a.get("events")}
    manifest["shard_results"] = [results[i] for i in sorted(results)]
    manifest["complete"] = True
    atomic_write_text(mpath, json.dumps(manifest, indent=1))
    return manifest
