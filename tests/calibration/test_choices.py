"""The INT8 option tables: which backends each layout and engine serves, and QuantConfig validating against them."""
import pytest

from medexport.calibration.choices import INT8_ENGINES, LAYOUTS, METHODS, check_serves, get_option
from medexport.calibration.quantize import QuantConfig
from medexport.errors import InputError
from medexport.runtimes import list_targets


def test_each_layout_and_engine_serves_its_backends():
    served = {name: [t for t in list_targets() if option.serves(t)]
              for name, option in {**LAYOUTS, **INT8_ENGINES}.items()}
    assert served == {"tensorrt": ["onnxruntime", "openvino", "tensorrt"], "ort-u8s8": ["onnxruntime"],
                      "openvino": ["openvino"], "qdq": ["onnxruntime", "openvino", "tensorrt"], "nncf": ["openvino"]}
    assert [LAYOUTS[n].scope for n in LAYOUTS] == ["every backend", "onnxruntime only", "openvino only"]


def test_a_one_backend_option_is_refused_on_another_backend():
    check_serves(LAYOUTS["ort-u8s8"], "onnxruntime")
    check_serves(LAYOUTS["tensorrt"], "openvino")
    with pytest.raises(InputError, match="QDQ layout 'ort-u8s8' serves onnxruntime only, not tensorrt: "):
        check_serves(LAYOUTS["ort-u8s8"], "tensorrt")
    with pytest.raises(InputError, match="INT8 engine 'nncf' serves openvino only, not onnxruntime"):
        check_serves(get_option(INT8_ENGINES, "nncf"), "onnxruntime")


def test_quant_config_takes_its_choices_from_the_tables():
    assert [QuantConfig(layout=name).layout for name in LAYOUTS] == ["tensorrt", "ort-u8s8", "openvino"]
    assert [QuantConfig(method=name).method for name in METHODS] == ["minmax", "percentile", "entropy"]
    with pytest.raises(InputError, match="unknown QDQ layout 'u8'; choose one of: tensorrt, ort-u8s8, openvino$"):
        QuantConfig(layout="u8")
    with pytest.raises(InputError, match="unknown calibration method 'kl'; choose one of: minmax, percentile, entropy$"):
        QuantConfig(method="kl")
    with pytest.raises(InputError, match="unknown INT8 engine 'ptq'; choose one of: qdq, nncf$"):
        get_option(INT8_ENGINES, "ptq")
