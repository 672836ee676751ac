"""The PyTorch model as a backend: the reference for parity, and GPU latency where a GPU exists."""
from medexport.runtimes.torch.runner import Runner

__all__ = ["Runner"]
