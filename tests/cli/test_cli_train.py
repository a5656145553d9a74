"""``microseg train`` and ``microseg finetune``: the new model is usable by name at once."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from napari_microseg.cli import CommandError, main
from napari_microseg.cli.train import initialise_from, model_pixel_size, read_config
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.build import ARCHITECTURES, create_model
from napari_microseg.core.training.settings import TrainSettings

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("user_folder")


@pytest.fixture
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=2)
    image, labels = tmp_path / "nuclei.tif", tmp_path / "nuclei_labels.tif"
    tifffile.imwrite(image, sample.image)
    tifffile.imwrite(labels, sample.labels)
    return image, labels


def usable_names() -> set[str]:
    return {e.name for e in registry.list_models(include_unusable=False)}


def test_finetune_saves_a_new_version_usable_by_name(image_files, capsys):
    torch.manual_seed(0)
    parent = create_model("unet", name="tiny", depth=2, base_width=8)
    parent.card.recommended["adaptation"] = {"label_free": True, "learning_rate": 2e-4}
    registry.save_user_model(parent)
    image, labels = image_files
    code = main(
        [
            "finetune",
            "--model",
            "tiny",
            "--image",
            str(image),
            "--labels",
            str(labels),
            "--name",
            "tiny-cli",
            "--steps",
            "3",
            "--device",
            "cpu",
            "--patch-size",
            "48",
            "--always-save",  # 3 steps of an untrained parent need not beat it
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "tiny-cli" and summary["parent"] == "tiny"
    assert summary["steps"] == 3 and "dice" in summary["metrics_after"]
    assert summary["recipe"]["smooth"] is None  # the card records no training noise level
    assert {"tiny", "tiny-cli"} <= usable_names()
    child = registry.load_model("tiny-cli", device="cpu").card
    assert child.parent == "tiny"
    assert child.lineage["settings"]["learning_rate"] == 2e-4  # the parent card's recommendation


def test_finetune_learns_from_several_separate_images(image_files, tmp_path, capsys, monkeypatch):
    from napari_microseg.core.training import recipe

    measured: list[list[str]] = []
    statistics_batches = recipe.statistics_batches

    def recording(model, pairs, **kwargs):
        measured.append([pair.name for pair in pairs])
        return statistics_batches(model, pairs, **kwargs)

    monkeypatch.setattr(recipe, "statistics_batches", recording)
    torch.manual_seed(0)
    tiny = create_model("unet", name="tiny", depth=2, base_width=8, batch_norm=True)
    registry.save_user_model(tiny)
    image, labels = image_files
    # A second image of another shape: stacking it with the first would not even be possible.
    other = synthetic.fluorescence_nuclei((64, 96), n_objects=8, seed=3)
    other_image, other_labels = tmp_path / "other.tif", tmp_path / "other_labels.tif"
    tifffile.imwrite(other_image, other.image)
    tifffile.imwrite(other_labels, other.labels)
    args = ["finetune", "--model", "tiny", "--name", "tiny-two", "--steps", "3"]
    args += ["--image", str(image), "--labels", str(labels)]
    args += ["--image", str(other_image), "--labels", str(other_labels)]
    # And an image nobody corrected: its batch-norm statistics only.
    uncorrected = tmp_path / "uncorrected.tif"
    tifffile.imwrite(uncorrected, synthetic.fluorescence_nuclei((72, 72), seed=4).image)
    args += ["--unlabelled", str(uncorrected)]
    assert main([*args, "--device", "cpu", "--patch-size", "48", "--always-save", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "tiny-two" and summary["steps"] == 3
    child = registry.load_model("tiny-two", device="cpu").card
    assert child.lineage["data"]["planes"] == 2  # the uncorrected image is not trained on
    assert child.lineage["unlabelled_images"] == ["uncorrected.tif"]
    # The label-free start measured its statistics on all three images.
    assert measured[0] == ["image 1", "other.tif", "uncorrected.tif"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "c.tif"], "2 --image but 1 --labels"),
        (["--image", "c.tif", "--labels", "d.tif", "--slices", "1"], "--slices names the slices"),
        (
            ["--image", "c.tif", "--labels", "d.tif", "--annotated", "m.tif"],
            "1 --annotated for 2 --image",
        ),
    ],
)
def test_several_images_that_do_not_pair_up_are_refused_first(extra, message, capsys):
    args = ["finetune", "--model", "nowhere", "--name", "x", "--image", "a.tif"]
    assert main([*args, "--labels", "b.tif", *extra]) == 2
    # Refused before the model or any file is read.
    assert message in capsys.readouterr().err


def test_a_wrong_kind_of_image_among_several_is_named(tmp_path):
    from napari_microseg.core.progress import drain
    from napari_microseg.core.training.data import TrainingDataError
    from napari_microseg.core.training.jobs import finetune

    grey = create_model("unet", name="grey", depth=2, base_width=8)
    grey.card.modality = "fluorescence"
    sample = synthetic.fluorescence_nuclei((48, 48), n_objects=4, seed=1)
    colour = np.repeat(sample.image[..., None], 3, axis=-1)
    colour[..., 0] = 0  # not a grey image saved in colour
    with pytest.raises(TrainingDataError, match=r"^image 2: The image is in colour"):
        drain(
            finetune(grey, sample.image, sample.labels, more=[(colour, sample.labels)], save=False),
            show=False,
        )
    with pytest.raises(TrainingDataError, match=r"^unlabelled image 1: The image is in colour"):
        drain(
            finetune(grey, sample.image, sample.labels, unlabelled=[colour], save=False),
            show=False,
        )


def test_finetune_passes_the_file_pixel_size_on(tmp_path, record_call):
    from napari_microseg.core.io.writers import write_image

    sample = synthetic.fluorescence_nuclei((40, 40), n_objects=4, seed=2)
    image = write_image(tmp_path / "cells.tif", sample.image, scale=(0.5, 0.5))
    labels = tmp_path / "cells_labels.tif"
    tifffile.imwrite(labels, sample.labels)
    registry.save_user_model(create_model("unet", name="tiny", depth=2, base_width=8))
    seen = record_call("napari_microseg.core.training.jobs.finetune")
    args = ["finetune", "--model", "tiny", "--image", str(image), "--labels", str(labels)]
    with pytest.raises(record_call.stop):
        main([*args, "--name", "tiny-scaled"])
    # The job resamples planes far from the model's pixel size, as prediction does.
    assert tuple(seen["spacing"]) == pytest.approx((0.5, 0.5))
    assert seen["settings"].choose_threshold  # the session's threshold, by default
    with pytest.raises(record_call.stop):
        main([*args, "--name", "tiny-same-threshold", "--keep-threshold"])
    assert not seen["settings"].choose_threshold
    # A card that advises against training on one image, and the flag that overrides it.
    advised = create_model("unet", name="tiny-one", depth=2, base_width=8)
    advised.card.recommended["adaptation"] = {"train_on_one_image": False}
    registry.save_user_model(advised)
    one = ["finetune", "--model", "tiny-one", "--image", str(image), "--labels", str(labels)]
    with pytest.raises(record_call.stop):
        main([*one, "--name", "tiny-one-a"])
    assert not seen["settings"].train_one_plane
    with pytest.raises(record_call.stop):
        main([*one, "--name", "tiny-one-b", "--train-one-image"])
    assert seen["settings"].train_one_plane


def test_finetune_bad_input_is_one_clear_line(image_files, tmp_path, capsys):
    registry.save_user_model(create_model("unet", name="tiny", depth=2, base_width=8))
    image, _ = image_files
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.ones((40, 40), np.uint8))
    code = main(
        [
            "finetune",
            "--model",
            "tiny",
            "--image",
            str(image),
            "--labels",
            str(wrong),
            "--name",
            "x",
            "--steps",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "microseg finetune: error:" in err and "shaped (40, 40)" in err
    code = main(
        [
            "finetune",
            "--model",
            "tiny",
            "--image",
            str(image),
            "--labels",
            str(wrong),
            "--name",
            "x",
            "--minutes",
            "0",
        ]
    )
    assert code == 2 and "time budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "finetune",
                "--model",
                "tiny",
                "--image",
                "a",
                "--labels",
                "b",
                "--name",
                "x",
                "--steps",
                "2",
                "--minutes",
                "1",
            ]
        )


def fake_lucchi(folder: Path) -> Path:
    folder.mkdir()
    sample = synthetic.fibsem_mitochondria((4, 48, 48), n_objects=10, seed=5)
    for split in ("train", "val"):
        tifffile.imwrite(folder / f"{split}_images.tif", sample.image)
        tifffile.imwrite(folder / f"{split}_masks.tif", (sample.labels > 0).astype(np.uint8) * 255)
    return folder


def test_train_from_a_config_with_a_data_override(tmp_path, capsys):
    data = fake_lucchi(tmp_path / "lucchi")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "name: mini-mito\nfamily: unet\nclasses: [background, mitochondrion]\n"
        "hyperparameters: {depth: 2, base_width: 4}\n"
        "data: {path: does/not/matter, kind: lucchi}\n"
        "training: {steps: 50, patch_size: 32, batch_size: 2, augment: light}\n"
    )
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--data",
            str(data),
            "--steps",
            "2",
            "--device",
            "cpu",
            "--checkpoint",
            str(tmp_path / "ck.pt"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    model = registry.load_model("mini-mito", device="cpu")
    assert model.card.lineage["steps"] == 2 and model.card.pixel_size_um == 0.005
    assert "given separately" in model.card.lineage["validation"]
    assert list(model.card.metrics)[:3] == ["dice", "iou", "object_f1"]
    assert not (tmp_path / "ck.pt").exists()  # the run ended: nothing left to resume

    # The documented retrain command of a model that exists saves a new one beside it.
    capsys.readouterr()
    again = ["train", "--config", str(config), "--data", str(data), "--steps", "1"]
    assert main([*again, "--device", "cpu", "--checkpoint", str(tmp_path / "ck2.pt")]) == 0
    assert "'mini-mito' already exists; this one will be saved as 'mini-mito-2'" in (
        capsys.readouterr().out
    )
    assert registry.load_model("mini-mito-2", device="cpu").card.lineage["steps"] == 1
    assert registry.load_model("mini-mito", device="cpu").card.lineage["steps"] == 2
    # An explicit --name that is taken is refused, not changed.
    assert main([*again, "--name", "mini-mito", "--device", "cpu"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_train_can_start_from_a_saved_model_of_the_same_network(tmp_path, capsys):
    data = fake_lucchi(tmp_path / "lucchi")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "name: warm\nfamily: unet\nclasses: [background, mitochondrion]\n"
        "hyperparameters: {depth: 2, base_width: 4}\n"
        "data: {kind: lucchi}\ntraining: {steps: 50, patch_size: 32, batch_size: 2}\n"
    )
    base = ["train", "--config", str(config), "--data", str(data), "--device", "cpu"]
    assert main([*base, "--steps", "1", "--name", "first"]) == 0, capsys.readouterr().err
    first = registry.load_model("first", device="cpu")
    assert "initial_weights" not in first.card.lineage
    fresh = create_model(
        "unet", name="x", classes=["background", "mitochondrion"], depth=2, base_width=4
    )
    initialise_from(fresh, "first")
    for key, value in first.module.state_dict().items():
        assert torch.equal(value, fresh.module.state_dict()[key]), key
    capsys.readouterr()
    assert main([*base, "--steps", "1", "--name", "second", "--init", "first"]) == 0
    assert "Starting from the weights of 'first'" in capsys.readouterr().out
    second = registry.load_model("second", device="cpu").card
    start = second.lineage["initial_weights"]
    assert start["model"] == "first" and len(start["sha256"]) == 64
    assert "trained from the weights of first on" in second.trained_on

    # Another network is refused before training, with what differs.
    config.write_text(config.read_text().replace("base_width: 4", "base_width: 8"))
    assert main([*base, "--steps", "1", "--name", "third", "--init", "first"]) == 2
    assert "layers differ from the config's network" in capsys.readouterr().err
    assert main([*base, "--steps", "1", "--name", "third", "--init", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert "third" not in usable_names()


def test_a_config_pixel_size_trains_on_resampled_images(tmp_path, capsys):
    data = fake_lucchi(tmp_path / "lucchi")  # 48 x 48 pixels of 5 nm
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "name: coarse\nfamily: unet\nclasses: [background, mitochondrion]\n"
        "hyperparameters: {depth: 2, base_width: 4}\npixel_size_um: 0.01\n"
        "data: {kind: lucchi}\ntraining: {steps: 1, patch_size: 16, batch_size: 2}\n"
    )
    assert main(["train", "--config", str(config), "--data", str(data), "--device", "cpu"]) == 0
    streams = capsys.readouterr()
    assert "Resampling 48x48 to 24x24 pixels (0.5x)" in streams.out + streams.err
    assert registry.load_model("coarse", device="cpu").card.pixel_size_um == 0.01


def test_a_config_pixel_size_needs_data_with_one():
    no_size = SimpleNamespace(pixel_size_um=None, description="DSB 2018 nuclei", kind="dsb2018")
    sized = SimpleNamespace(pixel_size_um=0.62, description="GlaS", kind="glas")
    assert model_pixel_size({}, sized) == 0.62 and model_pixel_size({}, no_size) is None
    assert model_pixel_size({"pixel_size_um": 1.24}, sized) == 1.24
    with pytest.raises(CommandError, match="DSB 2018 nuclei has none"):
        model_pixel_size({"pixel_size_um": 1.24}, no_size)
    for bad in (0, -1, "1.2", True):
        with pytest.raises(CommandError, match="positive number"):
            model_pixel_size({"pixel_size_um": bad}, sized)


def test_train_config_errors(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("name: x\nfamily: unet\nlearning_rate: 1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown key(s) learning_rate" in capsys.readouterr().err
    config.write_text("name: x\nfamily: unet\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "No data" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_configs_are_valid(path):
    config = read_config(path)
    assert config["family"] in ARCHITECTURES
    TrainSettings.from_dict(config["training"]).validate()
    create_model(
        config["family"],
        name=config["name"],
        in_channels=config["in_channels"],
        classes=config["classes"],
        **config["hyperparameters"],
    )


def test_the_report_says_a_threshold_chosen_on_the_annotations(capsys):
    from types import SimpleNamespace

    from napari_microseg.cli.finetune import report

    lineage = {
        "metrics_before": {"dice": 0.8},
        "metrics_after": {"dice": 0.85},
        "recipe": {"kept": "trained"},
        "threshold": {"card": 0.75, "chosen": 0.9, "dice": {"0.75": 0.86, "0.9": 0.88}},
    }
    model = SimpleNamespace(name="mito-em-2", card=SimpleNamespace(lineage=lineage, parent="m"))
    report(model)
    assert "segmentation threshold 0.75 -> 0.9, chosen on the annotated pixels" in (
        capsys.readouterr().out
    )
    report(model, as_json=True)
    assert json.loads(capsys.readouterr().out)["threshold"]["chosen"] == 0.9
    unchanged = {**lineage, "threshold": {**lineage["threshold"], "chosen": 0.75}}
    report(SimpleNamespace(name="m2", card=SimpleNamespace(lineage=unchanged, parent="m")))
    assert "segmentation threshold" not in capsys.readouterr().out


def test_the_report_says_a_one_image_run_took_no_step(capsys):
    from types import SimpleNamespace

    from napari_microseg.cli.finetune import report

    lineage = {
        "metrics_before": {"dice": 0.75},
        "metrics_after": {"dice": 0.79},
        "recipe": {"kept": "smoothed parent", "smooth": 1.0, "gradient_steps": False},
        "steps": 0,
        "stopped": "one image",
        "duration_s": 4.2,
    }
    report(SimpleNamespace(name="n-2", card=SimpleNamespace(lineage=lineage, parent="n")))
    out = capsys.readouterr().out
    assert (
        "Saved 'n-2' (no gradient steps: one annotated image, as the parent's card advises" in out
    )
    assert "validation dice: 0.750 -> 0.790" in out
    kept = {**lineage, "recipe": {"kept": "parent", "gradient_steps": False}}
    report(SimpleNamespace(name="n", card=SimpleNamespace(lineage=kept, parent=None)))
    assert "no label-free correction beat it on the annotated pixels (one image: no training)" in (
        capsys.readouterr().out
    )
