"""Calibration images for the quantizer: checked against the model input, hashed, fed in batches.

No images, NaN/Inf images or images of the wrong shape are a DataError: INT8 scales are never
computed from anything but the real images the user gave.
"""
from __future__ import annotations

import hashlib

import numpy as np

from medexport.errors import DataError


def checked_images(images: np.ndarray, input_shape: list[int | None]) -> np.ndarray:
    """``images`` as contiguous float32 (N, *input_shape[1:]), or a DataError saying what is wrong."""
    if images is None or not hasattr(images, "shape") or images.size == 0 or images.ndim == 0 or len(images) == 0:
        raise DataError("no calibration images: INT8 calibration needs real images from the model's domain")
    if images.ndim != len(input_shape) or any(
            want is not None and want != got for want, got in zip(input_shape[1:], images.shape[1:])):
        shown = "x".join("N" if d is None else str(d) for d in input_shape)
        raise DataError(f"calibration images of shape {'x'.join(map(str, images.shape))} do not match "
                        f"the model input {shown}")
    if not np.issubdtype(images.dtype, np.number):
        raise DataError(f"calibration images must be numeric, got dtype {images.dtype}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
    if bad:
        raise DataError(f"{bad} of {len(images)} calibration images contain NaN or Inf")
    return images


def images_sha256(images: np.ndarray) -> str:
    """sha256 of the float32 array (shape included): identifies the calibration set in a manifest."""
    h = hashlib.sha256(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    return h.hexdigest()


def batch_reader(images: np.ndarray, input_name: str, batch_size: int):
    """An onnxruntime ``CalibrationDataReader`` yielding ``{input_name: batch}`` over ``images``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _BatchReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = ({input_name: images[i:i + batch_size]} for i in range(0, len(images), batch_size))

        def __len__(self) -> int:
            return -(-len(images) // batch_size)

    return _BatchReader()
