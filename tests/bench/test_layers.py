"""Per-layer MACs from medexport.graph.profile land on the ONNX nodes a runtime's profiler names."""
import onnx

from medexport.bench.layers import module_path, with_macs
from medexport.exporter.onnx_export import export_onnx
from medexport.graph import capture, profile
from medexport.loading import ModelSpec, load_model
from tests._nets import MONAI_NETS


def test_module_path_folds_torch_scopes():
    assert module_path("/model/model.1/submodule/submodule.0/conv/conv.0/Conv") == "model.1.submodule.0.conv.0"
    assert module_path("/layer1/layer1.0/conv1/Conv_quant") == "layer1.0.conv1"
    assert module_path("Conv_12") == ""


def test_every_convolution_of_a_monai_unet_gets_its_macs(tmp_path):
    factory, kwargs, _ = MONAI_NETS["unet2d"]
    shape = (1, 1, 32, 32)
    module = load_model(ModelSpec(model=factory, model_kwargs=kwargs, input_shape=shape)).module
    layers = profile(capture(module, shape)).to_dict()["layers"]
    onnx_path = export_onnx(module, shape, tmp_path / "unet.onnx", dynamic_batch=True, simplify=False).path
    nodes = onnx.load(str(onnx_path)).graph.node
    # what the per-node profiler returns, built here: every node with a made-up time
    times = [{"node": n.name, "op_type": n.op_type, "precision": "FP32", "ms": 0.1} for n in nodes]
    joined = with_macs(times, [{"node": l["name"], "macs": l["macs"]} for l in layers if l["macs"]])
    convs = [row for row in joined if row["op_type"] in ("Conv", "ConvTranspose")]
    assert convs and all(row["macs"] for row in convs)
    assert sum(row["macs"] for row in convs) == sum(l["macs"] for l in layers if l["kind"].startswith("Conv"))
    assert all(row["macs"] is None for row in joined if row["op_type"] in ("Relu", "PRelu", "Add", "Concat"))
