"""Hit-level tracking models (issue 14), trained per event by :mod:`lhcml.train.tracking`.

Each model is a plain ``torch.nn.Module`` whose constructor does no I/O; the training side
(:data:`lhcml.train.tracking.TRACKING_MODELS`) pairs it with the functions that turn a TrackML
event into its tensors and compute its loss. Models here: :mod:`.embedding` (metric learning of
a hit embedding, Amrouche et al. / Exa.TrkX).
"""
