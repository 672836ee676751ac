"""Exact rewrites for speed (the ``rewrite`` family): the model computes the same function, faster."""
