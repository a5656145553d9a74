"""The same data, settings, seed and step budget on the same machine's CPU give the same weights.

Two runs used to differ: without ``val_every`` the validations (which pick the
kept weights and stop early) fell on steps chosen by the clock, ``microseg
train --steps`` kept the config's time budget, and the fresh network's initial
weights were not drawn from the seed. A run stopped by Ctrl-C and resumed from
its checkpoint ends with the weights of an uninterrupted one. The card's
lineage says whether a run is reproducible, and why not.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_microseg.cli import main
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import Progress, drain
from napari_microseg.core.training.jobs import finetune, train
from napari_microseg.core.training.loop import Trainer
from napari_microseg.core.training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("user_folder")


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"weights differ: {different}"


def test_two_finetunes_give_the_same_weights_however_fast_they_run():
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=1)
    torch.manual_seed(0)
    parent = create_model("unet", name="tiny", depth=2, base_width=8)
    # val_every unset: validations every max(5, steps // 8) steps, whatever the clock says.
    settings = TrainSettings.for_finetune(
        steps=10, minutes=None, patch_size=48, batch_size=2, warmup_steps=2, seed=3
    )
    runs = []
    for delay in (0.0, 0.05):  # the second run is slowed down, as on a busy machine
        validated: list[int] = []

        def watch(event: Progress, delay: float = delay, validated: list = validated) -> None:
            if event.info.get("phase") == "validate":
                validated.append(event.step)
            elif event.info.get("phase") == "train":
                time.sleep(delay)

        job = finetune(
            parent, sample.image, sample.labels, settings=settings, device="cpu", save=False
        )
        model = drain(job, show=False, on_progress=watch)
        runs.append((model, validated))
    (first, first_validated), (second, second_validated) = runs
    assert first_validated == second_validated == [5, 10]
    assert_same_weights(first.module.state_dict(), second.module.state_dict())
    assert first.card.lineage["best_step"] == second.card.lineage["best_step"]
    assert first.card.lineage["reproducible"].startswith("yes: the same data, settings (seed 3")


def test_a_resumed_run_ends_like_an_uninterrupted_one(tmp_path, monkeypatch):
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=1)
    torch.manual_seed(0)
    fresh = create_model("unet", name="tiny", depth=2, base_width=8)
    settings = TrainSettings(
        steps=12, patch_size=48, batch_size=2, warmup_steps=2, checkpoint_every_s=0, seed=1
    )

    def job(checkpoint: str, resume: bool = False):
        data = [(sample.image, sample.labels)]
        path = tmp_path / checkpoint
        return train(
            fresh, data, settings=settings, device="cpu", save=False, checkpoint=path, resume=resume
        )

    whole = drain(job("whole.pt"), show=False)
    real, calls = Trainer._train_step, []

    def step(self: Trainer) -> float:
        calls.append(1)
        if len(calls) == 8:  # Ctrl-C in step 8: the checkpoint holds step 7
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "_train_step", step)
    with pytest.raises(KeyboardInterrupt):
        drain(job("parts.pt"), show=False)
    monkeypatch.setattr(Trainer, "_train_step", real)
    resumed = drain(job("parts.pt", resume=True), show=False)
    assert_same_weights(whole.module.state_dict(), resumed.module.state_dict())
    steps = [[h["step"] for h in m.card.lineage["history"]] for m in (whole, resumed)]
    assert steps[0] == steps[1] == [5, 10, 12]


def lucchi_folder(folder: Path) -> Path:
    folder.mkdir()
    sample = synthetic.fibsem_mitochondria((4, 48, 48), n_objects=10, seed=5)
    masks = (sample.labels > 0).astype(np.uint8) * 255
    for split in ("train", "val"):
        tifffile.imwrite(folder / f"{split}_images.tif", sample.image, photometric="minisblack")
        tifffile.imwrite(folder / f"{split}_masks.tif", masks, photometric="minisblack")
    return folder


def test_microseg_train_twice_with_the_same_steps_gives_the_same_weights(tmp_path, capsys):
    data = lucchi_folder(tmp_path / "lucchi")
    config = tmp_path / "cfg.yaml"
    # The config's time budget is replaced by --steps: a clock would make the runs differ.
    config.write_text(
        "name: mini\nfamily: unet\nclasses: [background, mitochondrion]\n"
        "hyperparameters: {depth: 2, base_width: 4}\ndata: {kind: lucchi}\n"
        "training: {steps: 500, minutes: 30, patch_size: 32, batch_size: 2, seed: 7}\n"
    )
    args = ["train", "--config", str(config), "--data", str(data), "--steps", "6"]
    for run in (1, 2):
        torch.manual_seed(run)  # whatever the process did before, the seed decides
        code = main([*args, "--device", "cpu", "--checkpoint", str(tmp_path / f"{run}.pt")])
        assert code == 0, capsys.readouterr().err
    first = registry.load_model("mini", device="cpu")
    second = registry.load_model("mini-2", device="cpu")
    assert_same_weights(first.module.state_dict(), second.module.state_dict())
    lineage = first.card.lineage
    assert lineage["steps"] == 6 and lineage["stopped"] == "steps"
    assert lineage["settings"]["minutes"] is None and lineage["settings"]["seed"] == 7
    assert lineage["reproducible"].startswith("yes")


def test_what_is_not_reproducible_says_why():
    timed = TrainSettings.for_finetune()  # 400 steps or 2.5 minutes
    assert timed.reproducibility("cpu").startswith(
        "no: the time budget (2.5 min) makes the number of steps, the learning-rate schedule"
    )
    steps_only = TrainSettings(steps=100)
    assert steps_only.reproducibility("cuda").startswith(
        "no: on cuda some GPU kernels (cuDNN's convolution algorithms, the atomic"
    )
    assert steps_only.reproducibility("cpu") == (
        "yes: the same data, settings (seed 0, 100 steps) and number of CPU threads on this "
        "machine give the same weights bit for bit"
    )
