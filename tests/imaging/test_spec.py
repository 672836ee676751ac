"""PreprocessSpec validation and its manifest round trip."""
import json

import pytest

from medexport.imaging import PreprocessSpec
from medexport.errors import InputError


def test_round_trip_through_json_gives_an_equal_spec():
    spec = PreprocessSpec(spatial_size=(32, 64, 64), channels=2, orientation="ras", spacing=(2.0, 1.5, 1.5),
                          intensity="window", window=(40.0, 400.0), fit="pad_crop", max_slices_per_volume=8)
    back = PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    assert back.orientation == "RAS" and back.spatial_size == (32, 64, 64) and back.ndim == 3


@pytest.mark.parametrize("kwargs,needle", [
    ({"spatial_size": (64,)}, "spatial_size"),
    ({"spatial_size": (64, 0)}, "spatial_size"),
    ({"spatial_size": (64, 64), "channels": 0}, "channels"),
    ({"spatial_size": (64, 64), "orientation": "RRS"}, "orientation"),
    ({"spatial_size": (64, 64), "spacing": (1.0, 1.0, 1.0)}, "spacing"),
    ({"spatial_size": (64, 64), "intensity": "zscore"}, "intensity"),
    ({"spatial_size": (64, 64), "percentiles": (99.0, 1.0)}, "percentiles"),
    ({"spatial_size": (64, 64), "intensity": "window"}, "window"),
    ({"spatial_size": (64, 64), "fit": "stretch"}, "fit"),
    ({"spatial_size": (64, 64), "slice_axis": 3}, "slice_axis"),
    ({"spatial_size": (64, 64), "max_slices_per_volume": 0}, "max_slices_per_volume"),
])
def test_invalid_specs_raise_one_line_input_errors(kwargs, needle):
    with pytest.raises(InputError, match=needle) as info:
        PreprocessSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(InputError, match="normalise"):
        PreprocessSpec.from_dict({"spatial_size": [8, 8], "normalise": True})
