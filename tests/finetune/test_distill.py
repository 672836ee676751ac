"""Recovery fine-tuning: distillation from the original wins back what pruning lost, on real images."""
import copy

import numpy as np
import pytest

from medexport.errors import DataError, InputError
from medexport.finetune import DistillConfig, distill


def _dice(model, ref) -> float:
    import torch

    from medexport.evaluation import evaluate

    images, labels = ref.heldout()
    with torch.no_grad():
        report, _ = evaluate(lambda x: model(torch.from_numpy(x)).numpy(), images, labels, task=ref.task,
                             classes=list(ref.classes))
    return report.to_dict()["overall"]["dice"]["value"]


@pytest.fixture(scope="module")
def pruned():
    """The 2D reference U-Net, and a copy with half the channels of every group removed (L2, one shot)."""
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    teacher = ref.build()
    student, _ = get_pass("prune-l2").apply(copy.deepcopy(teacher), tuple(ref.input_shape), PruneConfig(ratio=0.5))
    return ref, teacher, student


def test_distillation_recovers_most_of_the_dice_pruning_lost_and_leaves_the_teacher_alone(pruned):
    import torch

    ref, teacher, student = pruned
    before = _dice(student, ref)
    weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    tuned, record = distill(copy.deepcopy(student), teacher, ref.calibration(), DistillConfig(steps=60, batch=4))
    after = _dice(tuned, ref)
    assert before < 0.5   # one-shot L2 at 50% breaks the white-matter class (measured 0.38 overall)
    assert after > 0.85   # 60 steps on the 32 bundled training-side slices (300 steps: 0.907, original 0.909)
    assert record.loss_last < record.loss_first / 2
    assert record.images == 32 and record.steps == 60 and record.batch == 4
    assert not tuned.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in weights.items())


def test_the_loss_is_zero_when_the_student_matches_and_handles_a_single_sigmoid_channel():
    import torch

    from medexport.finetune.distill import distillation_loss

    logits = torch.randn(2, 3, 8, 8)
    assert distillation_loss(logits, logits, 1.0, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    one = torch.randn(2, 1, 8, 8)
    assert distillation_loss(one, one, 1.0, 0.1) < distillation_loss(one, -one, 1.0, 0.1)


@pytest.mark.parametrize("images, error", [
    (np.full((4, 1, 128, 128), np.nan, np.float32), "NaN"),
    (np.zeros((4, 128, 128), np.float32), "shaped"),
    (np.zeros((0, 1, 128, 128), np.float32), "shaped"),
])
def test_bad_images_are_a_clear_error(pruned, images, error):
    ref, teacher, student = pruned
    with pytest.raises(DataError, match=error):
        distill(copy.deepcopy(student), teacher, images, DistillConfig(steps=1))


def test_a_student_with_other_outputs_cannot_be_distilled(pruned):
    import torch

    ref, teacher, _ = pruned
    other = torch.nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(InputError, match="differs from the original"):
        distill(other, teacher, ref.calibration()[:2], DistillConfig(steps=1))


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"lr": 0}, {"batch": 0}, {"logit_weight": -1}])
def test_bad_recipes_are_refused(kwargs):
    with pytest.raises(InputError):
        DistillConfig(**kwargs)

def test_the_loss_weighs_every_class_the_teacher_predicts_alike():
    """A student that misses the teacher's small class (4 of 64 positions) and matches the rest: the plain mean
    dilutes the miss 16-fold, the balanced loss halves it (two classes present), for softmax and sigmoid heads
    (the sigmoid's loss is a cross-entropy: the teacher's own entropy is its floor, so misses are compared)."""
    import torch

    from medexport.finetune.distill import distillation_loss

    for channels in (2, 1):
        teacher = torch.full((1, channels, 8, 8), -4.0)
        teacher[:, -1, :2, :2] = 4.0   # the small class: 4 positions
        student = teacher.clone()
        student[:, -1, :2, :2] = -4.0
        plain, balanced = (distillation_loss(student, teacher, 1.0, 0.0, balanced=b).item() -
                           distillation_loss(teacher, teacher, 1.0, 0.0, balanced=b).item() for b in (False, True))
        assert plain > 0 and balanced == pytest.approx(plain * 64 / 4 / 2, rel=1e-4)
