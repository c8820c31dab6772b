"""Flavour tagging: the specialist (baseline) taggers IP2D/IP3D, SV1, JetFitter, soft muon.

Each algorithm reads the ``jets`` and ``tracks`` datasets of a flat file and returns jet-level
variables; :mod:`lhcml.tasks.ftag.baselines` fits their templates and writes the variables back
into the ``jets`` dataset (``lhcml ftag baselines fit|apply``).
"""
