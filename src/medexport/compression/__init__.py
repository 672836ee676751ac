"""compression stage: passes that rewrite a model into a smaller dense network.

One subpackage per pass family: ``lowrank/`` (how one layer factorizes, which ranks, one registered
pass per method), ``pruning/`` (coupled channels, importance, narrowing, schedule; filter merging) and
``rewrite/`` (exact rewrites for speed: ``subpixel``). Shared here: the registry, the pass protocol and
chaining (``base``), layer discovery (``_layers``) and the records. Example::

    from medexport.compression import LowRankConfig, get_pass
    small, record = get_pass("svd").apply(model, (1, 1, 128, 128), LowRankConfig(budget=3))
    print(record.ratio, [(l.name, l.ranks) for l in record.layers])
"""
from medexport.compression.lowrank import passes as _lowrank  # noqa: F401  (registers the low-rank passes)
from medexport.compression import pruning as _pruning  # noqa: F401  (registers the prune-* passes)
from medexport.compression.pruning import merge as _merge  # noqa: F401  (registers merge, merge-medoid)
from medexport.compression.rewrite import subpixel as _subpixel  # noqa: F401  (registers subpixel, an exact rewrite)
from medexport.compression._registry import get_pass, list_passes, register_pass
from medexport.compression.base import CompressionPass, chain, model_macs
from medexport.compression.lowrank.config import LowRankConfig, parse_budget
from medexport.compression.record import LayerRecord, PassRecord

__all__ = ["CompressionPass", "LayerRecord", "LowRankConfig", "PassRecord", "chain", "get_pass", "list_passes",
           "model_macs", "parse_budget", "register_pass"]
