"""packaging stage."""
