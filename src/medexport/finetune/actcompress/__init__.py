"""Activation-map compression for fine-tuning (Vu et al., "Compressing the Activation Maps in Deep Neural Networks
and Its Regularizing Effect", TMLR 2024): chosen layers save their activations for the backward pass as top-k
DCT, Haar-wavelet or raw coefficients in sparse form, and the backward pass rebuilds them.

    spec = ActCompressSpec.from_flags("dct", 10, "block0-1", "conv,bn,relu")
    with compressed_activations(model, spec, images[:1]):
        loss_fn(model(x)).backward()
"""
from medexport.finetune.actcompress._select import LAYER_TYPES, select_layers
from medexport.finetune.actcompress._transforms import TRANSFORMS
from medexport.finetune.actcompress.compress import compressed_activations
from medexport.finetune.actcompress.memory import (ActivationMemory, PatchFit, activation_memory, eta, fit_patch,
                                                   parse_bytes)
from medexport.finetune.actcompress.spec import ActCompressSpec

__all__ = ["LAYER_TYPES", "TRANSFORMS", "ActCompressSpec", "ActivationMemory", "PatchFit", "activation_memory",
           "compressed_activations", "eta", "fit_patch", "parse_bytes", "select_layers"]
