"""The flat-dataset layer: HDF5 layout, reader/writer, schema checks, mock files, conversion."""
