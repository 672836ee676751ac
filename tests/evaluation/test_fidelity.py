"""Fidelity numbers on hand-computed logits."""
import numpy as np
import pytest

from medexport.errors import InputError
from medexport.evaluation import fidelity


def test_classification_fidelity():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    cand = np.array([[1.0, 2.5, 3.0], [3.0, 1.0, 4.0]])   # errors 0.5 and 4; second top-1 flips
    f = fidelity(ref, cand, task="classification")
    assert f == pytest.approx({"max_abs_error": 4.0, "mean_abs_error": 0.75,
                               "max_rel_error": 4.0 / 3.0, "top1_agreement": 0.5})


def test_segmentation_fidelity():
    ref_mask = np.array([[[0, 1], [1, 2]]])
    cand_mask = np.array([[[0, 1], [2, 2]]])
    onehot = lambda m: np.moveaxis(np.eye(4)[m], -1, 1)   # (N, K, H, W) logits, class 3 never predicted
    f = fidelity(onehot(ref_mask), onehot(cand_mask), task="segmentation", classes=["bg", "a", "b", "c"])
    assert f["voxel_agreement"] == 0.75
    # a: ref 2 voxels, cand 1, overlap 1 -> 2/3; b: ref 1, cand 2, overlap 1 -> 2/3; c: empty in both -> 1
    assert f["mask_dice"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 1.0})
    assert f["max_abs_error"] == 1.0 and f["mean_abs_error"] == pytest.approx(2 / 16)


def test_identical_logits_are_perfect():
    ref = np.random.default_rng(0).normal(size=(2, 3, 4, 4))
    f = fidelity(ref, ref.copy(), task="segmentation")
    assert f["max_abs_error"] == 0.0 and f["max_rel_error"] == 0.0 and f["voxel_agreement"] == 1.0
    assert list(f["mask_dice"]) == ["1", "2"]


def test_shape_mismatch_raises():
    with pytest.raises(InputError, match=r"\(2, 3\) and \(2, 4\)"):
        fidelity(np.zeros((2, 3)), np.zeros((2, 4)), task="classification")
