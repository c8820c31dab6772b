"""Hit-level tracking at HL-LHC occupancy (issue 14): ACTS-simulated hits, ACTS and ML track finding.

The data (``lhcml tracking simulate``) come from :mod:`lhcml.sim.tracking` (Pythia hard scatter
plus minimum-bias pile-up, ACTS Fatras in the ``GenericDetector``, digitisation, noise) and are
written in the TrackML challenge layout, read back by :mod:`lhcml.data.trackml`. The command
line group is :mod:`lhcml.tasks.tracking.cli`.
"""
