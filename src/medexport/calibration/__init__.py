"""calibration stage: real calibration images in, one QDQ ONNX (or NNCF's OpenVINO IR) out.

The images come from :mod:`medexport.imaging`; this package computes the ranges, places the Q/DQ
nodes, checks them against TensorRT's explicit-quantization rules and keeps sensitive layers in float.
"""
