"""The detailed simulation's energy spots as the readout of generated showers (issue 15).

:class:`SpotReadout` is defined in :mod:`lhcml.sim.spot_readout` (the simulation's fast path,
``lhcml simulate ... --calo fast:MODEL.onnx --spot-readout FRACTION``, applies it too, and the
simulation may not import the task layer); this module keeps the name that ``lhcml fastcalo
generate --spot-readout``, :func:`lhcml.tasks.fastcalo.dataset.generate_sample` and the benchmarks use.
"""

from __future__ import annotations

from lhcml.sim.spot_readout import DEFAULT_FRACTION, SpotReadout

__all__ = ["DEFAULT_FRACTION", "SpotReadout"]
