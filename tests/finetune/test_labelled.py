"""Fine-tuning on labelled images: Dice + cross-entropy, early stopping on the guard-rail headroom of a held-aside
split, and checkpoints that a resumed run continues from exactly."""
import copy

import numpy as np
import pytest

from medexport.errors import DataError, InputError
from medexport.evaluation import GuardRails
from medexport.evaluation.validation import LabelledData
from medexport.finetune import LabelledConfig, finetune_on_labels
from medexport.finetune.labelled import labelled_loss, split_indices
from tests._interrupt import interrupt_at


@pytest.fixture(scope="module")
def pruned():
    """The 2D reference U-Net, a copy with half the channels of every group removed (L2, one shot), and its
    held-out slices split in two: 14 to fine-tune on, 13 to judge."""
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    original = ref.build()
    student, _ = get_pass("prune-l2").apply(copy.deepcopy(original), tuple(ref.input_shape), PruneConfig(ratio=0.5))
    images, labels = ref.heldout()
    train = LabelledData(images[::2], labels[::2], ref.task, ref.classes, "even slices")
    judge = LabelledData(images[1::2], labels[1::2], ref.task, ref.classes, "odd slices")
    return original, student, train, judge


def _dice(model, data) -> dict:
    import torch

    from medexport.evaluation import evaluate

    with torch.no_grad():
        report, _ = evaluate(lambda x: model(torch.from_numpy(x)).numpy(), data.images, data.labels, task=data.task,
                             classes=list(data.classes), hd95=False, n_boot=0)
    return {name: metrics["dice"].value for name, metrics in report.per_class.items()}


@pytest.mark.slow   # 6 s quiet
def test_labels_win_back_the_dice_pruning_lost_and_keep_the_best_checked_weights(pruned):
    original, student, train, judge = pruned
    before = _dice(student, judge)
    tuned, record = finetune_on_labels(copy.deepcopy(student), original, train,
                                       LabelledConfig(steps=40, batch=4, eval_every=10), GuardRails())
    after = _dice(tuned, judge)
    assert before["white_matter"] < 0.2   # one-shot L2 at 50% loses the white matter
    assert min(after.values()) > 0.75 and after["white_matter"] > before["white_matter"] + 0.5
    assert record.method == "labels" and record.loss.startswith("Dice + cross-entropy")
    assert (record.images, record.val_images, record.steps) == (11, 3, 40)
    early = record.early_stopping
    assert [step for step, _ in early["history"]] == [0, 10, 20, 30, 40]
    assert early["best_points"] == pytest.approx(max(points for _, points in early["history"]), abs=1e-3)
    assert early["history"][0][1] < -30   # the pruned start breaks the rails by tens of points on the split
    assert not tuned.training


def test_early_stopping_stops_after_patience_checks_without_a_better_headroom(pruned):
    original, _, train, _ = pruned
    # the original itself: nothing beats its own headroom (the limits), so the first check stops the run
    tuned, record = finetune_on_labels(copy.deepcopy(original), original, train,
                                       LabelledConfig(steps=40, batch=2, eval_every=5, patience=1, lr=1e-2),
                                       GuardRails(max_overall_drop=1.0, max_class_drop=3.0))
    assert record.steps == 5 and record.early_stopping["best_step"] == 0
    assert record.early_stopping["best_points"] == pytest.approx(1.0)   # the tightest rail: the overall limit
    assert all(np.array_equal(a, b) for a, b in zip(tuned.state_dict().values(), original.state_dict().values()))


def test_a_resumed_run_continues_where_it_stopped(pruned, tmp_path, monkeypatch):
    """Interrupted after 10 of 16 steps (checkpoints every 4): the resumed run starts from step 8 and ends with the
    weights, losses and early-stopping checks of a run never interrupted."""
    import torch

    import medexport.finetune.labelled as labelled

    original, student, train, _ = pruned
    config = LabelledConfig(steps=16, batch=2, eval_every=4, patience=10)
    whole, whole_record = finetune_on_labels(copy.deepcopy(student), original, train, config, GuardRails())

    view = interrupt_at(monkeypatch, 11)
    path = tmp_path / "round-0.pt"
    with pytest.raises(KeyboardInterrupt):
        finetune_on_labels(copy.deepcopy(student), original, train, config, GuardRails(), checkpoint=path)
    monkeypatch.setattr(labelled, "random_labelled_view", view)
    resumed, record = finetune_on_labels(copy.deepcopy(student), original, train, config, GuardRails(),
                                         checkpoint=path, resume=True)
    assert record.resumed_from == 8 and record.steps == 16
    assert record.early_stopping["history"] == whole_record.early_stopping["history"]
    assert record.loss_last == whole_record.loss_last
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=1e-6)
    # a finished run resumed runs no step and returns its weights
    again, done = finetune_on_labels(copy.deepcopy(student), original, train, config, GuardRails(), checkpoint=path,
                                     resume=True)
    assert done.resumed_from == 16 and done.steps == 16
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), resumed.state_dict().values()))
    # another run's checkpoint (other options) is refused, not continued
    with pytest.raises(DataError, match="belongs to another run"):
        finetune_on_labels(copy.deepcopy(student), original, train, LabelledConfig(steps=16, batch=2, lr=2e-3),
                           GuardRails(), checkpoint=path, resume=True)


def test_the_loss_is_dice_plus_cross_entropy_for_masks_and_cross_entropy_for_classes():
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits, masks = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, masks[:, None])
    assert labelled_loss("segmentation")(logits, masks).item() == pytest.approx(expected.item())
    right = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 20
    assert labelled_loss("segmentation")(right, masks) < 0.01 < labelled_loss("segmentation")(-right, masks)
    scores, classes = torch.randn(4, 6), torch.tensor([0, 5, 2, 2])
    assert labelled_loss("classification")(scores, classes).item() == pytest.approx(
        F.cross_entropy(scores, classes).item())


def test_the_held_aside_split_is_the_same_every_round_and_never_empty():
    train, val = split_indices(27, 0.2)
    assert len(val) == 5 and len(train) == 22 and not set(train) & set(val)
    assert np.array_equal(split_indices(27, 0.2)[1], val)
    assert [len(part) for part in split_indices(2, 0.1)] == [1, 1]
    assert len(split_indices(5, 0.0)[1]) == 0
    with pytest.raises(DataError, match="at least 2"):
        split_indices(1, 0.2)
    with pytest.raises(InputError, match="--finetune-val"):
        LabelledConfig(val_fraction=1.0)


def test_3d_volumes_train_on_patches_of_the_window_size_with_their_masks():
    """The 3D reference's held-out volumes (80x24x21) are tiled by 48^3 windows at inference: training draws
    48^3 patches, padded where a volume is smaller, the mask moved with the image."""
    import torch

    from medexport.finetune.labelled import _patch_size, _patches
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet3d")
    images, labels = ref.heldout()
    patch = _patch_size(ref.roi_size, images.shape[2:])
    x, y = _patches(torch.from_numpy(images[:2]), torch.from_numpy(labels[:2]), patch, np.random.default_rng(0))
    assert tuple(x.shape) == (2, 1, 48, 48, 48) and tuple(y.shape) == (2, 48, 48, 48)
    assert (y[x[:, 0] == float(images[:2].min())] == 0).float().mean() > 0.99   # padding is background
    brain = x[:, 0] > 0.2
    assert (y[brain] > 0).float().mean() > 0.5   # bright voxels are tissue: the mask moved with its image
