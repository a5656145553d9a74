"""bioimage.io packages: export (validated and reproduced offline), import, round trip, bad input.

Everything here runs offline: :func:`no_network` makes any socket connection fail,
so a test that passes proves nothing was downloaded.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import pickle
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_microseg.core.inference.predict import predict
from napari_microseg.core.inference.segment import segment_job
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.models.bioimageio_export import export_bioimageio
from napari_microseg.core.models.bioimageio_import import import_bioimageio
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import drain

pytest.importorskip("bioimageio.spec")

BUNDLED = Path(registry.__file__).resolve().parents[2] / "models"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to reach the network: export, validation and tests are offline."""

    def refuse(*args, **kwargs):
        raise OSError(f"network access attempted in an offline test: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def real_bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: BUNDLED)


@pytest.fixture
def tiny() -> str:
    torch.manual_seed(0)
    model = create_model("unet", name="tiny", depth=2, base_width=4, modality="EM")
    registry.save_user_model(model)
    return "tiny"


def volume() -> np.ndarray:
    """A small Lucchi-like FIB-SEM stack from the project's sample generator."""
    return synthetic.fibsem_mitochondria((3, 160, 176), n_objects=8, seed=5).image


def labels_of(name: str, image: np.ndarray) -> np.ndarray:
    model = registry.load_model(name, device="cpu")
    return drain(segment_job(model, image, axes="ZYX"), show=False).labels


def rdf_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def rewrite(path: Path, out: Path, *, rdf=None, drop=(), replace=None) -> Path:
    """A copy of a package with its description or files changed."""
    replace = replace or {}
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name in drop:
                continue
            if name == "rdf.yaml" and rdf is not None:
                dst.writestr(name, yaml.safe_dump(rdf, sort_keys=False))
            else:
                dst.writestr(name, replace.get(name, src.read(name)))
    return out


# --------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_is_valid_and_bioimageio_core_reproduces_it(tiny, tmp_path):
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    out = export_bioimageio(tiny, tmp_path / "tiny.zip", authors=["A. Tester"])
    descr = load_description(out, perform_io_checks=True)
    assert descr.validation_summary.status in ("passed", "valid-format")
    assert str(descr.format_version).startswith("0.5")
    assert {"pytorch_state_dict", "torchscript"} <= set(descr.weights.model_dump(exclude_none=True))
    summary = test_model(out, devices=["cpu"])
    assert summary.status == "passed", (
        summary.display_text() if hasattr(summary, "display_text") else summary
    )
    rdf = rdf_of(out)
    steps = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    assert "scale_range" in steps
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"
    assert rdf["license"] and rdf["cite"] and rdf["authors"][0]["name"] == "A. Tester"
    assert rdf["config"]["napari_microseg"]["card"]["name"] == "tiny"


@pytest.mark.slow
def test_a_downsampling_unet_exports_and_reproduces(tmp_path):
    from bioimageio.core import test_model

    torch.manual_seed(0)
    model = create_model(
        "unet", name="coarse", in_channels=3, classes=["background", "gland", "boundary"],
        depth=2, base_width=4, downsample=2, modality="H&E",
        normalization={"kind": "range", "min": 0, "max": 255},
    )  # fmt: skip
    registry.save_user_model(model)
    out = export_bioimageio("coarse", tmp_path / "coarse.zip", authors=["A. Tester"])
    kwargs = rdf_of(out)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["downsample"] == 2
    # The package's own architecture file rebuilds the network and reproduces its outputs.
    summary = test_model(out, devices=["cpu"])
    assert summary.status == "passed", (
        summary.display_text() if hasattr(summary, "display_text") else summary
    )


def test_the_test_output_is_float32_where_the_cpu_would_run_bfloat16(tiny, tmp_path, monkeypatch):
    # CPUs with AVX512-BF16 run inference in bfloat16 by default; a package's reference output
    # must still be float32, which other tools reproduce to a relative tolerance of 1e-3.
    from napari_microseg.core.inference import job

    monkeypatch.setattr(job, "cpu_has_fast_bfloat16", lambda: True)
    out = export_bioimageio(tiny, tmp_path / "tiny.zip", weight_formats=["pytorch_state_dict"])
    with zipfile.ZipFile(out) as archive:
        test_input = np.load(io.BytesIO(archive.read("test_input.npy")))
        stored = np.load(io.BytesIO(archive.read("test_output.npy")))
    model = registry.load_model(tiny, device="cpu")
    lo, hi = np.percentile(test_input[0], [1.0, 99.8])
    scaled = torch.from_numpy(((test_input[0] - lo) / (hi - lo)).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(model.module(scaled[None]), dim=1).numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_export_writes_the_state_dict_without_pickled_objects(tiny, tmp_path):
    out = export_bioimageio(tiny, tmp_path / "tiny.zip", weight_formats=["pytorch_state_dict"])
    with zipfile.ZipFile(out) as archive:
        state = torch.load(io.BytesIO(archive.read("weights.pt")), weights_only=True)
        source = archive.read("unet.py").decode()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "class UNet" in source and "from ." not in source


def test_export_refuses_what_it_cannot_describe_or_replace(tiny, tmp_path):
    (tmp_path / "theirs.zip").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="not written by napari-microseg"):
        export_bioimageio(tiny, tmp_path / "theirs.zip", overwrite=True)
    with pytest.raises(ModelError, match="zip"):
        export_bioimageio(tiny, tmp_path / "tiny.tar")
    out = export_bioimageio(tiny, tmp_path / "tiny.zip", weight_formats=["torchscript"])
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bioimageio(tiny, out)
    assert export_bioimageio(tiny, out, weight_formats=["torchscript"], overwrite=True) == out
    # Matching to a training reference has no bioimage.io form: refused, nothing written.
    model = registry.load_model(tiny, device="cpu")
    matched = copy.copy(model)
    matched.card = dataclasses.replace(
        model.card,
        normalization={
            **model.card.normalization,
            "reference": list(np.linspace(0, 1, 101)),
            "match": True,
        },
    )
    with pytest.raises(ModelError, match="matches its input intensities"):
        export_bioimageio(matched, tmp_path / "matched.zip")
    assert not (tmp_path / "matched.zip").exists()
    # Nor has a flat-field correction.
    flat = copy.copy(model)
    flat.card = dataclasses.replace(
        model.card, normalization={**model.card.normalization, "flat_field": 0.125}
    )
    with pytest.raises(ModelError, match=r"uneven illumination.*Export its parent"):
        export_bioimageio(flat, tmp_path / "flat.zip")
    assert not (tmp_path / "flat.zip").exists()
    # Nor has smoothing for a noisy session.
    smooth = copy.copy(model)
    smooth.card = dataclasses.replace(
        model.card, normalization={**model.card.normalization, "smooth": 0.7}
    )
    with pytest.raises(ModelError, match=r"smooths its input.*Export its parent"):
        export_bioimageio(smooth, tmp_path / "smooth.zip")
    assert not (tmp_path / "smooth.zip").exists()


# ----------------------------------------------------------------------- round trip


@pytest.mark.slow
def test_mito_em_round_trip_gives_identical_labels(real_bundled, tmp_path):
    from bioimageio.spec import load_description

    out = export_bioimageio("mito-em", tmp_path / "mito-em.zip")
    assert load_description(out, perform_io_checks=True).validation_summary.status != "failed"
    import_bioimageio(out, "mito-em-zoo")
    image = volume()
    expected = labels_of("mito-em", image)
    assert expected.max() > 0
    np.testing.assert_array_equal(labels_of("mito-em-zoo", image), expected)
    card = registry.load_model("mito-em-zoo", device="cpu").card
    assert card.lineage["bioimageio"]["package"] == "mito-em.zip"
    assert card.lineage["data_sha256"]  # the bundled model's training record survives
    # The whole recommended post-processing survives (mito-em's: threshold 0.75, opening 2).
    bundled = registry.load_model("mito-em", device="cpu").card
    assert card.recommended["postprocess"] == bundled.recommended["postprocess"]
    assert card.recommended["postprocess"]["opening_radius"] == 2


def tiny_finetune(parent: str, name: str) -> None:
    """A few optimizer steps on a synthetic stack, saved with its lineage like a fine-tune."""
    from napari_microseg.core.models.versions import parent_fingerprint, trained_card

    sample = synthetic.fibsem_mitochondria((2, 48, 48), n_objects=6, seed=3)
    model = registry.load_model(parent, device="cpu")
    image = torch.from_numpy(sample.image.astype(np.float32) / 255.0)[:, None]
    target = torch.from_numpy((sample.labels > 0).astype(np.int64))
    optimizer = torch.optim.Adam(model.module.parameters(), lr=1e-2)
    model.module.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model.module(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    data_hash = hashlib.sha256(sample.image.tobytes() + sample.labels.tobytes()).hexdigest()
    lineage = {
        "kind": "finetune",
        "parent": parent,
        "parent_sha256": parent_fingerprint(model),
        "data_sha256": data_hash,
        "settings": {"steps": 3},
    }
    model.card = trained_card(
        model.card,
        name=name,
        lineage=lineage,
        metrics={"dice": 0.5},
        trained_on="2 synthetic planes",
        description="tiny fine-tune",
        parent_name=parent,
    )
    registry.save_user_model(model.eval())


def test_finetuned_model_round_trip_keeps_lineage(tiny, tmp_path):
    tiny_finetune(tiny, "tiny-ft")
    tuned = registry.find_model("tiny-ft").card
    out = export_bioimageio("tiny-ft", tmp_path / "tiny-ft.zip")
    ours = rdf_of(out)["config"]["napari_microseg"]["card"]
    assert (
        ours["parent"] == "tiny" and ours["lineage"]["data_sha256"] == tuned.lineage["data_sha256"]
    )
    assert "fine-tuned" in rdf_of(out)["tags"]
    import_bioimageio(out, "tiny-ft-zoo")
    entry = registry.find_model("tiny-ft-zoo")
    assert entry.card.parent == "tiny" and entry.lineage == ("tiny",)
    assert entry.card.lineage["data_sha256"] == tuned.lineage["data_sha256"]
    assert entry.card.lineage["parent_sha256"] == tuned.lineage["parent_sha256"]
    image = volume()[:, :96, :96]
    np.testing.assert_array_equal(labels_of("tiny-ft-zoo", image), labels_of("tiny-ft", image))


def test_torchscript_package_is_listed_and_predicts_the_same(tiny, tmp_path):
    out = export_bioimageio(tiny, tmp_path / "ts.zip", weight_formats=["torchscript"])
    path = import_bioimageio(out, "tiny-ts")
    assert path.name == "tiny-ts.bioimageio.zip"
    entry = registry.find_model("tiny-ts")
    assert entry.usable and entry.family == "torchscript" and entry.card.modality == "EM"
    image = volume()[:1]
    expected = predict(registry.load_model(tiny, device="cpu"), image, axes="ZYX")
    got = predict(registry.load_model("tiny-ts", device="cpu"), image, axes="ZYX")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Opened by path ("Open model file..."), it is listed too; its name is the original's,
    # which the registry already lists, so it says so rather than shadowing it.
    assert "already used" in registry.find_model(out).problem


# --------------------------------------------------------------- foreign packages


class Bright(torch.nn.Module):
    """A 2D "network" without a channel axis: (B, Y, X) -> (B, 1, Y, X) logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, None] - 0.5) * 8.0


class Smooth3d(torch.nn.Module):
    """A 3D network: mean over a 3x3x3 neighbourhood, (B, 1, Z, Y, X) -> (B, 1, Z, Y, X)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1)


def package(tmp_path: Path, module: torch.nn.Module, rdf: dict, name: str = "pkg.zip") -> Path:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    data = buffer.getvalue()
    rdf.setdefault("weights", {"torchscript": {"source": "net.pt", "pytorch_version": "2.0"}})
    for entry in rdf["weights"].values():
        entry.setdefault("sha256", hashlib.sha256(data).hexdigest())
    out = tmp_path / name
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf, sort_keys=False))
        archive.writestr("net.pt", data)
    return out


def space(axis: str, **extra) -> dict:
    return {"type": "space", "id": axis, **extra}


def rdf_2d() -> dict:
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": "Bright things",
        "description": "thresholds bright pixels",
        "inputs": [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch"},
                    space("y", size={"min": 16, "step": 16}),
                    space("x", size={"min": 16, "step": 16}),
                ],
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x"],
                            "min_percentile": 0.0,
                            "max_percentile": 100.0,
                        },
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": "prob",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["cells"]},
                    space("y", halo=8, size={"tensor_id": "raw", "axis_id": "y"}),
                    space("x", halo=8, size={"tensor_id": "raw", "axis_id": "x"}),
                ],
                "postprocessing": [
                    {"id": "sigmoid"},
                    {"id": "binarize", "kwargs": {"threshold": 0.5}},
                ],
            }
        ],
    }


def test_foreign_2d_package_honours_its_processing_tile_and_halo(tmp_path):
    out = package(tmp_path, Bright(), rdf_2d())
    import_bioimageio(out)
    entry = registry.find_model("bright-things")
    card = entry.card
    assert card.normalization == {"kind": "percentile", "low": 0.0, "high": 100.0}
    assert card.recommended["tile_size"] == 256 and card.recommended["overlap"] == 0.0625
    assert card.recommended["postprocess"]["threshold"] == 0.5
    assert card.classes == ["cells"] and card.in_channels == 1
    image = np.zeros((50, 70), np.uint16)
    image[10:30, 20:60] = 1000
    labels = drain(segment_job(registry.load_model("bright-things", "cpu"), image), show=False)
    assert labels.labels.max() == 1 and (labels.labels > 0).sum() == 20 * 40


def test_3d_package_runs_on_neighbouring_slices(tmp_path):
    rdf = rdf_2d()
    rdf["name"] = "smooth 3d"
    rdf["inputs"][0]["axes"] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": ["raw"]},
        space("z", size={"min": 4, "step": 4}),
        space("y", size={"min": 8, "step": 8}),
        space("x", size={"min": 8, "step": 8}),
    ]
    rdf["inputs"][0]["preprocessing"] = []
    rdf["outputs"][0]["axes"].insert(
        2, space("z", halo=1, size={"tensor_id": "raw", "axis_id": "z"})
    )
    rdf["outputs"][0]["postprocessing"] = []
    out = package(tmp_path, Smooth3d(), rdf)
    model = registry.load_model(out, device="cpu")
    assert model.card.context_slices == 2 and model.card.in_channels == 5
    image = np.random.default_rng(0).random((7, 24, 32)).astype(np.float32)
    got = predict(model, image, axes="ZYX", normalization="none", activation=None)
    expected = Smooth3d()(torch.from_numpy(image)[None, None])[0].numpy()
    np.testing.assert_allclose(got[:, 1:-1, 1:-1, 1:-1], expected[:, 1:-1, 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}], {"kind": "zscore"}),
        (
            [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 10.0, "std": 5.0}}],
            {"kind": "range", "min": 10.0, "max": 15.0},
        ),
        (
            [
                {"id": "scale_linear", "kwargs": {"gain": 0.5, "offset": -1.0}},
                {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
            ],
            {"kind": "range", "min": 2.0, "max": 4.0, "clip": True},
        ),
        ([{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}], {"kind": "none"}),
    ],
)
def test_preprocessing_becomes_our_normalization(tmp_path, steps, expected):
    rdf = rdf_2d()
    rdf["inputs"][0]["preprocessing"] = steps
    assert registry.find_model(package(tmp_path, Bright(), rdf)).card.normalization == expected


# ---------------------------------------------------------------------- bad input


def test_bad_packages_are_listed_with_the_reason_and_never_break_the_list(tiny, tmp_path):
    good = export_bioimageio(tiny, tmp_path / "good.zip", weight_formats=["pytorch_state_dict"])
    rdf = rdf_of(good)
    user = Path(registry.user_models_dir())

    def named(name: str, **changes) -> dict:
        config = {**rdf["config"], "napari_microseg": {"registry_name": name}}
        return {**rdf, "config": config, **changes}

    rewrite(good, user / "missing.zip", rdf=named("missing"), drop=("weights.pt",))
    rewrite(
        good, user / "checksum.zip", rdf=named("checksum"), replace={"weights.pt": b"\x00" * 64}
    )
    rewrite(good, user / "version.zip", rdf=named("version", format_version="0.9.1"))
    tf = {"tensorflow_saved_model_bundle": {"source": "weights.pt", "tensorflow_version": "2.15"}}
    rewrite(good, user / "tensorflow.zip", rdf=named("tensorflow", weights=tf))
    (user / "junk.zip").write_bytes(b"PK\x03\x04 broken")
    entries = {e.path.name: e for e in registry.list_models()}
    assert entries["tiny.safetensors"].usable
    assert "weights.pt" in entries["missing.zip"].problem
    assert "missing" in entries["missing.zip"].problem
    assert "0.9.1" in entries["version.zip"].problem
    assert "tensorflow" in entries["tensorflow.zip"].problem.lower()
    assert not entries["junk.zip"].usable
    # The checksum is checked when the model loads (listing does not hash every file).
    with pytest.raises(ModelError, match=r"Checksum mismatch.*weights\.pt"):
        registry.load_model(user / "checksum.zip", device="cpu")
    for name, words in [
        ("missing.zip", "missing"),
        ("version.zip", "spec version"),
        ("tensorflow.zip", "TensorFlow"),
    ]:
        with pytest.raises(ModelError, match=words):
            import_bioimageio(user / name, f"x-{name}")


def test_unsupported_processing_and_axes_are_named(tmp_path):
    rdf = rdf_2d()
    rdf["outputs"][0]["postprocessing"] = [{"id": "stardist_postprocessing", "kwargs": {}}]
    entry = registry.find_model(package(tmp_path, Bright(), rdf, "a.zip"))
    assert "stardist_postprocessing" in entry.problem
    rdf = rdf_2d()
    rdf["inputs"][0]["axes"].insert(1, {"type": "time", "size": 3})
    assert "time" in registry.find_model(package(tmp_path, Bright(), rdf, "b.zip")).problem


class Payload:
    """Unpickling this would run code: create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_state_dict_package_runs_no_code(tiny, tmp_path):
    good = export_bioimageio(tiny, tmp_path / "good.zip", weight_formats=["pytorch_state_dict"])
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"head.weight": Payload(marker)})
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buffer)
    evil = pickle.dumps(Payload(marker))
    rdf = rdf_of(good)
    for data, name in [(payload, "evil-a.zip"), (evil, "evil-b.zip")]:
        rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(data).hexdigest()
        bad = rewrite(good, tmp_path / name, rdf=rdf, replace={"weights.pt": data})
        with pytest.raises(ModelError, match=r"Refused|not a readable"):
            import_bioimageio(bad, name[:-4])
        with pytest.raises(ModelError):
            registry.load_model(bad, device="cpu")
    assert not marker.exists()


def test_a_malicious_torchscript_package_runs_no_code(tiny, tmp_path):
    good = export_bioimageio(tiny, tmp_path / "good.zip", weight_formats=["torchscript"])
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(good) as archive:
        scripted = archive.read("weights_torchscript.pt")
    evil = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(scripted)) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Payload(marker), protocol=2)
            dst.writestr(item, data)
    rdf = rdf_of(good)
    rdf["weights"]["torchscript"]["sha256"] = hashlib.sha256(evil.getvalue()).hexdigest()
    bad = rewrite(
        good, tmp_path / "evil.zip", rdf=rdf, replace={"weights_torchscript.pt": evil.getvalue()}
    )
    with pytest.raises(ModelError, match="TorchScript"):
        import_bioimageio(bad, "evil")
    assert not marker.exists()
    assert not any(e.name == "evil" for e in registry.list_models())
