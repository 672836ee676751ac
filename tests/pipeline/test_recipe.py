"""One build with the user's calibration images, compression, fine-tuning and INT8: every calibration file is read
once, and `build --recipe` on its manifest reproduces its metrics and compression record, or refuses changed data."""
import json

import numpy as np
import pytest

from medexport.cli import cli
from medexport.errors import DataError, InputError

# rails relaxed: this is about reproducing a build, not about how well 10 fine-tuning steps recover 25% pruning
BUILD = ["build", "--compress", "prune-l2", "--ratio", "0.25", "--finetune", "10", "--precision", "int8",
         "--max-overall-drop", "100", "--max-class-drop", "100", "--no-latency"]


@pytest.fixture(scope="module")
def first_build(tmp_path_factory):
    """Real MRI slices (the reference model's training-side images) saved as .npy files, one build on them, and how
    often each file was opened."""
    from medexport.imaging import sources
    from medexport.zoo import get_model

    root = tmp_path_factory.mktemp("recipe")
    calib = root / "calib"
    calib.mkdir()
    for i, image in enumerate(get_model("brain-tissue-unet2d").calibration()[:12]):
        np.save(calib / f"slice{i:02d}.npy", image[0])
    reads: dict[str, int] = {}
    original = sources.read_unit

    def counted(fmt, paths):
        for path in paths:
            reads[path.name] = reads.get(path.name, 0) + 1
        return original(fmt, paths)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "read_unit", counted)
        main([*BUILD, "--calib", str(calib), "--out", str(root / "first")])
    return root, calib, reads


def test_each_calibration_file_is_read_once_per_build(first_build):
    """Pruning, fine-tuning and INT8 calibration all read the calibration images: from one read."""
    root, calib, reads = first_build
    assert reads == {path.name: 1 for path in calib.iterdir()}
    manifest = json.loads((root / "first" / "manifest.json").read_text())
    assert manifest["finetune"]["images"] == 12 and manifest["calibration"]["calibration_data"]["count"] == 12
    assert set(manifest["data_digests"]) == {"calibration", "labelled"}
    assert str(calib) not in json.dumps(manifest)   # the folder is named nowhere; the digests stand for it
    assert manifest["config"]["data"]["calib"] == "<given>"


def test_a_recipe_rebuilds_the_same_model_with_the_same_metrics(first_build):
    root, calib, _ = first_build
    main(["build", "--recipe", str(root / "first" / "manifest.json"), "--calib", str(calib),
          "--out", str(root / "again")])
    first, again = (json.loads((root / name / "manifest.json").read_text()) for name in ("first", "again"))
    assert again["config"] == first["config"]
    assert again["metrics"] == first["metrics"]
    assert _without_timings(again["compression"]) == _without_timings(first["compression"])
    assert again["compression"]["ratio"] > 1.5
    assert again["files"]["model.int8.qdq.onnx"]["sha256"] == first["files"]["model.int8.qdq.onnx"]["sha256"]


def test_a_recipe_refuses_changed_calibration_images(first_build, tmp_path):
    root, calib, _ = first_build
    changed = tmp_path / "calib"
    changed.mkdir()
    for path in calib.iterdir():
        image = np.load(path)
        np.save(changed / path.name, image if path.name != "slice03.npy" else np.flipud(image))
    with pytest.raises(DataError, match="calibration images differ from the ones the recipe was built with"):
        main(["build", "--recipe", str(root / "first" / "manifest.json"), "--calib", str(changed),
              "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_changed_images_are_refused_before_any_compression_work_in_fp32_too(first_build, tmp_path):
    """Without INT8 the calibration images are read for fine-tuning: the recorded digest is still checked at load,
    before compression, and a rebuild never goes into the recipe's own folder."""
    root, calib, _ = first_build
    manifest = json.loads((root / "first" / "manifest.json").read_text())
    manifest["config"]["quantization"]["precision"] = "fp32"
    recipe = tmp_path / "fp32" / "manifest.json"
    recipe.parent.mkdir()
    recipe.write_text(json.dumps(manifest))
    changed = tmp_path / "calib"
    changed.mkdir()
    for path in calib.iterdir():
        np.save(changed / path.name, np.load(path) * 0.5)
    with pytest.raises(DataError, match="calibration images differ"):
        main(["build", "--recipe", str(recipe), "--calib", str(changed)])
    assert not (tmp_path / "fp32-rebuild" / "manifest.json").exists()
    with pytest.raises(InputError, match="the recipe's own build folder"):
        main(["build", "--recipe", str(recipe), "--calib", str(calib), "--out", str(recipe.parent)])
    assert recipe.is_file()


def test_a_recipe_asks_for_the_images_it_does_not_keep_and_refuses_new_settings(first_build, tmp_path):
    root, _, _ = first_build
    recipe = str(root / "first" / "manifest.json")
    with pytest.raises(InputError, match="pass them again with --calib"):
        main(["build", "--recipe", recipe, "--out", str(tmp_path / "b")])
    with pytest.raises(InputError, match="--ratio, --target would change it|--target, --ratio would change it"):
        main(["build", "--recipe", recipe, "--target", "openvino", "--ratio", "0.5", "--out", str(tmp_path / "b")])


def main(args: list[str]) -> None:
    """The CLI in this process, its errors raised rather than printed (the one-line printing is tested elsewhere)."""
    cli.main(args=args, prog_name="medexport", standalone_mode=False)


def _without_timings(record):
    """A compression record without the wall-clock seconds it took."""
    if isinstance(record, dict):
        return {k: _without_timings(v) for k, v in record.items() if k != "seconds"}
    if isinstance(record, list):
        return [_without_timings(v) for v in record]
    return record
