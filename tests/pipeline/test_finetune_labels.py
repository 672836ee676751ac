"""`--finetune STEPS --finetune-data ...`: pruning recovered on the user's labelled images in the chain, judged on
other images, and resumed after an interruption from the checkpoints the failed run left in --out."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from medexport.errors import DataError, InputError
from medexport.evaluation import GuardRails
from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, CompressionConfig, DataConfig, run_compress
from tests._interrupt import interrupt_at
from medexport.pipeline._outdir import CHECKPOINTS


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The 2D reference's held-out slices as two .npz files: even ones to fine-tune on, odd ones to judge."""
    from medexport.zoo import get_model

    images, labels = get_model("brain-tissue-unet2d").heldout()
    folder = tmp_path_factory.mktemp("labelled")
    np.savez(folder / "tune.npz", images=images[::2], labels=labels[::2])
    np.savez(folder / "judge.npz", images=images[1::2], labels=labels[1::2])
    np.savez(folder / "heldout.npz", images=images, labels=labels)
    return folder


def _config(out, split, **data) -> BuildConfig:
    return BuildConfig(model=ModelSpec(), out_dir=out, rails=GuardRails(max_overall_drop=100, max_class_drop=100),
                       compression=CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5}, 20, finetune_val=0.2),
                       data=DataConfig(finetune_data=str(split / "tune.npz"), **data))


@pytest.mark.slow   # prunes, fine-tunes, exports and validates twice: 20-60 s on 2 shared cores
def test_an_interrupted_compress_resumes_its_fine_tuning_from_the_checkpoint_it_left(tmp_path, split, monkeypatch):
    import medexport.finetune.labelled as labelled

    out = tmp_path / "out"   # not there before: a failure removes what it wrote, except the checkpoints
    config = _config(out, split, data=str(split / "judge.npz"))
    view = interrupt_at(monkeypatch, 16)
    with pytest.raises(KeyboardInterrupt):
        run_compress(config)
    assert [p.name for p in out.iterdir()] == [CHECKPOINTS]
    assert [p.name for p in (out / CHECKPOINTS).iterdir()] == ["round-0.pt"]
    monkeypatch.setattr(labelled, "random_labelled_view", view)
    result = run_compress(dataclasses.replace(config, resume=True))
    tuned = result["finetune"]
    assert tuned["method"] == "labels" and tuned["resumed_from"] == 14 and tuned["steps"] == 20   # every 2 steps
    assert (tuned["images"], tuned["val_images"]) == (11, 3) and "14 user images" in tuned["data"]["source"]
    assert [step for step, _ in tuned["early_stopping"]["history"]] == list(range(0, 21, 2))
    assert result["validation"]["data"].startswith("13 user images")   # judged on the other slices
    assert not (out / CHECKPOINTS).exists()   # the command succeeded: nothing left to resume
    assert json.loads((out / "compress.json").read_text())["finetune"]["resumed_from"] == 14


def test_fine_tuning_on_the_images_the_guard_rails_judge_is_refused(tmp_path, split):
    from medexport.pipeline.context import RunContext

    same = BuildConfig(model=ModelSpec(), out_dir=tmp_path, compression=CompressionConfig.from_flags(
        "prune-l2", {"--ratio": 0.5}, 20), data=DataConfig(finetune_data=str(split / "heldout.npz")))
    with pytest.raises(DataError, match="the images the guard rails judge"):   # the reference's held-out set
        RunContext(same).read_inputs()
    with pytest.raises(InputError, match="the images the guard rails judge"):
        _config(tmp_path, split, data=str(split / "tune.npz"))


@pytest.mark.parametrize("change, message", [
    ({"compression": CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5})}, "add --finetune STEPS"),
    ({"data": DataConfig(), "resume": True}, "distillation has none to continue from"),
    ({"data": DataConfig(), "compression": CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5}, 20,
                                                                        finetune_val=0.3)},
     "--finetune-val and --patience steer fine-tuning on labels"),
    ({"compression": CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5}, 20, max_memory=2 ** 30)},
     "--act-compress and --max-memory apply to distillation for now"),
])
def test_label_options_without_what_they_need_are_refused(tmp_path, split, change, message):
    with pytest.raises(InputError, match=message):
        dataclasses.replace(_config(tmp_path, split), **change)


def test_a_failed_command_keeps_only_its_checkpoints_and_a_successful_one_drops_them(tmp_path):
    from medexport.pipeline._outdir import staged

    out = tmp_path / "new"
    with pytest.raises(RuntimeError), staged(out, build=True) as staging:
        (staging / "model.onnx").write_text("x")
        (out / CHECKPOINTS).mkdir(parents=True)
        (out / CHECKPOINTS / "round-0.pt").write_text("state")
        (out / "stray").write_text("written by this command")
        raise RuntimeError("interrupted")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [CHECKPOINTS, f"{CHECKPOINTS}/round-0.pt"]
    with staged(out, build=True) as staging:
        (staging / "model.onnx").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_the_recipe_records_the_label_options_but_not_the_paths(tmp_path, split):
    config = _config(tmp_path, split)
    config = dataclasses.replace(config, compression=dataclasses.replace(config.compression, patience=3))
    recorded = config.to_dict()
    assert recorded["data"]["finetune_data"] == "<given>" and recorded["compression"]["patience"] == 3
    again = BuildConfig.from_dict(recorded, out_dir=tmp_path)
    assert again.compression == config.compression and again.data.missing() == ["--finetune-data"]


def test_cli_refuses_finetune_data_without_steps_in_one_line(tmp_path, split):
    proc = subprocess.run([sys.executable, "-m", "medexport", "compress", "--method", "prune-l2", "--finetune-data",
                           str(split / "tune.npz"), "--out", "c"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "add --finetune STEPS" in proc.stderr
