"""medexport: turn a trained PyTorch medical-imaging network into fast, verified deployment artifacts.

Importing the package is cheap: backends (OpenVINO, TensorRT) and heavy libraries are imported
only inside the functions that use them.
"""
from medexport.errors import MedexportError

__version__ = "0.1.0"
__all__ = ["MedexportError", "__version__"]
