"""The build report says how the compressed model was fine-tuned: on which images, and what early stopping kept."""
from medexport.bench.report import _compression_lines

RECORD = {"method": "prune-l2", "macs_before": 4e9, "macs_after": 1e9, "ratio": 4.0, "params_before": 1000,
          "params_after": 250, "params_ratio": 4.0, "layers": []}


def test_fine_tuning_on_labels_is_reported_with_its_images_and_the_step_kept():
    tuned = {"method": "labels", "steps": 300, "images": 54, "val_images": 13, "loss": "Dice + cross-entropy",
             "loss_first": 0.8, "loss_last": 0.2, "data": {"count": 67, "source": "67 user images (sha256 ab)"},
             "early_stopping": {"best_step": 240, "best_points": 2.5, "metric": "dice headroom under the guard rails"}}
    text = "\n".join(_compression_lines(RECORD, tuned))
    assert "Fine-tuned on labelled images (67 user images (sha256 ab)): 300 steps on 54 of them" in text
    assert "Dice + cross-entropy 0.800 -> 0.200" in text
    assert "13 images held aside kept step 240 (+2.5 points of dice headroom under the guard rails)" in text
    assert "from the original" not in text
