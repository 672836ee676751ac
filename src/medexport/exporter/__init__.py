"""exporter stage."""
