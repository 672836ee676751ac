"""The reference-model registry: listing, lookup, validation, and a cheap import."""
from __future__ import annotations

import subprocess
import sys

import pytest

from medexport.errors import InputError
from medexport.zoo import DEFAULT_MODEL, ReferenceModel, get_model, list_models, register_model

SHIPPED = ["brain-region-alexnet", "brain-tissue-unet2d", "brain-tissue-unet3d"]


def test_list_models_sorted_and_filtered():
    assert set(SHIPPED) <= set(list_models())
    assert list_models() == sorted(list_models())
    assert list_models("brain-tissue-*") == ["brain-tissue-unet2d", "brain-tissue-unet3d"]
    assert list_models("*alexnet") == ["brain-region-alexnet"]
    assert list_models("no-such-*") == []


def test_default_model_is_registered_2d_segmentation():
    ref = get_model(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "brain-tissue-unet2d"
    assert (ref.task, ref.input_shape) == ("segmentation", (1, 1, 128, 128))
    assert ref.classes == ("background", "grey_matter", "white_matter")


def test_unknown_name_lists_known_names():
    with pytest.raises(InputError) as err:
        get_model("brain-tumour-vit")
    message = str(err.value)
    assert "brain-tumour-vit" in message
    assert all(name in message for name in SHIPPED)


def _ref(**changes) -> ReferenceModel:
    fields = dict(name="test-model", task="classification", classes=("a", "b"), input_shape=(1, 1, 8, 8),
                  factory="medexport.zoo.architectures:brain_region_alexnet", weights="x.pt", card="x.md")
    fields.update(changes)
    return ReferenceModel(**fields)


@pytest.mark.parametrize("changes, fragment", [
    ({"task": "detection"}, "task"),
    ({"input_shape": (1, 8, 8)}, "input_shape"),
    ({"input_shape": (2, 1, 8, 8)}, "input_shape"),
    ({"task": "segmentation", "classes": ("liver", "tumour")}, "background"),
    ({"factory": "medexport.zoo.architectures.brain_region_alexnet"}, "module:function"),
])
def test_invalid_model_rejected(changes, fragment):
    with pytest.raises(InputError, match=fragment):
        _ref(**changes)


def test_register_same_model_twice_is_idempotent_but_a_clash_is_an_error():
    shipped = get_model("brain-tissue-unet2d")
    assert register_model(shipped) is shipped
    with pytest.raises(InputError, match="already registered"):
        register_model(_ref(name="brain-tissue-unet2d"))


def test_import_zoo_does_not_import_torch_or_monai():
    code = ("import sys, medexport.zoo as z; z.get_model(z.DEFAULT_MODEL).heldout(); "
            "print(sorted(m for m in ('torch', 'monai', 'nilearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
