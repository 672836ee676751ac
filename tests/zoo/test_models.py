"""Every shipped reference model: weights load safely, shapes are right, the card's numbers are real.

The card test re-measures each card's held-out metrics from the shipped weights and bundled data
with ``medexport.evaluation.evaluate`` (batches of 64, as the training scripts measured them) and
requires agreement within 1e-3 absolute: same data, same weights, same bootstrap seed, so only
floating-point noise of the CPU kernels may differ.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medexport.zoo import get_model, list_models

MODELS = list_models()
TOLERANCE = 1e-3

# Far better than chance (chance: Dice of a 3-class guess ~0.33, accuracy 1/6 ~ 0.17 on the
# balanced held-out set). Thresholds sit a few points below the measured values in the cards.
FLOORS = {
    "brain-tissue-unet2d": ("dice", 0.85),
    "brain-tissue-unet3d": ("dice", 0.80),
    "brain-region-alexnet": ("accuracy", 0.85),
}


def _predict(model: torch.nn.Module):
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return predict


@pytest.fixture(scope="module", params=MODELS)
def ref(request):
    return get_model(request.param)


def test_weights_load_with_weights_only_and_output_shape(ref):
    state = torch.load(ref.weights_path(), map_location="cpu", weights_only=True)
    model = ref.build()
    assert not model.training
    assert set(state) == set(model.state_dict())
    x = torch.from_numpy(ref.calibration()[:1])
    assert tuple(x.shape) == ref.input_shape
    with torch.no_grad():
        y = model(x)
    k = len(ref.classes)
    expected = (1, k) if ref.task == "classification" else (1, k, *ref.input_shape[2:])
    assert tuple(y.shape) == expected
    assert torch.isfinite(y).all()


def test_bundled_data_is_ready_for_the_model(ref):
    images, labels = ref.heldout()
    calib = ref.calibration()
    assert images.dtype == calib.dtype == np.float32 and labels.dtype == np.int64
    assert images.shape[1] == calib.shape[1] == ref.input_shape[1]
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    assert calib.shape[2:] == ref.input_shape[2:] and 8 <= len(calib) <= 64
    assert labels.shape == ((len(images),) if ref.task == "classification"
                            else (len(images), *images.shape[2:]))
    assert set(np.unique(labels)) == set(range(len(ref.classes)))
    if ref.roi_size is None:
        assert images.shape[2:] == ref.input_shape[2:]


def test_shipped_files_are_small_and_documented(ref):
    assert ref.weights_path().stat().st_size < 4_000_000
    assert ref.data_path().stat().st_size < 4_000_000
    card = ref.card_path().read_text()
    for words in ("Held-out metrics", "Split", "Training time", "Limitations", "licence"):
        assert words.lower() in card.lower(), words
    assert "±" in card


def test_totals_within_budget():
    refs = [get_model(n) for n in MODELS]
    assert sum(r.weights_path().stat().st_size for r in refs) < 8_000_000
    assert sum(r.data_path().stat().st_size for r in refs) < 8_000_000


def test_card_metrics_remeasured_from_shipped_weights(ref):
    from medexport.evaluation import evaluate

    images, labels = ref.heldout()
    report, _ = evaluate(_predict(ref.build()), images, labels, task=ref.task, classes=ref.classes,
                         roi_size=ref.roi_size, spacing=ref.spacing, batch_size=64)
    measured, card = report.to_dict(), ref.card_metrics()
    assert measured["n"] == card["n"] and set(measured["per_class"]) == set(card["per_class"])
    pairs = [(f"overall.{m}", e, card["overall"][m]) for m, e in measured["overall"].items()]
    pairs += [(f"{c}.{m}", e, card["per_class"][c][m])
              for c, row in measured["per_class"].items() for m, e in row.items()]
    for where, got, want in pairs:
        for key in ("value", "se"):
            g, w = got[key], want[key]
            assert (g is None) == (w is None), where
            assert g is None or math.isclose(g, w, abs_tol=TOLERANCE), f"{where}.{key}: {g} vs card {w}"


def test_far_better_than_chance(ref):
    metric, floor = FLOORS[ref.name]
    card = ref.card_metrics()
    assert card["overall"][metric]["value"] > floor
    per_class = [row[card["class_metric"]]["value"] for row in card["per_class"].values()]
    assert min(per_class) > floor - 0.2   # every class, not just the average, is learned
