"""Capture a model as a traced graph and profile its cost (MACs, FLOPs, params, activation memory)."""
from medexport.graph.capture import CapturedGraph, capture
from medexport.graph.profile import LayerCost, Profile, profile

__all__ = ["CapturedGraph", "capture", "LayerCost", "Profile", "profile"]
