"""zoo stage: trained reference medical models with their weights, held-out data and model cards.

Importing this package is cheap (no torch or MONAI); a model's network is built on demand::

    from medexport.zoo import get_model, list_models
    list_models("brain-*")
    ref = get_model("brain-tissue-unet2d")
    model = ref.build()
"""
from medexport.zoo import _builtin  # noqa: F401  (registers the shipped models)
from medexport.zoo._registry import DEFAULT_MODEL, ReferenceModel, get_model, list_models, register_model

__all__ = ["DEFAULT_MODEL", "ReferenceModel", "get_model", "list_models", "register_model"]
