"""Structured channel pruning that follows residual adds and U-Net concatenations, in 2D and 3D.

Four concerns: coupled channels (``dependency``), scores (``importance``), narrowing one layer
(``mutate``), and the schedule (``schedule``: uniform or capped global targets, iterative steps,
guard rails with rollback) over one structural step (``prune``, which registers ``prune-l1``,
``prune-l2``, ``prune-bn`` and ``prune-act``). Filter merging (``merge``: ``merge``, ``merge-medoid``)
is the same schedule with clusters instead of lowest scores. Example::

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    small, record = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))
"""
from medexport.compression.pruning.config import PruneConfig
from medexport.compression.pruning.prune import PrunePass, PrunePlan, apply_plan, plan
from medexport.compression.pruning.schedule import allocate, run_schedule
from medexport.compression.record import GroupRecord

__all__ = ["GroupRecord", "PruneConfig", "PrunePass", "PrunePlan", "allocate", "apply_plan", "plan", "run_schedule"]
