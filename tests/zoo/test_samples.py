"""real_inputs: real brain images at any input shape, for parity checks."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.errors import InputError
from medexport.zoo.samples import real_inputs


@pytest.mark.parametrize("shape, n", [
    ((1, 1, 128, 128), 4),
    ((1, 3, 224, 224), 2),
    ((1, 1, 37, 61), 5),
    ((1, 2, 48, 48, 48), 3),
    ((1, 1, 16, 33, 7), 1),
    ((1, 1, 96, 96, 96), 2),
    ((1, 1, 128, 128), 40),
])
def test_shapes_range_and_real_content(shape, n):
    x = real_inputs(shape, n)
    assert x.shape == (n, *shape[1:]) and x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.std() > 0.05 and (x == 0).mean() < 0.9                 # an image, not a blank
    np.testing.assert_array_equal(x[:, :1].repeat(shape[1], axis=1), x)   # grey over channels
    if n > 1:
        assert not np.array_equal(x[0], x[-1])                       # different images


def test_deterministic():
    np.testing.assert_array_equal(real_inputs((1, 1, 64, 64), 3), real_inputs((1, 1, 64, 64), 3))


def test_native_size_is_the_heldout_image_itself():
    from medexport.zoo import get_model

    images, _ = get_model("brain-tissue-unet2d").heldout()
    np.testing.assert_array_equal(real_inputs((1, 1, 128, 128), 1)[0], images[len(images) // 2])


@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 1, 2, 2, 2, 2), (1, 0, 64, 64), (1, 1, -4, 64)])
def test_bad_shape_rejected(shape):
    with pytest.raises(InputError, match="input_shape"):
        real_inputs(shape)


def test_bad_n_rejected():
    with pytest.raises(InputError, match="n must be"):
        real_inputs((1, 1, 64, 64), 0)
