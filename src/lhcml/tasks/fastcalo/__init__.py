"""The generative fast-calorimeter application (issue 15): shower samples, CaloChallenge evaluation.

:mod:`lhcml.tasks.fastcalo.dataset` (``lhcml fastcalo simulate``) writes single-particle showers
in the CaloChallenge layout; :mod:`lhcml.tasks.fastcalo.evaluate` (``lhcml fastcalo evaluate``)
compares generated with reference showers the challenge's way. The models are in
:mod:`lhcml.models.fastcalo`; the simulation's ``--calo fast:MODEL.onnx`` in
:mod:`lhcml.sim.fastcalo`.
"""
