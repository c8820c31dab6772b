"""Boosted-object (top/W/Z vs QCD) and jet-constituent tagging: substructure observables, jet
images, sample selection and flattening weights, the DDT baseline, decorrelation frontiers and
robustness studies. Models live in :mod:`lhcml.models.constituents` and
:mod:`lhcml.models.images`; decorrelation losses in :mod:`lhcml.train.decorrelation`.
"""
