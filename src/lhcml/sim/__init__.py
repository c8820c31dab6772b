"""The open simulation (docs/simulation.md): Pythia 8 events, pileup, a parametric ATLAS-like detector,
particle flow, jets and truth labels, assembled into the flat-file schema.

Entry point: :func:`lhcml.sim.events.simulate_events`. Heavy dependencies (pythia8mc, fastjet)
are imported lazily inside functions.
"""
