"""Bundled models: every shipped model is complete and runs; a broken install says how to repair.

The first tests are parametrized over the models actually shipped in
``src/napari_microseg/models/``; the manifest there lists what must be
present, so a model dropped from an install fails the suite.
The other tests build tiny models in a temporary bundled folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_microseg.bundling.bundle import save_bundled
from napari_microseg.bundling.split import BundleError
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.models.bundled import (
    BUNDLED,
    MANIFEST_NAME,
    MAX_MODEL_MB,
    MAX_TOTAL_MB,
    TARGETS,
    card_problems,
    guess_modality,
    read_manifest,
    suggest_model,
)
from napari_microseg.core.models.checkpoint import inspect_checkpoint, load_checkpoint
from napari_microseg.core.models.entries import ModelEntry, scan_folder

#: The package's real bundled folder (read before any test patches the registry).
SHIPPED = registry.bundled_models_dir()
SHIPPED_ENTRIES = scan_folder(SHIPPED, "bundled")
REINSTALL = "pip install --force-reinstall napari-microseg"


def _ids(entries: list[ModelEntry]) -> list[str]:
    return [entry.name for entry in entries]


# ----------------------------------------------------------------------------- shipped models


@pytest.mark.parametrize("entry", SHIPPED_ENTRIES, ids=_ids(SHIPPED_ENTRIES))
def test_shipped_model_has_a_complete_card_and_fits_the_size_limit(entry):
    assert entry.usable, entry.problem
    assert entry.name in BUNDLED, f"{entry.name} is not one of the bundled models of issue #8"
    assert entry.path.stem == entry.name
    info = inspect_checkpoint(entry.path)
    assert card_problems(info.card) == []
    spec = BUNDLED[entry.name]
    assert info.card.architecture == spec.architecture
    target = info.card.metrics["target"]
    assert target["metric"] == TARGETS[spec.kind].metric
    assert target["minimum"] == TARGETS[spec.kind].minimum
    assert target["met"] == (target["value"] >= target["minimum"])
    assert info.card.metrics[target["metric"]] == pytest.approx(target["value"])
    assert info.dtype == "float16"
    assert info.size_bytes <= MAX_MODEL_MB * 1e6


@pytest.mark.parametrize("entry", SHIPPED_ENTRIES, ids=_ids(SHIPPED_ENTRIES))
def test_shipped_model_loads_and_segments_a_small_synthetic_image_on_cpu(entry):
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.inference.segment import segment_job
    from napari_microseg.core.io.synthetic import fluorescence_nuclei, he_glands
    from napari_microseg.core.progress import drain

    model = load_checkpoint(entry.path, device="cpu")  # also checks the SHA-256
    sample = he_glands((96, 96)) if model.in_channels == 3 else fluorescence_nuclei((96, 96))
    axes = "YXC" if model.in_channels == 3 else "YX"
    options = PredictOptions.for_card(model.card, device="cpu")
    result = drain(segment_job(model, sample.image, axes=axes, options=options), show=False)
    assert result.labels.shape == (96, 96)
    if result.probabilities is not None:
        assert np.isfinite(result.probabilities).all()


def test_shipped_models_together_fit_the_size_limit_and_match_the_manifest():
    total = sum(inspect_checkpoint(e.path).size_bytes for e in SHIPPED_ENTRIES if e.usable)
    assert total <= MAX_TOTAL_MB * 1e6
    manifest = read_manifest(SHIPPED)
    assert set(manifest) == {e.name for e in SHIPPED_ENTRIES}
    for entry in SHIPPED_ENTRIES:
        item = manifest[entry.name]
        payload = entry.path.read_bytes()
        assert hashlib.sha256(payload).hexdigest() == item["sha256"]
        assert len(payload) == item["weights_bytes"]
        assert inspect_checkpoint(entry.path).sha256 == item["sha256"]


# ----------------------------------------------------------------------------- damaged installs


@pytest.fixture
def two_bundled(isolated_registry, make_bundled_model):
    folder = isolated_registry["bundled"]
    make_bundled_model(folder, "mito-em")
    make_bundled_model(folder, "membrane-em", kind="isbi2012", seed=1)
    return folder


def _entry(name: str) -> ModelEntry:
    return next(e for e in registry.list_models() if e.name == name)


def _others_still_work(name: str = "membrane-em") -> None:
    entry = _entry(name)
    assert entry.usable, entry.problem
    assert name in [value for _, value in registry.model_choices()]
    assert registry.load_model(name, device="cpu").name == name


def test_intact_bundled_models_are_listed_and_load(two_bundled):
    assert {e.name for e in registry.list_models() if e.source == "bundled" and e.usable} == {
        "mito-em",
        "membrane-em",
    }
    assert registry.load_model("mito-em", device="cpu").card.metrics["target"]["metric"]
    _others_still_work()


@pytest.mark.parametrize("which", ["weights", "card", "both"])
def test_a_missing_bundled_file_names_the_file_and_says_reinstall(two_bundled, which):
    if which in ("weights", "both"):
        (two_bundled / "mito-em.safetensors").unlink()
    if which in ("card", "both"):
        (two_bundled / "mito-em.json").unlink()
    entry = _entry("mito-em")
    assert not entry.usable and entry.source == "bundled"
    assert REINSTALL in entry.problem
    assert ("mito-em.json" if which == "card" else "mito-em") in entry.problem
    with pytest.raises(ModelError, match="force-reinstall"):
        registry.load_model("mito-em", device="cpu")
    _others_still_work()


def test_a_truncated_bundled_file_names_the_file_and_says_reinstall(two_bundled):
    weights = two_bundled / "mito-em.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    entry = _entry("mito-em")
    assert not entry.usable
    assert "mito-em.safetensors" in entry.problem and REINSTALL in entry.problem
    _others_still_work()


def test_a_damaged_bundled_file_of_the_right_size_fails_on_loading_with_the_fix(two_bundled):
    weights = two_bundled / "mito-em.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor: the header and size stay valid
    weights.write_bytes(bytes(data))
    assert _entry("mito-em").usable  # listing reads headers only; loading checks the hash
    with pytest.raises(ModelError) as error:
        registry.load_model("mito-em", device="cpu")
    message = str(error.value)
    assert "SHA-256" in message and str(weights) in message and REINSTALL in message
    _others_still_work()


def test_an_unreadable_bundled_card_names_the_file_and_says_reinstall(two_bundled):
    (two_bundled / "mito-em.json").write_text("{broken", encoding="utf-8")
    entry = _entry("mito-em")
    assert not entry.usable
    assert "mito-em.json" in entry.problem and REINSTALL in entry.problem
    _others_still_work()


def test_a_user_model_is_never_blamed_on_the_installation(isolated_registry, make_bundled_model):
    user = isolated_registry["user"]
    user.mkdir()
    make_bundled_model(user, "mine")
    (user / "mine.safetensors").write_bytes(b"\0" * 16)
    entry = _entry("mine")
    assert not entry.usable and "reinstall" not in entry.problem


# ----------------------------------------------------------------------------- saving


def test_save_bundled_writes_float16_card_and_manifest_atomically(two_bundled):
    manifest = json.loads((two_bundled / MANIFEST_NAME).read_text())
    assert set(manifest["models"]) == {"mito-em", "membrane-em"}
    info = inspect_checkpoint(two_bundled / "mito-em.safetensors")
    assert info.dtype == "float16" and info.sha256 == manifest["models"]["mito-em"]["sha256"]
    assert not [p for p in two_bundled.iterdir() if ".partial" in p.name]
    # The manifest is not listed as a model.
    assert {e.name for e in registry.list_models()} == {"mito-em", "membrane-em"}


def test_save_bundled_refuses_too_large_taken_names_and_incomplete_cards(two_bundled):
    model = registry.load_model("mito-em", device="cpu")
    before = sorted(p.name for p in two_bundled.iterdir())
    with pytest.raises(BundleError, match="exists already"):
        save_bundled(model, model.card, two_bundled)
    with pytest.raises(BundleError, match=r"at most 0\.0001 MB"):
        save_bundled(model, model.card, two_bundled, overwrite=True, max_mb=0.0001)
    with pytest.raises(BundleError, match="together"):
        save_bundled(model, model.card, two_bundled, overwrite=True, max_total_mb=0.01)
    model.card.recommended.pop("mpx_per_s_cpu")
    with pytest.raises(BundleError, match="mpx_per_s_cpu"):
        save_bundled(model, model.card, two_bundled, overwrite=True)
    assert sorted(p.name for p in two_bundled.iterdir()) == before


def test_card_problems_name_every_missing_item():
    from napari_microseg.core.models.base import ModelCard

    problems = " ".join(card_problems(ModelCard(name="x", architecture="unet")))
    for item in (
        "trained_on",
        "lineage.dataset",
        "lineage.settings",
        "lineage.duration_s",
        "lineage.steps",
        "lineage.hardware",
        "recommended.tile_size",
        "recommended.postprocess",
        "recommended.mpx_per_s_cpu",
        "metrics.data",
        "metrics.validation",
        "metrics.target",
    ):
        assert item in problems, item


def test_card_problems_check_the_recommended_tta():
    from napari_microseg.core.models.base import ModelCard

    def tta_problems(value, task="semantic"):
        card = ModelCard(name="x", architecture="unet", task=task, recommended={"tta": value})
        return [p for p in card_problems(card) if "tta" in p]

    assert tta_problems(True) == [] and tta_problems(False) == []
    assert tta_problems("yes") == [
        "recommended.tta (test-time augmentation by default) is not true or false"
    ]
    assert tta_problems(True, task="instance") == [
        "recommended.tta is on, but an instance model cannot use it"
    ]
    assert tta_problems(False, task="instance") == []


# ----------------------------------------------------------------------------- suggestions


def _fake(name: str, channels: int, modality: str, source: str = "bundled") -> ModelEntry:
    return ModelEntry(
        name=name, source=source, path=Path(name), in_channels=channels, modality=modality
    )


ALL = [
    _fake("mito-em", 1, "EM"),
    _fake("membrane-em", 1, "EM"),
    _fake("nuclei-fluo", 1, "fluorescence / brightfield"),
    _fake("gland-he", 3, "H&E"),
]


def test_suggestions_follow_the_kind_of_image():
    from napari_microseg.core.io.synthetic import fibsem_mitochondria, fluorescence_nuclei

    em = fibsem_mitochondria((8, 96, 96)).image
    fluo = fluorescence_nuclei().image
    assert suggest_model(ALL, channels=1, spatial_ndim=3, sample=em[4]) == "mito-em"
    assert suggest_model(ALL, channels=1, spatial_ndim=2, sample=em[4]) == "mito-em"
    assert suggest_model(ALL, channels=1, spatial_ndim=2, sample=fluo) == "nuclei-fluo"
    assert suggest_model(ALL, channels=1, pixel_size_um=0.005) == "mito-em"
    assert suggest_model(ALL, channels=1, pixel_size_um=0.3, sample=em[4]) == "nuclei-fluo"
    assert suggest_model(ALL, channels=3) == "gland-he"
    brightfield = 255 - fluo.astype(np.float32)  # dark nuclei on a bright background
    assert guess_modality(1, sample=brightfield) == "brightfield"
    assert suggest_model(ALL, channels=1, sample=brightfield) == "nuclei-fluo"


def test_no_suggestion_without_a_suited_usable_bundled_model():
    from dataclasses import replace

    assert suggest_model([], channels=1) is None
    users = [_fake("mito-em", 1, "EM", source="user")]
    assert suggest_model(users, channels=1, pixel_size_um=0.005) is None
    broken = [replace(ALL[0], problem="damaged")]
    assert suggest_model(broken, channels=1, pixel_size_um=0.005) is None
    assert suggest_model(ALL[:2], channels=1, pixel_size_um=0.3) is None  # fluorescence
    assert suggest_model(ALL[:3], channels=3) is None
    assert guess_modality(1, spatial_ndim=3) == "EM"
