"""Ctrl-C during ``microseg finetune``/``train`` keeps the best weights so far as NAME-draft.

A ``KeyboardInterrupt`` reaches a training job in two ways: inside a step (the
common case; it ends the generator at once) or while ``drain`` handles a
progress event (``drain`` then closes the job). Both must keep the draft, leave
the parent untouched, save nothing under the final name, and end the command
with one line naming the draft and exit code 130.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_microseg.cli import main
from napari_microseg.core import progress
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.build import create_model
from napari_microseg.core.training.jobs import finetune
from napari_microseg.core.training.loop import Trainer
from napari_microseg.core.training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("user_folder")


@pytest.fixture
def parent_file(user_folder: Path) -> Path:
    """A tiny untrained U-Net saved in the user folder as 'tiny'; returns its weights file."""
    torch.manual_seed(0)
    return registry.save_user_model(create_model("unet", name="tiny", depth=2, base_width=8))


@pytest.fixture
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=2)
    image, labels = tmp_path / "nuclei.tif", tmp_path / "nuclei_labels.tif"
    tifffile.imwrite(image, sample.image)
    tifffile.imwrite(labels, sample.labels)
    return image, labels


def interrupt_in_step(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Ctrl-C during training step ``at`` (1-based), after ``at - 1`` steps are done."""
    real = Trainer._train_step
    calls = []

    def step(self: Trainer) -> float:
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "_train_step", step)


def interrupt_in_drain(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Ctrl-C while ``drain`` shows the progress event of step ``after``."""
    real = progress.drain

    def draining(job, **kwargs):
        inner = kwargs.pop("on_progress", None)

        def hook(event: progress.Progress) -> None:
            if inner is not None:
                inner(event)
            if event.info.get("phase") == "train" and event.step == after:
                raise KeyboardInterrupt

        return real(job, on_progress=hook, **kwargs)

    monkeypatch.setattr(progress, "drain", draining)


def finetune_args(image_files: tuple[Path, Path], name: str = "tiny-mine") -> list[str]:
    image, labels = image_files
    return [
        "finetune",
        "--model",
        "tiny",
        "--image",
        str(image),
        "--labels",
        str(labels),
        "--name",
        name,
        "--steps",
        "20",
        "--patch-size",
        "48",
        "--device",
        "cpu",
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def usable_names() -> set[str]:
    return {e.name for e in registry.list_models(include_unusable=False)}


def check_draft(name: str, parent: str | None) -> None:
    draft = registry.load_model(name, device="cpu")
    assert draft.card.lineage["draft"] is True and draft.card.lineage["stopped"] == "cancelled"
    assert draft.card.parent == parent
    x = torch.zeros(1, draft.card.in_channels, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(draft.module.eval()(x)).all()


@pytest.mark.parametrize(
    ("how", "steps_done"), [("in a step", 6), ("in drain", 3)], ids=["step", "drain"]
)
def test_ctrl_c_during_finetune_keeps_a_draft(
    how, steps_done, image_files, parent_file, monkeypatch, capsys
):
    before = sha256(parent_file)
    if how == "in a step":
        interrupt_in_step(monkeypatch, at=steps_done + 1)  # after a validation at step 5
    else:
        interrupt_in_drain(monkeypatch, after=steps_done)  # before any validation
    code = main(finetune_args(image_files))
    err = capsys.readouterr().err
    assert code == 130
    assert (
        f"Interrupted at step {steps_done}; the best weights so far were kept as "
        "'tiny-mine-draft' (microseg predict --model tiny-mine-draft ...)." in err
    )
    assert "Traceback" not in err and "nothing half-written" not in err
    names = usable_names()
    assert "tiny-mine-draft" in names and "tiny-mine" not in names
    check_draft("tiny-mine-draft", parent="tiny")
    assert sha256(parent_file) == before


def test_ctrl_c_replaces_an_older_draft_and_says_so(image_files, parent_file, monkeypatch, capsys):
    interrupt_in_step(monkeypatch, at=3)
    assert main(finetune_args(image_files)) == 130
    first = registry.find_model("tiny-mine-draft").path.read_bytes()
    interrupt_in_step(monkeypatch, at=5)  # wraps the first patch, which has fired already
    capsys.readouterr()
    assert main(finetune_args(image_files)) == 130
    assert "Interrupted at step 4; the best weights so far were kept" in capsys.readouterr().err
    assert registry.find_model("tiny-mine-draft").path.read_bytes() != first
    assert registry.load_model("tiny-mine-draft", device="cpu").card.lineage["steps"] == 4


def test_ctrl_c_before_the_first_step_keeps_nothing(image_files, parent_file, monkeypatch, capsys):
    interrupt_in_step(monkeypatch, at=1)
    code = main(finetune_args(image_files))
    err = capsys.readouterr().err
    assert code == 130
    assert "Interrupted before the first training step; no model or draft was saved." in err
    assert not {"tiny-mine", "tiny-mine-draft"} & usable_names()


def test_ctrl_c_in_the_api_keeps_the_draft_too(parent_file):
    """A notebook user's Ctrl-C (KeyboardInterrupt inside ``drain``) keeps the draft."""
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=2)
    settings = TrainSettings.for_finetune(steps=10, minutes=None, patch_size=48, val_every=2)

    def stop(event: progress.Progress) -> None:
        if event.info.get("phase") == "validate" and event.step == 4:
            raise KeyboardInterrupt

    job = finetune("tiny", sample.image, sample.labels, name="api", settings=settings, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        progress.drain(job, show=False, on_progress=stop)
    check_draft("api-draft", parent="tiny")
    draft = registry.load_model("api-draft", device="cpu")
    lineage = draft.card.lineage
    assert lineage["steps"] == 4 and lineage["best_step"] in (2, 4) and "dice" in draft.card.metrics


def test_ctrl_c_during_train_keeps_a_draft_and_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    data = tmp_path / "lucchi"
    data.mkdir()
    sample = synthetic.fibsem_mitochondria((4, 48, 48), n_objects=10, seed=5)
    for split in ("train", "val"):
        tifffile.imwrite(data / f"{split}_images.tif", sample.image, photometric="minisblack")
        tifffile.imwrite(
            data / f"{split}_masks.tif",
            (sample.labels > 0).astype(np.uint8) * 255,
            photometric="minisblack",
        )
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "name: mini\nfamily: unet\nclasses: [background, mitochondrion]\n"
        "hyperparameters: {depth: 2, base_width: 4}\ndata: {kind: lucchi}\n"
        "training: {steps: 50, patch_size: 32, batch_size: 2, val_every: 2, "
        "checkpoint_every_s: 0}\n"
    )
    checkpoint = tmp_path / "ck.pt"
    interrupt_in_step(monkeypatch, at=4)
    args = ["train", "--config", str(config), "--data", str(data), "--device", "cpu"]
    code = main([*args, "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 130
    assert (
        "Interrupted at step 3; the best weights so far were kept as 'mini-draft' "
        f"(microseg predict --model mini-draft ...); add --resume to continue from the "
        f"checkpoint {checkpoint}." in err
    )
    assert "mini" not in usable_names() and checkpoint.exists()
    check_draft("mini-draft", parent=None)
