"""``microseg postprocess``: probability TIFFs in, label TIFFs with the voxel size out."""

from __future__ import annotations

import json

import numpy as np

from napari_microseg.cli import main
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.writers import write_image
from napari_microseg.core.postprocess.pipeline import PostprocessPipeline


def blobs() -> np.ndarray:
    prob = np.zeros((20, 30), np.float32)
    prob[2:8, 2:8] = 0.9
    prob[10:18, 10:20] = 0.8
    prob[15, 25] = 0.7  # a one-pixel speck
    return prob


def test_otsu_keeps_the_voxel_size(tmp_path, capsys):
    write_image(tmp_path / "prob.tif", blobs(), scale=(0.5, 0.5))
    out = tmp_path / "labels.tif"
    assert (
        main(["postprocess", str(tmp_path / "prob.tif"), "--out", str(out), "--min-size", "2"]) == 0
    )
    assert "2 objects (otsu" in capsys.readouterr().out
    labels = imread(out)
    assert labels.kind == "labels" and labels.data.max() == 2
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))


def test_hysteresis_on_a_stack(tmp_path):
    stack = np.stack([blobs() * 0.5, blobs(), blobs()])  # first slice only reaches 0.45
    write_image(tmp_path / "prob.tif", stack, axes="ZYX", scale=(2.0, 0.5, 0.5))
    out = tmp_path / "labels.tif"
    args = ["postprocess", str(tmp_path / "prob.tif"), "--method", "hysteresis"]
    assert main([*args, "--low", "0.3", "--high", "0.85", "--out", str(out)]) == 0
    labels = imread(out)
    assert labels.data.shape == (3, 20, 30) and labels.data.max() == 1  # only the 0.9 blob
    assert labels.data[0, 4, 4] == 1  # grown into the dim slice through 3D connectivity
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))


def test_class_stack_with_boundary_class(tmp_path):
    fg = np.zeros((20, 30), np.float32)
    boundary = np.zeros_like(fg)
    boundary[2:12, 2:22] = 0.9
    fg[3:11, 3:11] = fg[3:11, 13:21] = 0.9  # two cores inside one boundary-class region
    boundary[3:11, 3:11] = boundary[3:11, 13:21] = 0.0
    stack = np.stack([1 - fg - boundary, fg, boundary])
    write_image(tmp_path / "stack.tif", stack, axes="ZYX", scale=(1.0, 0.25, 0.25))
    out = tmp_path / "labels.tif"
    args = ["postprocess", str(tmp_path / "stack.tif"), "--class", "1", "--boundary-class", "2"]
    assert main([*args, "--method", "watershed", "--out", str(out)]) == 0
    labels = imread(out)
    assert labels.data.shape == (20, 30) and labels.data.max() == 2
    assert (labels.data > 0).sum() == 10 * 20
    np.testing.assert_allclose(labels.scale, (0.25, 0.25))


def test_probabilities_outside_unit_range_are_refused(tmp_path, capsys):
    write_image(tmp_path / "raw.tif", blobs() * 255)
    assert main(["postprocess", str(tmp_path / "raw.tif"), "--out", str(tmp_path / "l.tif")]) == 2
    err = capsys.readouterr().err
    assert "outside [0, 1]" in err and "Traceback" not in err
    assert not (tmp_path / "l.tif").exists()


def test_pipeline_from_a_model_card_and_saved_back(tmp_path):
    write_image(tmp_path / "prob.tif", blobs())
    card = {"name": "m", "recommended": {"postprocess": {"method": "threshold", "threshold": 0.75}}}
    (tmp_path / "card.json").write_text(json.dumps(card), encoding="utf-8")
    out, saved = tmp_path / "labels.tif", tmp_path / "used.json"
    args = ["postprocess", str(tmp_path / "prob.tif"), "--pipeline", str(tmp_path / "card.json")]
    assert main([*args, "--out", str(out), "--save-pipeline", str(saved)]) == 0
    assert imread(out).data.max() == 2  # the 0.7 speck is below 0.75
    pipeline = PostprocessPipeline.from_dict(json.loads(saved.read_text(encoding="utf-8")))
    assert pipeline.method == "threshold" and pipeline.threshold == 0.75


def test_several_inputs_go_to_a_folder(tmp_path):
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.tif", blobs())
    out = tmp_path / "out"
    args = ["postprocess", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--out", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.tif"]


def test_ids_above_65535_survive_the_file(tmp_path):
    prob = np.zeros((600, 600), np.float32)
    prob[::2, ::2] = 1.0  # 90,000 one-pixel objects
    write_image(tmp_path / "prob.tif", prob)
    out = tmp_path / "labels.tif"
    args = ["postprocess", str(tmp_path / "prob.tif"), "--threshold", "0.5", "--out", str(out)]
    assert main(args) == 0
    labels = imread(out).data
    assert labels.dtype == np.uint32 and labels.max() == 90000
