"""The networks the compression tests run on: MONAI nets from tests/_nets.py and the zoo's 2D U-Net."""
from __future__ import annotations

import copy
import importlib

import pytest

from tests._nets import MONAI_NETS

NETS = ("unet2d", "unet3d", "dynunet", "resnet2d", "brain-tissue-unet2d")


def build_net(key: str):
    """(model in eval mode, input shape) for a key of NETS."""
    import torch

    torch.manual_seed(0)
    if key in MONAI_NETS:
        factory, kwargs, shape = MONAI_NETS[key]
        module, _, attr = factory.partition(":")
        model = getattr(importlib.import_module(module), attr)(**kwargs).eval()
        _randomize_norms(model)
        return model, tuple(int(s) for s in shape.split("x"))
    from medexport.zoo import get_model

    ref = get_model(key)
    return ref.build(), tuple(ref.input_shape)


def pass_config(method: str, shape: tuple[int, ...], **kwargs):
    """The config ``method``'s pass takes, with real calibration images when it needs them (hsc, prune-act, merge)."""
    from medexport.compression import get_pass
    from medexport.zoo.samples import real_inputs

    compression = get_pass(method)
    if compression.needs_calibration:
        kwargs.setdefault("calibration", real_inputs((8, *shape[1:]), 8))
    return compression.config_type(**kwargs)


def _randomize_norms(model) -> None:
    """Untrained BatchNorms are identities; give them statistics so the outputs are not trivially small."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="session")
def nets():
    """(model, input shape) per key of NETS: built once per session (several tests compress the same network),
    handed out as a copy, so that no test sees what another did to its model."""
    cache: dict = {}

    def get(key: str):
        if key not in cache:
            cache[key] = build_net(key)
        model, shape = cache[key]
        return copy.deepcopy(model), shape

    return get
