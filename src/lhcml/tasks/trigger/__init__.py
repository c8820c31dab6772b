"""Trigger-latency models (issue 16): small jet taggers a Level-1 trigger could run on an FPGA.

Three recipes in ``configs/trigger/``: the hls4ml jet-substructure MLP (16 high-level jet
features, t/W/Z/q/g), a DL1-size b-tagging MLP and a small deep-sets model on the leading
constituents; each trained in floating point, post-training quantised (PTQ) and
quantisation-aware trained (QAT, Brevitas) at several total bit widths, optionally pruned.
``lhcml trigger --help`` gives the order of the commands.
"""
