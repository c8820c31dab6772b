"""Beam spot (luminous region) of the simulated collisions.

The hard-scatter primary vertex of each generated event is drawn from a Gaussian luminous region
(:meth:`lhcml.sim.generator.PythiaGenerator.generate`); pile-up vertices use the same sigmas
(:mod:`lhcml.sim.pileup`), and the calorimeter uses them for the pile-up density.
"""

from __future__ import annotations

from importlib import resources

#: beam-spot defaults (mm) used when ``sim/detector_params.yaml`` has no ``beam_spot`` block:
#: Run-2/3 luminous region sigma_z ~ 35 mm, sigma_xy ~ 10 um (docs/references.md §8)
BEAM_SPOT_SIGMA_Z = 35.0
BEAM_SPOT_SIGMA_XY = 0.010


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
