"""predict_all batching and sliding windows, and evaluate end to end with numpy predictors."""
import numpy as np
import pytest

from medexport.errors import DataError, InputError
from medexport.evaluation import evaluate, predict_all, segmentation_report

RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 2)).astype(np.float32)     # a 1x1 conv, 2 channels in, 3 classes out
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def conv1x1(x: np.ndarray) -> np.ndarray:
    """Translation-equivariant, so tiling the image cannot change its output."""
    return np.einsum("kc,bc...->bk...", W, x) + B.reshape((1, 3) + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("shape,roi", [((3, 2, 40, 37), (16, 16)), ((2, 2, 20, 9, 18), (8, 8, 8))])
def test_sliding_window_equals_direct_prediction(shape, roi):
    images = RNG.normal(size=shape).astype(np.float32)
    calls = []

    def predict(x):
        calls.append(x.shape)
        return conv1x1(x)

    tiled = predict_all(predict, images, batch_size=2, roi_size=roi)
    assert all(c[2:] == roi for c in calls)            # really tiled
    np.testing.assert_allclose(tiled, conv1x1(images), rtol=1e-5, atol=1e-5)


def test_batches_and_skips_window_when_image_fits():
    images = RNG.normal(size=(5, 2, 8, 8)).astype(np.float32)
    calls = []

    def predict(x):
        calls.append(len(x))
        return conv1x1(x)

    out = predict_all(predict, images, batch_size=2, roi_size=(8, 8))
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(out, conv1x1(images), rtol=1e-6)


def test_nan_output_raises_data_error():
    images = np.zeros((3, 2, 4, 4), dtype=np.float32)

    def predict(x):
        out = conv1x1(x)
        out[-1, 0, 0, 0] = np.nan
        return out

    with pytest.raises(DataError, match=r"1 non-finite values .* images \[1\]"):
        predict_all(predict, images, batch_size=2)


def test_bad_roi_raises_input_error():
    with pytest.raises(InputError, match="roi_size"):
        predict_all(conv1x1, np.zeros((1, 2, 4, 4), np.float32), roi_size=(4, 4, 4))


def test_evaluate_segmentation_matches_report_on_argmax():
    images = RNG.normal(size=(4, 2, 12, 12)).astype(np.float32)
    labels = RNG.integers(0, 3, size=(4, 1, 12, 12))
    report, logits = evaluate(conv1x1, images, labels, task="segmentation", classes=["bg", "a", "b"],
                              roi_size=(8, 8), batch_size=3, spacing=(1.0, 1.0))
    expected = segmentation_report(labels[:, 0], conv1x1(images).argmax(1), ["bg", "a", "b"],
                                   spacing=(1.0, 1.0))
    assert report.to_dict() == expected.to_dict()
    assert logits.shape == (4, 3, 12, 12)


def test_evaluate_can_skip_hd95_and_take_fewer_resamples_for_repeated_checks():
    """What the pruning guard asks for on every step: the same Dice, no HD95, a 100-resample SE."""
    images = RNG.normal(size=(6, 2, 12, 12)).astype(np.float32)
    labels = RNG.integers(0, 3, size=(6, 1, 12, 12))
    report, _ = evaluate(conv1x1, images, labels, task="segmentation", classes=["bg", "a", "b"], hd95=False,
                         n_boot=100)
    expected = segmentation_report(labels[:, 0], conv1x1(images).argmax(1), ["bg", "a", "b"], hd95=False, n_boot=100)
    assert report.to_dict() == expected.to_dict()
    assert "hd95" not in report.overall and "hd95" not in report.per_class["a"]
    full, _ = evaluate(conv1x1, images, labels, task="segmentation", classes=["bg", "a", "b"])
    assert report.overall["dice"].value == full.overall["dice"].value
    assert report.overall["dice"].se != full.overall["dice"].se   # 100 vs 1000 bootstrap resamples


def test_evaluate_classification():
    images = np.zeros((4, 1, 2, 2), dtype=np.float32)
    images[[1, 3]] = 1.0

    def predict(x):
        m = x.mean(axis=(1, 2, 3))
        return np.stack([1 - m, m], axis=1)            # class 1 for bright images

    report, _ = evaluate(predict, images, np.array([0, 1, 1, 1]), task="classification", classes=["n", "p"])
    assert report.overall["accuracy"].value == 0.75
    assert report.per_class["p"]["sensitivity"].value == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="task"):
        evaluate(predict, images, np.zeros(4, int), task="detection", classes=["n", "p"])
