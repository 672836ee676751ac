"""Pruning schedules: activation scores, capped global ranking, iterative steps, guard rails with rollback."""
import time

import numpy as np
import pytest
import torch
from torch import nn

from medexport.compression import get_pass, list_passes
from medexport.compression.pruning import PruneConfig, allocate
from medexport.compression.pruning import importance
from medexport.compression.pruning.dependency import analyze
from medexport.compression.pruning.schedule import step_target
from medexport.errors import InputError
from medexport.evaluation import GuardRails, evaluate
from medexport.evaluation.validation import reference_data
from medexport.graph import capture, profile
from medexport.zoo import get_model


@pytest.fixture(scope="module")
def unet2d():
    ref = get_model("brain-tissue-unet2d")
    return ref, ref.build(), reference_data(ref), ref.calibration()


def _report(model, data):
    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    report, _ = evaluate(predict, data.images, data.labels, task=data.task, classes=data.classes,
                         roi_size=data.roi_size, spacing=data.spacing)
    return report


class _TwoConvs(nn.Module):
    """conv(1->8) -> ReLU -> conv(8->2): the hidden channels are what activation scores judge."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.a(x)))


def test_activation_scores_remove_the_channels_that_never_fire():
    model = _TwoConvs().eval()
    with torch.no_grad():  # channels 1, 3, 5, 7 have large weights but never fire on non-negative images
        model.a.weight[1::2] = -model.a.weight[1::2].abs() * 10
        model.a.bias[1::2] = -1.0
    images = get_model("brain-region-alexnet").calibration()[:8]
    small, record = get_pass("prune-act").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5, round_to=1,
                                                                                  calibration=images))
    x = torch.from_numpy(images)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)  # only dead channels went
    l2, _ = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5, round_to=1))
    with torch.no_grad():
        assert not torch.allclose(l2(x), model(x), atol=1e-3)  # the weight norm keeps the dead, large ones
    with pytest.raises(InputError, match="calibration"):
        get_pass("prune-act").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))


def test_global_scope_is_non_uniform_capped_and_removes_the_share_asked(unet2d):
    ref, model, _, calibration = unet2d
    captured = capture(model, ref.input_shape)
    graph = analyze(captured, model)
    macs = {c.name: c.macs for c in profile(captured).layers}
    config = PruneConfig(ratio=0.5, scope="global", max_ratio=0.75)
    targets, skipped = allocate(graph, config, importance.l2_norm, macs)
    widths = {g.name: g.channels for g in graph.groups}
    ratios = {n: 1 - k / widths[n] for n, k in targets.items()}
    assert all(r <= 0.75 + 1e-9 for r in ratios.values())
    assert len({round(r, 3) for r in ratios.values()}) >= 2  # non-uniform
    removed = sum(widths[n] - k for n, k in targets.items())
    assert 0.4 <= removed / sum(widths[n] for n in targets) <= 0.6  # rounding to 8 moves it a little
    assert all(k % 8 == 0 for n, k in targets.items() if widths[n] >= 16)
    assert "network output (head)" in skipped.values()


def test_iterative_steps_reach_the_one_shot_widths():
    assert [step_target(64, 32, s, 4, 8) for s in (1, 2, 3, 4)] == [56, 48, 40, 32]
    assert [step_target(16, 8, s, 3, 8) for s in (1, 2, 3)] == [16, 16, 8]
    model = get_model("brain-region-alexnet").build()
    one, r1 = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))
    it, r3 = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5, steps=3))
    assert [(g.name, g.kept) for g in r1.layers] == [(g.name, g.kept) for g in r3.layers]
    assert all(g.note == "3 step(s)" for g in r3.layers)


def test_a_step_that_breaks_the_guard_rails_is_rolled_back_and_its_group_locked(unet2d):
    ref, model, data, _ = unet2d
    rails = GuardRails(max_overall_drop=1.0, max_class_drop=3.0)
    config = PruneConfig(ratio=0.25, heldout=data, rails=rails)
    small, record = get_pass("prune-l2").apply(model, ref.input_shape, config)
    verdicts = [entry for entry in record.log if "passed" in entry]
    assert not verdicts[0]["passed"]  # pruning every group at once breaks the rails; one group alone does not
    locked = [r for r in record.skipped.values() if r.startswith("locked by guard rails")]
    assert locked and len(verdicts) == 1 + len(locked) + len(record.layers)  # each group then tried alone
    assert record.layers and record.macs_after < record.macs_before
    assert rails.check(_report(model, data), _report(small, data), artifact="pruned").passed
    assert record.to_dict()["config"]["guard_rails"] == rails.to_dict()


def test_each_step_is_recovered_before_the_guard_rails_judge_it(unet2d):
    """PruneConfig.recover (here 100 steps of distillation) runs on every step's pruned model before validation:
    the quarter of every group that breaks the rails all at once (the test above) holds them once recovered,
    so nothing is rolled back or locked."""
    from medexport.finetune import DistillConfig, distill

    ref, model, data, calibration = unet2d
    recovered = []

    def recover(pruned):
        recovered.append(sum(p.numel() for p in pruned.parameters()))
        return distill(pruned, model, calibration, DistillConfig(steps=100, seed=len(recovered)))[0]

    config = PruneConfig(ratio=0.25, steps=2, heldout=data, rails=GuardRails(1.0, 3.0), recover=recover)
    small, record = get_pass("prune-l2").apply(model, ref.input_shape, config)
    assert [entry["passed"] for entry in record.log if "passed" in entry] == [True, True]
    assert len(recovered) == 2 and recovered[1] < recovered[0]   # once per step, each on the smaller model
    assert not any(reason.startswith("locked") for reason in record.skipped.values())
    assert all(g.note == "2 step(s)" for g in record.layers) and "recover" not in record.to_dict()["config"]


@pytest.mark.slow
def test_the_guard_railed_iterative_search_on_the_2d_reference_model_takes_under_5_minutes(unet2d):
    ref, model, data, calibration = unet2d
    start = time.perf_counter()
    small, record = get_pass("prune-l2").apply(model, ref.input_shape, PruneConfig(
        ratio=0.5, steps=4, scope="global", calibration=calibration, heldout=data, rails=GuardRails(1.0, 3.0)))
    assert time.perf_counter() - start < 300
    assert record.macs_after < 0.8 * record.macs_before
    assert GuardRails(1.0, 3.0).check(_report(model, data), _report(small, data), artifact="pruned").passed


def test_schedule_options_are_validated_and_passes_registered():
    assert {"prune-act", "merge", "merge-medoid"} <= set(list_passes(family="pruning"))
    for bad in ({"scope": "model"}, {"max_ratio": 1.0}, {"steps": 0}):
        with pytest.raises(InputError):
            PruneConfig(**bad)
    assert "calibration" not in PruneConfig(calibration=np.zeros((1, 1, 8, 8))).to_dict()
