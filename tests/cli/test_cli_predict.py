"""``microseg predict``: files, folders, probabilities, post-processing, one model load."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.cli import main
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.writers import write_image


def blobs(n=3, shape=(48, 64)):
    image = np.full(shape, 20, np.uint8)
    for i in range(n):
        image[5 + 12 * i : 12 + 12 * i, 10 + 15 * i : 20 + 15 * i] = 200
    return image


def test_one_image_to_labels_with_the_cards_postprocessing(tmp_path, loads, capsys):
    source = write_image(tmp_path / "cells.tif", blobs(3), scale=(0.5, 0.5))
    out = tmp_path / "cells_labels.tif"
    assert main(["predict", str(source), "--model", "bright", "--out", str(out)]) == 0
    labels = imread(out)
    assert labels.kind == "labels" and labels.data.max() == 3
    assert labels.scale == pytest.approx((0.5, 0.5))
    captured = capsys.readouterr()
    assert "Predicting" in captured.err and "3 objects" in captured.out


def test_folder_in_folder_out_keeps_names_and_loads_once(tmp_path, loads):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in (1, 2, 3):
        write_image(folder / f"img{i}.tif", blobs(i))
    out, prob = tmp_path / "out", tmp_path / "prob"
    code = main(
        ["predict", str(folder), "--model", "m", "--out", str(out), "--probabilities", str(prob)]
    )
    assert code == 0 and loads == ["m"]
    for i in (1, 2, 3):
        assert imread(out / f"img{i}.tif").data.max() == i
        probabilities = imread(prob / f"img{i}.tif").data
        assert probabilities.shape == (2, 48, 64) and probabilities.dtype == np.float32


def test_probabilities_stream_to_zarr_and_postprocess_can_be_overridden(tmp_path, loads):
    import zarr

    stack = np.stack([blobs(2), blobs(3)])
    source = write_image(tmp_path / "stack.tif", stack)
    out, prob = tmp_path / "labels.tif", tmp_path / "prob.zarr"
    args = ["predict", str(source), "--model", "m", "--out", str(out)]
    args += ["--probabilities", str(prob), "--postprocess", "otsu", "--tile", "16"]
    assert main(args) == 0
    stored = zarr.open_array(str(prob), mode="r")
    assert stored.shape == (2, 2, 48, 64) and stored.attrs["complete"] is True
    labels = imread(out).data
    assert labels.shape == (2, 48, 64) and labels.max() == 3  # 3D objects span both slices


def test_several_inputs_need_an_output_folder(tmp_path, loads, capsys):
    a = write_image(tmp_path / "a.tif", blobs(1))
    b = write_image(tmp_path / "b.tif", blobs(2))
    code = main(["predict", str(a), str(b), "--model", "m", "--out", str(tmp_path / "x.tif")])
    assert code == 2 and "folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nope.tif"), "--model", "m", "--out", "o.tif"]) == 2


def test_bad_overlap_is_a_one_line_error(tmp_path, loads, capsys):
    source = write_image(tmp_path / "a.tif", blobs(1))
    args = ["predict", str(source), "--model", "m", "--out", str(tmp_path / "o.tif")]
    assert main([*args, "--overlap", "1.5"]) == 2
    assert "overlap" in capsys.readouterr().err


def test_a_saved_model_file_runs_end_to_end(tmp_path):
    from napari_microseg.core.models import build, checkpoint

    model = build.create_model("unet", name="tiny", depth=2, base_width=4)
    weights = checkpoint.save_checkpoint(model, tmp_path / "tiny")
    source = write_image(tmp_path / "a.tif", blobs(2))
    out = tmp_path / "a_labels.tif"
    code = main(
        ["predict", str(source), "--model", str(weights), "--out", str(out), "--device", "cpu"]
    )
    assert code == 0 and imread(out).data.shape == (48, 64)


@pytest.mark.parametrize("resample", [True, False])
def test_an_image_at_twice_the_model_pixel_size_is_resampled_unless_told_not_to(
    tmp_path, loads, monkeypatch, capsys, resample
):
    from napari_microseg.cli import predict as cli_predict
    from napari_microseg.core.inference import segment

    bright = cli_predict.load  # the tiny thresholding model of `loads`

    def trained_at_quarter_micron(name, device):
        model = bright(name, device)
        model.card.pixel_size_um = 0.25
        return model

    monkeypatch.setattr(cli_predict, "load", trained_at_quarter_micron)
    seen = []
    real = segment.run_prediction

    def recording(model, image, **kwargs):
        seen.append(tuple(np.shape(image)))
        return real(model, image, **kwargs)

    monkeypatch.setattr(segment, "run_prediction", recording)
    source = write_image(tmp_path / "cells.tif", blobs(3), scale=(0.5, 0.5))
    out, prob = tmp_path / "labels.tif", tmp_path / "prob.tif"
    args = ["predict", str(source), "--model", "m", "--out", str(out), "--probabilities", str(prob)]
    assert main(args + ([] if resample else ["--no-resample"])) == 0
    assert seen == [(96, 128) if resample else (48, 64)]
    labels = imread(out)
    assert labels.data.shape == (48, 64) and labels.data.max() == 3
    np.testing.assert_array_equal(labels.data > 0, blobs(3) > 100)
    assert imread(prob).data.shape == (2, 48, 64)
    assert ("resampled 2x" in capsys.readouterr().out) is resample


@pytest.mark.parametrize(
    ("card_tta", "flags", "expected"),
    [(True, [], True), (True, ["--no-tta"], False), (False, [], False), (False, ["--tta"], True)],
)
def test_tta_follows_the_card_unless_told(card_tta, flags, expected):
    from napari_microseg.cli import build_parser
    from napari_microseg.cli.predict_common import prediction_options
    from napari_microseg.core.models.base import ModelCard

    args = build_parser().parse_args(
        ["predict", "in.tif", "--model", "m", "--out", "o.tif", *flags]
    )
    card = ModelCard(name="m", architecture="unet", recommended={"tta": card_tta})
    assert prediction_options(args, card).tta is expected
