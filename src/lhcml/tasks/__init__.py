"""Per-application glue: flavour tagging (``ftag``), boosted tagging, photons, ..."""
