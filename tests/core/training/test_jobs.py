"""train() / finetune(): sparse annotation, validation split, lineage, Cancel, bad input."""

from __future__ import annotations

import errno
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.versions import SaveError
from napari_microseg.core.progress import drain
from napari_microseg.core.training.data import (
    Plane,
    TrainingDataError,
    TrainingPair,
    annotated_slices,
    parse_slices,
    prepare,
)
from napari_microseg.core.training.jobs import finetune, train
from napari_microseg.core.training.settings import TrainingError, TrainingWarning, TrainSettings
from napari_microseg.core.training.split import split_validation

pytestmark = pytest.mark.usefixtures("user_folder")


@pytest.fixture
def parent():
    """A tiny untrained U-Net saved in the user folder as 'tiny'."""
    torch.manual_seed(0)
    model = create_model("unet", name="tiny", depth=2, base_width=8)
    registry.save_user_model(model)
    return model


@pytest.fixture(scope="module")
def nuclei():
    return synthetic.fluorescence_nuclei((96, 96), n_objects=12, seed=1)


def quick(**overrides) -> TrainSettings:
    base = {
        "steps": 20,
        "minutes": None,
        "patch_size": 48,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "val_every": 10,
        "warmup_steps": 2,
    }
    return TrainSettings.for_finetune(**{**base, **overrides})


def sparse_stack():
    """A 6-slice FIB-SEM-like stack whose labels are painted on slices 1 and 4 only."""
    sample = synthetic.fibsem_mitochondria((6, 64, 64), n_objects=14, seed=3)
    labels = np.zeros_like(sample.labels)
    labels[[1, 4]] = sample.labels[[1, 4]]
    return sample.image, labels


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- sparse data


def test_annotated_slices_are_found_or_given(parent):
    image, labels = sparse_stack()
    assert annotated_slices(labels) == [1, 4]
    data = prepare([TrainingPair(image, labels)], parent)
    assert [p.name for p in data.planes] == ["image 1 z=1", "image 1 z=4"]
    only = prepare([TrainingPair(image, labels, slices=[4])], parent)
    assert [p.name for p in only.planes] == ["image 1 z=4"]
    assert parse_slices("3, 10-12") == [3, 10, 11, 12]
    assert len(data.data_hash) == 64 and data.data_hash != only.data_hash


def test_an_explicit_annotated_region_is_all_that_counts(parent, nuclei):
    annotated = np.zeros(nuclei.labels.shape, bool)
    annotated[:, :50] = True
    data = prepare([TrainingPair(nuclei.image, nuclei.labels, annotated)], parent)
    assert np.array_equal(data.planes[0].annotated, annotated)


def test_planes_far_from_the_model_pixel_size_are_resampled_to_it(parent):
    from dataclasses import replace

    parent.card = replace(parent.card, pixel_size_um=0.625)
    labels = np.zeros((32, 48), np.int32)
    labels[4:12, 8:20] = 1
    labels[20:28, 30:44] = 2
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    annotated = np.zeros(labels.shape, bool)
    annotated[:, :24] = True

    # 1.25 µm pixels, twice the model's: every plane doubles in Y and X.
    data = prepare([TrainingPair(image, labels, annotated, spacing=(1.25, 1.25))], parent)
    plane = data.planes[0]
    assert plane.image.shape == (1, 64, 96)
    assert plane.instances.shape == plane.target.shape == plane.annotated.shape == (64, 96)
    assert np.array_equal(plane.annotated, np.repeat(np.repeat(annotated, 2, 0), 2, 1))
    # Nearest neighbour keeps the ids: each object covers four times its pixels.
    assert np.count_nonzero(plane.instances) == 4 * np.count_nonzero(labels)
    assert data.summary["images"][0]["resampled"] == [2.0, 2.0]
    assert any("Resampling 32x48 to 64x96" in note for note in data.notes)
    assert plane.zoom == (2.0, 2.0)
    # The held-out strip is told in the image's pixels, which the user annotated.
    _, val_regions, text = split_validation(data.planes, fraction=0.2)
    rows, cols = np.nonzero(val_regions[0].mask)
    held = (
        ("rows", rows.min(), rows.max()) if "rows" in text else ("columns", cols.min(), cols.max())
    )
    kind, first, last = held
    assert f"{kind} {first // 2}-{last // 2} ({first}-{last} at the model's pixel size)" in text

    # An unknown pixel size (napari's scale 1) or a near one leaves the planes as they are.
    for spacing in (None, (1.0, 1.0), (0.7, 0.7)):
        same = prepare([TrainingPair(image, labels, annotated, spacing=spacing)], parent)
        assert same.planes[0].image.shape == (1, 32, 48)
        assert same.summary["images"][0]["resampled"] is None
        assert same.planes[0].zoom is None
        assert "pixel size" not in split_validation(same.planes, fraction=0.2)[2]

    # Many images resampled alike: one note for all, not one per image.
    many = [
        TrainingPair(image, labels, annotated, spacing=(1.25, 1.25), name=f"im{i}")
        for i in range(5)
    ]
    notes = [note for note in prepare(many, parent).notes if "Resampling" in note]
    assert notes == [
        "5 of 5 images resampled to the model's pixel size, as prediction will; the first: "
        "im0: Resampling 32x48 to 64x96 pixels (2x), the model's 625 nm per pixel"
    ]


def test_two_planes_are_split_into_strips(parent):
    image, labels = sparse_stack()
    data = prepare([TrainingPair(image, labels)], parent)
    train_regions, val_regions, text = split_validation(data.planes, fraction=0.2)
    assert len(val_regions) == 2 and "strip" in text
    for tr, va in zip(train_regions, val_regions):
        assert not (tr.mask & va.mask).any()
        assert np.array_equal(tr.mask | va.mask, tr.plane.annotated)
        assert 0.1 < va.pixels / tr.plane.annotated.sum() < 0.35
        assert va.objects > 0 and tr.objects > 0


def grid_plane(name: str, spots: list[tuple[int, int]]) -> Plane:
    """A 64 x 64 plane with a 6 x 6 object at each (row, column) of ``spots``."""
    ids = np.zeros((64, 64), np.uint16)
    for i, (r, c) in enumerate(spots, start=1):
        ids[r : r + 6, c : c + 6] = i
    return Plane(
        np.zeros((1, 64, 64), np.float32),
        ids,
        (ids > 0).astype(np.uint8),
        np.ones((64, 64), bool),
        name,
    )


def test_neighbouring_slices_hold_out_different_sides():
    # Two identical slices (a stack's neighbours): every side holds the same share of objects.
    spots = [(r, c) for r in (3, 29, 55) for c in (3, 29, 55)]
    planes = [grid_plane("z4", spots), grid_plane("z6", spots)]
    _, val_regions, text = split_validation(planes, fraction=0.2)
    first, second = (region.mask for region in val_regions)
    assert not (first & second).any(), text  # not the same region twice
    assert all(region.objects > 0 for region in val_regions)


def test_a_used_side_is_still_taken_when_only_it_holds_objects():
    top_only = [(3, 20), (3, 38), (29, 29)]  # only the top strip holds objects
    planes = [grid_plane("a", top_only), grid_plane("b", top_only)]
    _, val_regions, text = split_validation(planes, fraction=0.2)
    assert all(region.objects > 0 for region in val_regions), text
    assert np.array_equal(val_regions[0].mask, val_regions[1].mask)


def test_many_planes_hold_out_whole_planes():
    planes = []
    for i in range(6):
        ids = np.zeros((32, 32), np.uint16)
        ids[4:10, 4 + i : 12 + i] = 1
        planes.append(
            Plane(
                np.zeros((1, 32, 32), np.float32),
                ids,
                (ids > 0).astype(np.uint8),
                np.ones((32, 32), bool),
                f"p{i}",
            )
        )
    train_regions, val_regions, text = split_validation(planes, fraction=0.2)
    assert len(val_regions) == 1 and len(train_regions) == 5 and "planes held out" in text


# ----------------------------------------------------------------------------- fine-tuning


def test_a_short_finetune_improves_dice_and_records_lineage(parent, nuclei, user_folder):
    parent_file = user_folder / "tiny.safetensors"
    before_hash = file_hash(parent_file)
    events = []
    model = drain(
        finetune(
            "tiny", nuclei.image, nuclei.labels, name="tiny-nuclei", settings=quick(), device="cpu"
        ),
        show=False,
        on_progress=events.append,
    )
    lineage = model.card.lineage
    before, after = lineage["metrics_before"]["dice"], lineage["metrics_after"]["dice"]
    assert after > before + 0.2 and after > 0.7
    # Lineage: parent, data hash, settings, metrics before/after, time.
    assert model.card.parent == "tiny" and lineage["parent"] == "tiny"
    assert lineage["parent_sha256"] and len(lineage["data_sha256"]) == 64
    assert lineage["settings"]["steps"] == 20 and lineage["steps"] == 20
    assert lineage["started"] <= lineage["finished"] and lineage["duration_s"] >= 0
    assert model.card.metrics["dice"] == after and "held-out" in model.card.metrics["data"]
    # Listed at once, loadable by name, the parent untouched and still listed.
    entries = {e.name: e for e in registry.list_models(include_unusable=False)}
    assert entries["tiny-nuclei"].lineage == ("tiny",) and "tiny" in entries
    reloaded = registry.load_model("tiny-nuclei", device="cpu")
    assert reloaded.card.lineage["data_sha256"] == lineage["data_sha256"]
    assert file_hash(parent_file) == before_hash
    # Live-curve information for the widget.
    phases = [e.info.get("phase") for e in events]
    assert phases[0] == "prepare" and "baseline" in phases and phases[-1] == "done"
    train_events = [e for e in events if e.info.get("phase") == "train"]
    assert len(train_events) == 20 and all("loss" in e.info for e in train_events)
    assert any("val_dice" in e.info for e in events if e.info.get("phase") == "validate")


def test_cancel_keeps_a_draft_and_leaves_the_parent_intact(parent, nuclei, user_folder):
    parent_file = user_folder / "tiny.safetensors"
    before_hash = file_hash(parent_file)
    before_weights = weights_of(parent.module)
    job = finetune(
        parent,
        nuclei.image,
        nuclei.labels,
        name="tiny-cancel",
        settings=quick(steps=50, val_every=3),
        device="cpu",
    )
    for event in job:
        if event.info.get("phase") == "train" and event.step == 7:
            break
    job.close()
    assert file_hash(parent_file) == before_hash
    after_weights = weights_of(parent.module)
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights)
    names = {e.name for e in registry.list_models(include_unusable=False)}
    assert "tiny-cancel-draft" in names and "tiny-cancel" not in names
    draft = registry.load_model("tiny-cancel-draft", device="cpu")
    assert draft.card.parent == "tiny" and draft.card.lineage["draft"] is True


def test_a_seed_makes_a_step_budgeted_run_reproducible(parent, nuclei):
    runs = [
        drain(
            finetune(
                parent,
                nuclei.image,
                nuclei.labels,
                settings=quick(steps=4, seed=5),
                device="cpu",
                save=False,
            ),
            show=False,
        )
        for _ in range(2)
    ]
    first, second = (weights_of(m.module) for m in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("patience", [2, 3])
def test_training_stops_after_patience_validations_without_improvement(nuclei, patience):
    torch.manual_seed(0)
    fresh = create_model("unet", name="tiny-stop", depth=2, base_width=8)
    # No validation after the first can gain 0.9 Dice, so each one counts against patience.
    settings = TrainSettings(
        steps=40, patch_size=48, batch_size=2, val_every=2, patience=patience, min_delta=0.9
    )
    data = [(nuclei.image, nuclei.labels)]
    model = drain(train(fresh, data, settings=settings, device="cpu", save=False), show=False)
    lineage = model.card.lineage
    assert lineage["stopped"] == "early stop"
    # Step 2 sets the best; the next `patience` validations (2 steps apart) do not beat it.
    assert lineage["steps"] == 2 + 2 * patience
    assert lineage["best_step"] == 2
    assert [h["step"] for h in lineage["history"]] == list(range(2, 3 + 2 * patience, 2))


def test_freezing_the_encoder_trains_only_the_decoder(parent, nuclei):
    model = drain(
        finetune(
            parent,
            nuclei.image,
            nuclei.labels,
            settings=quick(steps=3, freeze_encoder=True, keep_better_start=False),
            device="cpu",
            save=False,
        ),
        show=False,
    )
    old, new = parent.module.state_dict(), model.module.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old if k.startswith("encoders."))
    assert not all(torch.equal(old[k], new[k]) for k in old if k.startswith("decoders."))


def test_boundary_models_get_a_boundary_target(nuclei):
    model = create_model(
        "unet", name="three", classes=["background", "nucleus", "boundary"], depth=2, base_width=4
    )
    data = prepare([TrainingPair(nuclei.image, nuclei.labels)], model)
    assert set(np.unique(data.planes[0].target)) == {0, 1, 2}


def test_micronet_trains_with_deep_supervision(nuclei):
    torch.manual_seed(0)
    model = create_model("micronet", name="micro", depth=3, base_width=4)
    calls = []
    original = model.module.forward_with_aux
    model.module.forward_with_aux = lambda x: calls.append(1) or original(x)
    result = drain(
        finetune(
            model,
            nuclei.image,
            nuclei.labels,
            device="cpu",
            save=False,
            settings=quick(steps=2, patch_size=64),
        ),
        show=False,
    )
    assert len(calls) == 2 and result.card.lineage["steps"] == 2


# ----------------------------------------------------------------------------- bad input


def test_no_annotated_pixels_is_a_clear_error(parent):
    image, labels = sparse_stack()
    with pytest.raises(TrainingDataError, match="no annotated pixels"):
        drain(finetune(parent, image, np.zeros_like(labels), settings=quick()), show=False)


def test_background_only_annotation_is_a_clear_error(parent):
    image, labels = sparse_stack()
    with pytest.raises(TrainingDataError, match="no object"):
        drain(
            finetune(parent, image, np.zeros_like(labels), slices=[2], settings=quick()), show=False
        )


def test_labels_of_another_shape_are_a_clear_error(parent, nuclei):
    with pytest.raises(TrainingDataError, match=r"labels are shaped \(96, 90\)"):
        drain(finetune(parent, nuclei.image, nuclei.labels[:, :90], settings=quick()), show=False)


def test_slices_outside_the_stack_and_two_channels_for_a_grey_model(parent):
    image, labels = sparse_stack()
    with pytest.raises(TrainingDataError, match="outside the stack"):
        drain(finetune(parent, image, labels, slices=[9], settings=quick()), show=False)
    # RGB is made grey as in prediction (tests/robustness/test_channels.py); two channels are not.
    two = np.zeros((32, 32, 2), np.uint8)
    with pytest.raises(ModelError, match="greyscale"):
        drain(
            finetune(parent, two, np.ones((32, 32), np.uint8), axes="YXC", settings=quick()),
            show=False,
        )


@pytest.mark.parametrize("budget", [{"minutes": 0}, {"minutes": -1}, {"steps": 0}])
def test_a_zero_budget_is_a_clear_error(parent, nuclei, budget):
    with pytest.raises(TrainingError, match="budget"):
        drain(finetune(parent, nuclei.image, nuclei.labels, settings=quick(**budget)), show=False)


def test_a_single_annotated_object_trains_with_a_warning(parent):
    image = np.zeros((64, 64), np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[20:40, 20:40] = 1
    image[labels > 0] = 1.0
    with pytest.warns(TrainingWarning, match="Only one object"):
        model = drain(
            finetune(parent, image, labels, settings=quick(steps=2), save=False), show=False
        )
    assert "Only one object" in " ".join(model.card.lineage["notes"])


def test_a_validation_cap_that_drops_held_out_regions_says_so(parent):
    sample = synthetic.fibsem_mitochondria((10, 48, 48), n_objects=10, seed=4)
    run = finetune(
        parent, sample.image, sample.labels, settings=quick(steps=2, val_max_pixels=1), save=False
    )
    with pytest.warns(TrainingWarning, match=r"Validation scores 1 of the 2 held-out regions"):
        model = drain(run, show=False)
    assert "val_max_pixels is 1" in " ".join(model.card.lineage["notes"])


def test_validation_on_every_held_out_region_says_nothing(parent):
    sample = synthetic.fibsem_mitochondria((10, 48, 48), n_objects=10, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        model = drain(
            finetune(parent, sample.image, sample.labels, settings=quick(steps=2), save=False),
            show=False,
        )
    assert "val_max_pixels" not in " ".join(model.card.lineage["notes"])


def test_a_taken_name_is_refused_before_training(parent, nuclei):
    job = finetune(parent, nuclei.image, nuclei.labels, name="tiny", settings=quick())
    with pytest.raises(ModelError, match="already exists"):
        next(job)


def test_disk_full_while_saving_is_clear_and_leaves_no_file(
    parent, nuclei, user_folder, monkeypatch
):
    before = sorted(p.name for p in user_folder.iterdir())
    parent_hash = file_hash(user_folder / "tiny.safetensors")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    job = finetune(
        parent,
        nuclei.image,
        nuclei.labels,
        name="tiny-full",
        settings=quick(steps=2, keep_better_start=False),
    )
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(SaveError, match="disk is full"):
        drain(job, show=False)
    monkeypatch.undo()
    assert sorted(p.name for p in user_folder.iterdir()) == before
    assert file_hash(user_folder / "tiny.safetensors") == parent_hash


# ----------------------------------------------------------------------------- training


def test_train_writes_a_checkpoint_and_resumes_from_it(tmp_path):
    stack = synthetic.fibsem_mitochondria((4, 48, 48), n_objects=10, seed=4)
    data = [(stack.image, stack.labels)]
    checkpoint = tmp_path / "run.pt"

    def fresh():
        torch.manual_seed(0)
        return create_model("unet", name="scratch", depth=2, base_width=4)

    settings = TrainSettings(
        steps=3, patch_size=32, batch_size=2, val_every=3, checkpoint_every_s=0, augment="light"
    )
    drain(
        train(fresh(), data, settings=settings, device="cpu", save=False, checkpoint=checkpoint),
        show=False,
    )
    assert checkpoint.is_file()
    trained_s = torch.load(checkpoint, weights_only=True)["trained_s"]
    assert trained_s > 0
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        model = drain(
            train(
                fresh(),
                data,
                settings=TrainSettings(**{**settings.to_dict(), "steps": 5}),
                device="cpu",
                checkpoint=checkpoint,
                resume=True,
            ),
            show=False,
            on_progress=events.append,
        )
    assert events[1].info["phase"] == "resume" and events[1].step == 3
    assert model.card.lineage["steps"] == 5 and model.card.parent is None
    # The card counts the interrupted run's training time too.
    lineage = model.card.lineage
    assert lineage["resumed_after_s"] == round(trained_s, 1)
    assert lineage["duration_s"] > lineage["resumed_after_s"]
    assert all(row["elapsed_s"] > trained_s for row in lineage["history"] if row["step"] > 3)
    assert "scratch" in {e.name for e in registry.list_models(include_unusable=False)}


def test_maskrcnn_trains_on_its_multi_task_loss(nuclei):
    torch.manual_seed(0)
    model = create_model(
        "maskrcnn", name="mrcnn", fpn_channels=32, box_head_size=64, mask_head_channels=32
    )
    events = []
    result = drain(
        finetune(
            model,
            nuclei.image,
            nuclei.labels,
            device="cpu",
            save=False,
            settings=quick(steps=2, patch_size=64, batch_size=2, learning_rate=1e-4),
        ),
        show=False,
        on_progress=events.append,
    )
    losses = [e.info["loss"] for e in events if e.info.get("phase") == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert result.card.task == "instance" and "dice" in result.card.lineage["metrics_after"]


def test_tuning_planes_are_neither_trained_nor_validated_on(monkeypatch):
    from napari_microseg.core.training import jobs

    stack = synthetic.fibsem_mitochondria((8, 48, 48), n_objects=12, seed=5)
    seen = {}
    real_trainer = jobs.Trainer

    def recording_trainer(*args, train_regions, val_regions, **kwargs):
        seen["train"] = [r.plane.name for r in train_regions]
        seen["val"] = [r.plane.name for r in val_regions]
        return real_trainer(*args, train_regions=train_regions, val_regions=val_regions, **kwargs)

    monkeypatch.setattr(jobs, "Trainer", recording_trainer)
    settings = TrainSettings(steps=2, patch_size=32, batch_size=2, val_every=2, tune_fraction=0.2)
    torch.manual_seed(0)
    model = drain(
        train(
            create_model("unet", name="tuned", depth=2, base_width=4),
            [(stack.image, stack.labels)],
            settings=settings,
            device="cpu",
            save=False,
        ),
        show=False,
    )
    # 8 planes: 2 validate (z=2, z=5), 1 of the other 6 is held out for tuning (z=7).
    assert seen["val"] == ["image 1 z=2", "image 1 z=5"]
    assert seen["train"] == [f"image 1 z={z}" for z in (0, 1, 3, 4, 6)]
    assert model.card.lineage["validation"].endswith(
        "; 1 training plane held out for tuning (image 1 z=7)"
    )
    assert model.card.lineage["settings"]["tune_fraction"] == 0.2
