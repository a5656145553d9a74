"""No command replaces data it did not create: the one rule of ``core.io.outputs``.

An existing file is replaced only when napari-microseg wrote it and ``--overwrite``
is given; an input of the run never is. Every refusal comes before the model loads
and before anything is written, and leaves every byte in place.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_microseg.cli import main
from napari_microseg.core.io.outputs import is_ours
from napari_microseg.core.io.writers import write_image, write_labels


def blobs(n=2, shape=(32, 48)):
    image = np.full(shape, 20, np.uint8)
    for i in range(n):
        image[4 + 10 * i : 10 + 10 * i, 6 + 12 * i : 14 + 12 * i] = 200
    return image


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def predict(*args):
    return main(["predict", *map(str, args), "--model", "m"])


def test_probabilities_onto_an_input_are_refused(tmp_path, loads, capsys):
    source = write_image(tmp_path / "x.tif", blobs())
    before = snapshot(tmp_path)
    code = predict(source, "--out", tmp_path / "l.tif", "--probabilities", source, "--overwrite")
    assert code == 2 and loads == []
    assert "--probabilities" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_out_folder_holding_the_inputs_is_refused_before_any_write(tmp_path, loads, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    write_image(folder / "a.png", blobs(1))
    write_image(folder / "y.png", blobs(2))
    tifffile.imwrite(folder / "y.tif", blobs(3))  # the raw image, sorted after y.png
    before = snapshot(tmp_path)
    assert predict(folder, "--out", folder, "--overwrite") == 2 and loads == []
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and "y.tif" in err
    assert snapshot(tmp_path) == before  # not even a.tif was written


@pytest.mark.parametrize("layout", ["two folders", "two suffixes"])
def test_two_inputs_with_the_same_stem_are_refused(tmp_path, loads, capsys, layout):
    if layout == "two folders":
        (tmp_path / "d1").mkdir(), (tmp_path / "d2").mkdir()
        first = write_image(tmp_path / "d1" / "s.tif", blobs(1))
        second = write_image(tmp_path / "d2" / "s.tif", blobs(2))
        inputs = [tmp_path / "d1", tmp_path / "d2"]
    else:
        first = write_image(tmp_path / "s.png", blobs(1))
        second = write_image(tmp_path / "s.tif", blobs(2))
        inputs = [first, second]
    assert predict(*inputs, "--out", tmp_path / "out") == 2 and loads == []
    err = capsys.readouterr().err
    assert f"{first} and {second} would both be written to" in err
    assert not (tmp_path / "out").exists()


def test_a_foreign_zarr_is_never_replaced_not_even_with_overwrite(tmp_path, loads, capsys):
    source = write_image(tmp_path / "x.tif", blobs())
    raw = zarr.create_array(store=str(tmp_path / "raw.zarr"), shape=(4,), chunks=(4,), dtype="u1")
    raw[:] = 7
    assert predict(source, "--out", tmp_path / "raw.zarr", "--overwrite") == 2 and loads == []
    assert "was not written by napari-microseg" in capsys.readouterr().err
    assert zarr.open_array(str(tmp_path / "raw.zarr"), mode="r")[:].tolist() == [7] * 4


def test_our_output_is_replaced_only_with_overwrite(tmp_path, loads, capsys):
    source = write_image(tmp_path / "x.tif", blobs(2))
    out, prob = tmp_path / "x_labels.tif", tmp_path / "x_prob.tif"
    assert predict(source, "--out", out, "--probabilities", prob) == 0
    first = snapshot(tmp_path)
    assert predict(source, "--out", out, "--probabilities", prob) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert snapshot(tmp_path) == first
    assert predict(source, "--out", out, "--probabilities", prob, "--overwrite") == 0
    ours_zarr = tmp_path / "x_labels.zarr"
    assert predict(source, "--out", ours_zarr) == 0
    assert predict(source, "--out", ours_zarr, "--overwrite") == 0


def test_a_foreign_file_is_never_replaced(tmp_path, loads, capsys):
    source = write_image(tmp_path / "x.tif", blobs())
    foreign = tmp_path / "result.tif"
    tifffile.imwrite(foreign, np.ones((3, 3), np.uint16))
    before = foreign.read_bytes()
    assert predict(source, "--out", foreign, "--overwrite") == 2 and loads == []
    assert "was not written by napari-microseg" in capsys.readouterr().err
    assert foreign.read_bytes() == before


def test_bad_options_are_refused_before_the_model_loads(tmp_path, loads, capsys):
    source = write_image(tmp_path / "x.tif", blobs())
    assert predict(source, "--out", tmp_path / "o.tif", "--overlap", "1.5") == 2
    assert predict(source, "--out", tmp_path / "o.tif", "--threshold", "2") == 2
    assert predict(source, "--out", tmp_path / "o.tif", "--tile", "0") == 2
    assert loads == [] and "--tile must be at least 1" in capsys.readouterr().err
    assert predict(source, "--out", tmp_path / "o.tif", "--axes", "ZYX") == 2
    assert loads == [] and "names 3 axes" in capsys.readouterr().err


def test_ctrl_c_keeps_a_finished_zarr_result(tmp_path, loads, monkeypatch):
    from napari_microseg.core.inference import predict as inference

    source = write_image(tmp_path / "x.tif", blobs(2))
    prob = tmp_path / "p.zarr"
    args = [source, "--out", tmp_path / "l.tif", "--probabilities", prob, "--tile", "16"]
    assert predict(*args) == 0
    finished = zarr.open_array(str(prob), mode="r")[:]

    def interrupted(model, image, *, out, **kwargs):
        out[:] = 0.0
        out.attrs["complete"] = False
        raise KeyboardInterrupt
        yield  # a job: a generator

    monkeypatch.setattr(inference, "run_prediction", interrupted)
    assert predict(*args, "--overwrite") == 130
    stored = zarr.open_array(str(prob), mode="r")
    np.testing.assert_array_equal(stored[:], finished)
    assert stored.attrs["complete"] is True
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or p.name.endswith(".old")]


def test_chunked_out_onto_its_input_zarr_is_refused(tmp_path, loads, capsys):
    volume = zarr.create_array(store=str(tmp_path / "em.zarr"), shape=(2, 16, 16), dtype="u1")
    volume[:] = 9
    code = predict(tmp_path / "em.zarr", "--out", tmp_path / "em.zarr", "--chunked", "--overwrite")
    assert code == 2 and loads == []
    assert "would overwrite the input" in capsys.readouterr().err
    assert int(zarr.open_array(str(tmp_path / "em.zarr"), mode="r")[:].min()) == 9


def prob_map(tmp_path, name="p.tif"):
    prob = np.zeros((24, 24), np.float32)
    prob[4:10, 4:10] = 0.9
    return write_image(tmp_path / name, prob)


def test_postprocess_never_writes_onto_its_inputs(tmp_path, capsys):
    source = prob_map(tmp_path)
    pipeline = tmp_path / "pipe.json"
    pipeline.write_text(json.dumps({"method": "otsu"}), encoding="utf-8")
    before = snapshot(tmp_path)
    base = ["postprocess", str(source), "--overwrite"]
    assert main([*base, "--out", str(source)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    out = tmp_path / "l.tif"
    assert main([*base, "--out", str(out), "--save-pipeline", str(out)]) == 2
    assert "--out and --save-pipeline both name" in capsys.readouterr().err
    args = [*base, "--out", str(out), "--pipeline", str(pipeline), "--save-pipeline"]
    assert main([*args, str(pipeline)]) == 2
    assert "--save-pipeline" in capsys.readouterr().err
    assert main([*args, str(source)]) == 2
    assert snapshot(tmp_path) == before
    saved = tmp_path / "saved.json"
    assert main([*args, str(saved)]) == 0 and is_ours(saved) and is_ours(out)


def test_evaluate_csv_never_replaces_the_ground_truth(tmp_path, capsys):
    labels = np.zeros((16, 16), np.uint16)
    labels[2:6, 2:6] = 1
    pred = write_labels(tmp_path / "pred.tif", labels)
    tifffile.imwrite(tmp_path / "truth.tif", labels)
    truth = tmp_path / "truth.tif"
    before = snapshot(tmp_path)
    for target in (truth, pred):
        code = main(["evaluate", str(pred), str(truth), "--csv", str(target), "--overwrite"])
        assert code == 2 and "would overwrite the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    table = tmp_path / "scores.csv"
    assert main(["evaluate", str(pred), str(truth), "--csv", str(table)]) == 0
    assert main(["evaluate", str(pred), str(truth), "--csv", str(table)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(pred), str(truth), "--csv", str(table), "--overwrite"]) == 0


def test_is_ours_reads_our_tags_only(tmp_path):
    write_labels(tmp_path / "l.tif", np.ones((4, 4), np.uint8))
    write_labels(tmp_path / "l.png", np.ones((4, 4), np.uint8))
    write_image(tmp_path / "p.tif", np.zeros((2, 4, 4), np.float32), axes="CYX")
    tifffile.imwrite(tmp_path / "foreign.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (tmp_path / "folder.tif").mkdir()
    assert [is_ours(tmp_path / n) for n in ("l.tif", "l.png", "p.tif")] == [True] * 3
    for name in ("foreign.tif", "notes.csv", "folder.tif", "missing.tif"):
        assert not is_ours(tmp_path / name)


def test_demo_replaces_its_own_outputs_only_with_overwrite(tmp_path, capsys, monkeypatch):
    from napari_microseg.cli import demo

    # The classical fallback: the rule is the same whichever model segments the sample.
    monkeypatch.setattr(demo, "segment_sample", lambda sample, key: sample.labels)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    labels = out / "fibsem_mitochondria_labels.tif"
    first = labels.read_bytes()
    assert main(["demo", "--out", str(out)]) == 2
    assert "already exists (written earlier by napari-microseg); pass --overwrite" in (
        capsys.readouterr().err
    )
    assert labels.read_bytes() == first
    assert main(["demo", "--out", str(out), "--overwrite"]) == 0
    (out / "fibsem_mitochondria_preview.png").write_bytes(b"someone else's picture")
    assert main(["demo", "--out", str(out), "--overwrite"]) == 2
    assert "was not written by napari-microseg" in capsys.readouterr().err
