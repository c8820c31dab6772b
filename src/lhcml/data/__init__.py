"""The flat-dataset layer: HDF5 layout, reader/writer, schema checks, mock files, conversion."""

# HDF5 filter plugins (LZ4 of UPP and Salt files, Zstd, Blosc, ...): registered with the HDF5
# library once, before any lhcml module opens a file (they all import lhcml.data).
import hdf5plugin  # noqa: E402, F401
