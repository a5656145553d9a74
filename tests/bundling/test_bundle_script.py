"""scripts/bundle_model.py end to end, on a small synthetic data set in the Lucchi layout.

A tiny U-Net is trained for two steps with ``microseg train`` (into the test's
private user folder), then bundled into a temporary folder with a temporary
``models.md``: nothing touches the package's real bundled folder or docs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

from napari_microseg.cli import main as microseg
from napari_microseg.core.models.bundled import MANIFEST_NAME, card_problems
from napari_microseg.core.models.checkpoint import inspect_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
name: tiny-fib
family: unet
in_channels: 1
classes: [background, mitochondrion]
hyperparameters: {depth: 2, base_width: 4}
description: Tiny U-Net for the bundling test.
recommended: {tile_size: 64, overlap: 0.25}
data: {kind: lucchi}
training: {steps: 2, batch_size: 2, patch_size: 64, val_every: 2, seed: 0}
"""


def _script():
    return load_script("bundle_model")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Lucchi-layout data set, its config, and the user folder holding the trained model."""
    import tifffile

    from napari_microseg.core.io.synthetic import fibsem_mitochondria

    base = tmp_path_factory.mktemp("bundle")
    data = base / "lucchi"
    data.mkdir()
    for split, depth, seed in (("train", 4, 1), ("val", 2, 2)):
        sample = fibsem_mitochondria((depth, 96, 96), n_objects=12, seed=seed)
        tifffile.imwrite(data / f"{split}_images.tif", sample.image, photometric="minisblack")
        mask = ((sample.labels > 0) * 255).astype(np.uint8)
        tifffile.imwrite(data / f"{split}_masks.tif", mask, photometric="minisblack")
    config = base / "tiny-fib.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    models = base / "models"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NAPARI_MICROSEG_MODELS", str(models))
        assert microseg(["train", "--config", str(config), "--data", str(data)]) == 0
    return {"data": data, "config": config, "models": models}


def _run(script, trained, tmp_path, *extra: str) -> int:
    args = ["tiny-fib", "--data", str(trained["data"]), "--config", str(trained["config"])]
    args += ["--out", str(tmp_path / "bundled"), "--docs", str(tmp_path / "docs" / "models.md")]
    args += ["--speed-size", "64", "--repeats", "1", "--device", "cpu", *extra]
    return script.main(args)


def test_bundling_writes_a_complete_float16_model_its_manifest_and_docs(
    trained, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(trained["models"]))
    script = _script()
    assert _run(script, trained, tmp_path) == 0
    out = capsys.readouterr().out
    assert "microseg evaluate" in out and "foreground Dice" in out
    weights = tmp_path / "bundled" / "tiny-fib.safetensors"
    info = inspect_checkpoint(weights)
    assert info.dtype == "float16" and card_problems(info.card) == []
    card = info.card
    assert card.metrics["target"]["metric"] == "pixel_f1"
    assert card.metrics["data"].startswith("validation split: ")
    assert "own validation part" in card.metrics["data"]
    assert card.lineage["dataset"]["kind"] == "lucchi"
    assert card.lineage["retrain_command"].startswith("microseg train --config ")
    assert card.recommended["tile_size"] == 64 and card.recommended["speed"]["threads"] >= 1
    manifest = json.loads((tmp_path / "bundled" / MANIFEST_NAME).read_text())
    assert manifest["models"]["tiny-fib"]["sha256"] == info.sha256
    load_checkpoint(weights, device="cpu")  # the hash matches
    docs = (tmp_path / "docs" / "models.md").read_text()
    assert "<!-- bundled:tiny-fib -->" in docs and "| [tiny-fib](#tiny-fib) |" in docs
    assert "not bundled yet" in docs  # the models still to come
    assert (tmp_path / "docs" / "models" / "tiny-fib-training.csv").is_file()
    assert docs.count("\n- ") == 1

    # Again: refused without --overwrite; with it the section is replaced, its log and
    # the notes written by hand after the log kept.
    with pytest.raises(SystemExit, match="exists already"):
        _run(script, trained, tmp_path)
    note = "Why the target is missed: a note written by hand.\n- and a bullet of it"
    (tmp_path / "docs" / "models.md").write_text(
        docs.replace("<!-- /bundled:tiny-fib -->", f"{note}\n<!-- /bundled:tiny-fib -->")
    )
    assert _run(script, trained, tmp_path, "--overwrite") == 0
    docs = (tmp_path / "docs" / "models.md").read_text()
    assert docs.count("<!-- bundled:tiny-fib -->") == 1 and docs.count("\n- 20") == 2
    assert docs.count(note) == 1
    assert docs.index("\n- 20") < docs.index(note) < docs.index("<!-- /bundled:tiny-fib -->")

    # The benchmark times any model file on its own.
    capsys.readouterr()
    bench = script._bench_module()
    assert bench.main([str(weights), "--size", "64", "--repeats", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "tiny-fib" and row["mpx_per_s_cpu"] > 0 and row["tile_size"] == 64
    assert row["other_load"] is None or row["other_load"] >= 0

    # The shipped file re-evaluates to the same score, writing nothing.
    before = sorted(p.name for p in (tmp_path / "bundled").iterdir())
    capsys.readouterr()
    assert _run(script, trained, tmp_path, "--model", str(weights), "--evaluate-only") == 0
    again = capsys.readouterr().out
    value = card.metrics["target"]["value"]
    assert f"foreground Dice: {value:.4f}" in again
    assert sorted(p.name for p in (tmp_path / "bundled").iterdir()) == before


def test_other_data_than_training_used_is_refused(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(trained["models"]))
    with pytest.raises(SystemExit, match="not the data"):
        _run(_script(), trained, tmp_path, "--limit", "2", "--evaluate-only")
    assert not (tmp_path / "bundled").exists()


def test_an_unknown_model_says_where_it_looked(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(trained["models"]))
    with pytest.raises(SystemExit, match="tiny-fib"):
        _script().main(["nope", "--data", str(trained["data"]), "--kind", "lucchi"])


def test_the_retrain_command_names_the_weights_a_warm_start_began_from(tmp_path):
    script = _script()
    config = {"training": {"steps": 100, "minutes": 10}}
    lineage = {
        "settings": {"steps": 100, "minutes": 95, "seed": 0},
        "initial_weights": {"model": "gland-he", "sha256": "0" * 64},
    }
    command = script.retrain_command(tmp_path / "c.yaml", tmp_path / "glas", lineage, config)
    assert command.endswith("--minutes 95 --init gland-he")
    assert "--init" not in script.retrain_command(None, tmp_path, {"settings": {}}, config)
    # Trained at 1.24 µm, then pooled inside the network: both steps reproduce it.
    lineage["downsampled"] = {"factor": 2, "pixel_size_um_learnt": 1.24}
    command = script.retrain_command(None, tmp_path, lineage, {**config, "name": "gland-he-half"})
    assert command.endswith(
        "--init gland-he && python scripts/downsample_model.py gland-he-half --factor 2 "
        "--out gland-he-half-d2"
    )
    # Began from a narrow model made wider: the widening comes first.
    lineage["initial_weights"]["model"] = "third-w32"
    lineage["initial_weights"]["widened"] = {
        "model": "third", "base_width_from": 16, "base_width_to": 32, "noise": 0.01, "seed": 0
    }  # fmt: skip
    command = script.retrain_command(None, tmp_path, lineage, {**config, "name": "third-wide"})
    assert command.startswith(
        "python scripts/widen_model.py third --base-width 32 --noise 0.01 --seed 0 "
        "--out third-w32 && microseg train --data "
    )
    assert "--init third-w32.safetensors && python scripts/downsample_model.py" in command


def test_postprocess_takes_the_long_json_tune_postprocess_prints_or_a_file(tmp_path):
    script = _script()
    tuned = {"schema": 1, "method": "watershed", "threshold": 0.95, "boundary_class": 2}
    tuned.update({f"option_{i}": None for i in range(40)})  # longer than a file name may be
    assert script.parse_postprocess(json.dumps(tuned)) == tuned
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"recommended": {"postprocess": {"method": "otsu"}}}))
    assert script.parse_postprocess(str(card)) == {"method": "otsu"}
    with pytest.raises(SystemExit, match="not a JSON object or a readable JSON file"):
        script.parse_postprocess(str(tmp_path / "missing.json"))


def test_a_met_target_clears_an_earlier_miss_from_the_description():
    script = _script()
    before = (
        "Mask R-CNN for nuclei. Below its issue #8 target on the validation split: mean AP "
        "0.324 < 0.4. What should close the gap: hours on a GPU."
    )
    assert script.target_description(before, "mean AP", 0.43, 0.4, met=True) == (
        "Mask R-CNN for nuclei."
    )
    assert script.target_description(before, "mean AP", 0.35, 0.4, met=False) == (
        "Mask R-CNN for nuclei. Below its issue #8 target on the validation split: mean AP "
        "0.350 < 0.4."
    )


def test_other_load_takes_this_process_out_of_the_machine_busy_time():
    bench = _script()._bench_module()
    # 10 s: the machine was busy for 25 CPU-seconds, 18 of them this process's own threads.
    assert bench.other_load((100.0, 50.0, 3.0), (110.0, 75.0, 21.0)) == 0.7
    # Only this process busy: nobody else; counters that cannot be read: unknown.
    assert bench.other_load((0.0, 0.0, 0.0), (10.0, 19.0, 20.0)) == 0.0
    assert bench.other_load(None, (10.0, 1.0, 1.0)) is None
    assert bench.other_load((5.0, 1.0, 1.0), (5.0, 2.0, 1.0)) is None


@pytest.mark.parametrize(
    ("speed", "busy"),
    [
        ({"cores": 2, "other_load": 0.1, "load_average": 1.9}, False),  # own threads only
        ({"cores": 2, "other_load": 0.9, "load_average": 1.9}, True),
        ({"cores": 2, "other_load": None, "load_average": 1.9}, True),
        ({"cores": 2, "other_load": None, "load_average": 0.4}, False),
        ({"cores": 2}, False),
    ],
)
def test_a_busy_machine_is_judged_on_other_processes_first(speed, busy):
    warning = _script().busy_warning(speed)
    assert bool(warning) is busy
    if busy:
        assert "Re-run with --overwrite when it is idle" in warning


def test_metric_interval_bootstraps_the_images_of_an_evaluate_csv(tmp_path):
    from napari_microseg.core.evaluation.evaluate import write_csv

    rows = [{"image": f"img{i}", "object_f1": f1} for i, f1 in enumerate([1.0, 1.0, 0.8, 0.8])]
    table = write_csv(tmp_path / "evaluate.csv", [*rows, {"image": "mean", "object_f1": 0.9}])
    interval = _script().metric_interval(table, "object_f1")
    # The mean row is not an image; four images give 0.9 within [0.8, 1.0].
    assert (interval.n, interval.low, interval.high) == (4, 0.8, 1.0)
    assert interval.mean == pytest.approx(0.9)
    assert _script().metric_interval(table, "pixel_f1") is None
