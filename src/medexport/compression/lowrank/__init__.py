"""Low-rank passes: ``svd``, ``spatial-svd``, ``tucker`` and ``hsc``.

Four concerns: how one layer factorizes (``decompositions``, ``hsc``), which ranks (``allocator``, with the
measured ``latency_allocator``), the rank rule (``config``), and the schedule that ties them (``passes``,
one registered class per method).
"""
