"""zoo stage."""
