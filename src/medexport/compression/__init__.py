"""compression stage: passes that rewrite a model into a smaller dense network.

Four concerns in four places: which layers (``_layers``), how one layer factorizes
(``decompositions``), which ranks (``allocator``), and the schedule that ties them (``lowrank``,
one registered pass per method). Example::

    from medexport.compression import LowRankConfig, get_pass
    small, record = get_pass("svd").apply(model, (1, 1, 128, 128), LowRankConfig(budget=3))
    print(record.ratio, [(l.name, l.ranks) for l in record.layers])
"""
from medexport.compression import lowrank as _lowrank  # noqa: F401  (registers the passes)
from medexport.compression import pruning as _pruning  # noqa: F401  (registers the prune-* passes)
from medexport.compression.pruning import merge as _merge  # noqa: F401  (registers merge, merge-medoid)
from medexport.compression import subpixel as _subpixel  # noqa: F401  (registers subpixel, an exact rewrite)
from medexport.compression._registry import get_pass, list_passes, register_pass
from medexport.compression.base import CompressionPass, chain, model_macs
from medexport.compression.config import LowRankConfig, parse_budget
from medexport.compression.record import LayerRecord, PassRecord

__all__ = ["CompressionPass", "LayerRecord", "LowRankConfig", "PassRecord", "chain", "get_pass", "list_passes",
           "model_macs", "parse_budget", "register_pass"]
