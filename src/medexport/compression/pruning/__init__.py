"""Structured channel pruning that follows residual adds and U-Net concatenations, in 2D and 3D.

Four concerns in four modules: coupled channels (``dependency``), scores (``importance``), narrowing
one layer (``mutate``) and the schedule that ties them (``prune``, which registers ``prune-l1``,
``prune-l2`` and ``prune-bn``). Example::

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    small, record = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))
"""
from medexport.compression.pruning.config import PruneConfig
from medexport.compression.pruning.prune import GroupRecord, PrunePass, PrunePlan, plan

__all__ = ["GroupRecord", "PruneConfig", "PrunePass", "PrunePlan", "plan"]
