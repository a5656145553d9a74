"""Export a semantic model as a bioimage.io model package (spec 0.5).

The package is built with the ``bioimageio.spec`` library (the ``[bioimageio]``
extra) and holds:

* the weights twice: a PyTorch state dict (a plain ``{name: tensor}`` dict,
  loadable with ``weights_only=True``) with the network's source as one
  self-contained Python file, and TorchScript (scripted, so any tile size works);
* a test input made by our synthetic sample generator and the test output made
  by our own :func:`~napari_microseg.core.inference.predict.predict`;
* the card's normalization as bioimage.io preprocessing (``scale_range``,
  ``scale_linear``, ``zero_mean_unit_variance``, ``clip``) and its activation as
  postprocessing (``softmax``/``sigmoid``), the tile granularity and halo;
* training data, metrics, citations, licence and lineage: in the description,
  the README and, complete, as our card under ``config.napari_microseg``, which
  :mod:`.bioimageio_import` reads back, so a model survives the round trip.

Nothing here touches the network: it only reads files and writes the package.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from .base import ModelCard, ModelError, SegmentationModel
from .bioimageio_package import CONFIG_KEY, FAMILY_CALLABLES, MISSING_EXTRA
from .registry import load_model

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from ..progress import Progress

__all__ = ["DEFAULT_LICENSE", "WEIGHT_FORMATS", "export_bioimageio", "export_bioimageio_job"]

#: Weight formats written by default (both: TorchScript runs without our code).
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript")
#: Licence of the weights when the card names none: the package's own.
DEFAULT_LICENSE = "BSD-3-Clause"
#: Side of the square test input; small enough to predict in well under a second.
TEST_SIZE = 256
#: Papers of our architectures, cited in every package of that family.
FAMILY_CITATIONS: dict[str, tuple[str, str]] = {
    "unet": (
        "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015.",
        "10.1007/978-3-319-24574-4_28",
    ),
    "segnet": (
        "Badrinarayanan, Kendall, Cipolla. SegNet: A Deep Convolutional Encoder-Decoder "
        "Architecture for Image Segmentation. IEEE TPAMI 2017.",
        "10.1109/TPAMI.2016.2644615",
    ),
    "micronet": (
        "Raza et al. Micro-Net: A unified model for segmentation of various objects in "
        "microscopy images. Medical Image Analysis 2019.",
        "10.1016/j.media.2018.12.003",
    ),
}


def architecture_source(family: str) -> tuple[str, str]:
    """One self-contained Python file defining the network of ``family``, and its class name.

    Our families import their shared layers relatively; a package needs one file,
    so the layers module is put in front of the family's module.
    """
    if family not in FAMILY_CALLABLES:
        raise ModelError(f"No architecture source for {family!r}.")
    module, callable_name = FAMILY_CALLABLES[family]
    folder = Path(__file__).parent
    parts = []
    for name in ("layers", module):
        text = (folder / f"{name}.py").read_text(encoding="utf-8")
        text = re.sub(r"^from __future__ import annotations\n", "", text, flags=re.M)
        parts.append(re.sub(r"^from \.layers import .*\n", "", text, flags=re.M))
    header = f'"""{callable_name} of napari-microseg, with the layers it uses (one file)."""\n'
    return header + "\nfrom __future__ import annotations\n\n" + "\n\n".join(parts), callable_name


def _require_spec() -> Any:
    try:
        import bioimageio.spec  # noqa: F401
        from bioimageio.spec.model import v0_5
    except ImportError as error:
        raise ModelError(f"Exporting to bioimage.io {MISSING_EXTRA}") from error
    return v0_5


def _test_image(card: ModelCard) -> np.ndarray:
    """A deterministic raw test image ``(C, Y, X)`` like the model's own data."""
    from ..io.synthetic import fibsem_mitochondria, fluorescence_nuclei, he_glands

    size = (TEST_SIZE, TEST_SIZE)
    if card.in_channels == 3:
        return np.moveaxis(he_glands(size).image, -1, 0).astype(np.float32)
    if "fluo" in card.modality.lower():
        image = fluorescence_nuclei(size).image
    else:
        image = fibsem_mitochondria((1, *size)).image[0]
    return np.repeat(image[None].astype(np.float32), card.in_channels, axis=0)


def _preprocessing(v0_5: Any, card: ModelCard) -> list[Any]:
    """The card's normalization as bioimage.io preprocessing steps (inverse of the import)."""
    spec = dict(card.normalization)
    kind = spec.get("kind")
    if spec.get("match"):
        raise ModelError(
            f"Model {card.name!r} matches its input intensities to a training reference "
            "(adapted to a session), which bioimage.io preprocessing cannot express; other tools "
            "would run it without, and get other results. Export its parent, or fine-tune it "
            "with matching off."
        )
    if spec.get("flat_field"):
        raise ModelError(
            f"Model {card.name!r} corrects uneven illumination plane by plane (flat field, "
            "adapted to a session), which bioimage.io preprocessing cannot express; other tools "
            "would run it without, and get other results. Export its parent instead."
        )
    if spec.get("smooth"):
        raise ModelError(
            f"Model {card.name!r} smooths its input (Gaussian sigma {spec['smooth']} px, adapted "
            "to a noisy session), which bioimage.io preprocessing cannot express; other tools "
            "would run it without, and get other results. Export its parent instead."
        )
    spatial = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    # RGB is scaled jointly unless the card says per channel (see inference.normalize).
    joint = spatial if spec.get("per_channel") else [v0_5.AxisId("channel"), *spatial]
    steps: list[Any] = []
    if kind == "percentile":
        steps.append(
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=joint,
                    min_percentile=float(spec.get("low", 1.0)),
                    max_percentile=float(spec.get("high", 99.8)),
                )
            )
        )
    elif kind == "range":
        low, high = float(spec["min"]), float(spec["max"])
        steps.append(
            v0_5.ScaleLinearDescr(
                kwargs=v0_5.ScaleLinearKwargs(gain=1.0 / (high - low), offset=-low / (high - low))
            )
        )
    elif kind == "zscore":
        steps.append(
            v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=joint))
        )
    elif kind != "none":
        raise ModelError(f"Model {card.name!r}: normalization {spec!r} has no bioimage.io form.")
    if spec.get("clip"):
        steps.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0)))
    return steps


def _readme(card: ModelCard, halo: int) -> str:
    """The package's documentation: the card in words, and how to run it."""
    metrics = {k: v for k, v in card.metrics.items() if isinstance(v, int | float)}
    lines = [
        f"# {card.name}",
        "",
        card.description or f"{card.architecture} semantic segmentation model.",
        "",
        f"Exported by napari-microseg {__version__} from its model card.",
        "",
        "## Input and output",
        "",
        f"- input: {card.in_channels} channel(s), normalization "
        + json.dumps({k: v for k, v in card.normalization.items() if k != "reference"}),
        f"- output: probabilities of {', '.join(card.classes)} (channel axis)",
        f"- pixel size: {card.pixel_size_um} µm" if card.pixel_size_um else "- pixel size: unknown",
        f"- halo: {halo} pixels per side; recommended tile {card.recommended.get('tile_size')}",
        "",
        "## Training data",
        "",
        card.trained_on or "not recorded",
        "",
    ]
    if metrics:
        lines += ["## Metrics", "", f"Measured on: {card.metrics.get('data', 'not recorded')}", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in metrics.items()]
        lines.append("")
    if card.parent or card.lineage:
        lines += ["## Lineage", ""]
        lines.append(f"- parent: {card.parent or 'none (trained from scratch)'}")
        for key in ("kind", "data_sha256", "parent_sha256", "finished"):
            if card.lineage.get(key):
                lines.append(f"- {key}: {card.lineage[key]}")
        lines.append("")
    lines += [
        "## Use",
        "",
        "In napari-microseg: `microseg models import THIS.zip --name NAME`. Elsewhere: any",
        "bioimage.io runtime (`bioimageio.core`) with the TorchScript or state-dict weights.",
        "",
    ]
    return "\n".join(lines)


def _safe_id(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "class"


def _is_our_package(path: Path) -> bool:
    """Whether ``path`` is a package we exported (so ``overwrite`` may replace it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{CONFIG_KEY}:" in archive.read("rdf.yaml").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def export_bioimageio(
    model: str | os.PathLike | SegmentationModel,
    out: str | os.PathLike,
    *,
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    authors: Sequence[str] = (),
    license: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io model package (``.zip``), validated by ``bioimageio.spec``.

    Parameters
    ----------
    model : str, path-like or SegmentationModel
        A registry name, a model file, or a loaded 2D semantic model.
    out : path-like
        The ``.zip`` to write (atomically).
    weight_formats : sequence of {"pytorch_state_dict", "torchscript"}
        Which weights to include.
    authors : sequence of str
        Names of the authors; "napari-microseg user" if none is given.
    license : str, optional
        SPDX identifier of the weights' licence; :data:`DEFAULT_LICENSE` by default.
    overwrite : bool
        Replace ``out`` if it is a package we exported earlier; any other file is kept.

    Returns
    -------
    Path
        The package.

    Raises
    ------
    ModelError
        If ``bioimageio.spec`` is not installed, the model is not a 2D semantic model of
        a family we can describe, or the package fails validation (the message lists why).
    FileExistsError
        If ``out`` exists and may not be replaced.
    """
    v0_5 = _require_spec()
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ModelError(f"A bioimage.io package is a .zip file; {out.name} is not.")
    if out.exists() and not (overwrite and _is_our_package(out)):
        reason = (
            "pass overwrite (--overwrite) to replace it"
            if _is_our_package(out)
            else ("it was not written by napari-microseg, so it is never replaced")
        )
        raise FileExistsError(f"{out} already exists; {reason}.")
    unknown = sorted(set(weight_formats) - set(WEIGHT_FORMATS))
    if unknown or not weight_formats:
        raise ModelError(
            f"Weight formats must be among {', '.join(WEIGHT_FORMATS)}, not {list(weight_formats)}."
        )
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device="cpu")
    card = model.card
    if card.task != "semantic" or card.architecture not in FAMILY_CITATIONS:
        raise ModelError(
            f"Model {card.name!r} ({card.architecture}, {card.task}) cannot be exported: "
            f"bioimage.io export covers 2D semantic models ({', '.join(FAMILY_CITATIONS)})."
        )
    if card.context_slices:
        raise ModelError(
            f"Model {card.name!r} takes {2 * card.context_slices + 1} neighbouring slices as "
            "channels; bioimage.io export covers single-plane 2D models."
        )
    with tempfile.TemporaryDirectory(prefix="microseg-bioimageio-") as tmp:
        descr = _describe(v0_5, model, Path(tmp), weight_formats, authors, license)
        _save_and_validate(descr, out)
    return out


def export_bioimageio_job(
    model: str | os.PathLike | SegmentationModel,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """:func:`export_bioimageio` as a job: one progress event, then the package's path.

    The export takes seconds (tracing the network, predicting the test output,
    validating), so the widgets run it off the GUI thread like every long job.
    """
    from ..progress import Progress

    yield Progress(0, None, "writing the bioimage.io package")
    return export_bioimageio(model, out, overwrite=overwrite)


def _describe(
    v0_5: Any,
    model: SegmentationModel,
    folder: Path,
    weight_formats: Sequence[str],
    authors: Sequence[str],
    license: str | None,
) -> Any:
    """Write the package's files into ``folder`` and return its ``ModelDescr``."""
    import torch
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    from ..inference.predict import predict

    card = model.card
    model.to("cpu").eval()
    multiple = int(getattr(model.module, "multiple", 1))
    tile = int(card.recommended.get("tile_size") or TEST_SIZE)
    overlap = float(card.recommended.get("overlap", 0.25))
    # Half the overlap of neighbouring tiles is what each tile's border may be wrong by.
    halo = round(tile * overlap / 2)
    minimum = max(multiple, 2 * halo + multiple)
    minimum += (-minimum) % multiple

    test_input = _test_image(card)
    # float32 even where the CPU would pick bfloat16: other tools reproduce this output in
    # float32 to a relative tolerance of 1e-3, which bfloat16 does not meet.
    probabilities = predict(model, test_input, axes="CYX", device="cpu", amp=False)
    np.save(folder / "test_input.npy", test_input[None])
    np.save(folder / "test_output.npy", np.asarray(probabilities, np.float32)[None])

    weights: dict[str, Any] = {}
    torch_version = v0_5.Version(torch.__version__.split("+")[0])
    state = {key: value.detach().float() for key, value in model.module.state_dict().items()}
    if "pytorch_state_dict" in weight_formats:
        torch.save(state, folder / "weights.pt")
        source, callable_name = architecture_source(card.architecture)
        (folder / f"{card.architecture}.py").write_text(source, encoding="utf-8")
        kwargs = {"in_channels": card.in_channels, "n_classes": card.n_classes}
        kwargs.update(card.hyperparameters)
        weights["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=v0_5.ArchitectureFromFileDescr(
                source=folder / f"{card.architecture}.py", callable=callable_name, kwargs=kwargs
            ),
            pytorch_version=torch_version,
        )
    if "torchscript" in weight_formats:
        try:
            scripted = torch.jit.script(model.module.float())
        except Exception as error:  # TorchScript rejects some Python; say which model
            raise ModelError(
                f"Model {card.name!r} cannot be scripted to TorchScript ({error}); export "
                "the state dict only (--weights pytorch_state_dict)."
            ) from error
        scripted.save(str(folder / "weights_torchscript.pt"))
        weights["torchscript"] = v0_5.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt",
            pytorch_version=torch_version,
            parent="pytorch_state_dict" if "pytorch_state_dict" in weights else None,
        )

    def space(axis: str, output: bool) -> Any:
        unit = "micrometer" if card.pixel_size_um else None
        scale = float(card.pixel_size_um) if card.pixel_size_um else 1.0
        if output:
            return v0_5.SpaceOutputAxisWithHalo(
                id=v0_5.AxisId(axis),
                halo=halo,
                size=v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(axis)),
                unit=unit,
                scale=scale,
            )
        return v0_5.SpaceInputAxis(
            id=v0_5.AxisId(axis),
            size=v0_5.ParameterizedSize(min=minimum, step=multiple),
            unit=unit,
            scale=scale,
        )

    channel_names = (
        [f"channel{i}" for i in range(card.in_channels)] if card.in_channels > 1 else ["raw"]
    )
    inputs = v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"),
        description=f"raw image, {card.modality or 'microscopy'}",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channel_names]),
            space("y", False),
            space("x", False),
        ],
        test_tensor=v0_5.FileDescr(source=folder / "test_input.npy"),
        preprocessing=_preprocessing(v0_5, card),
    )
    post: list[Any] = []
    if model.activation == "softmax":
        post.append(v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel"))))
    elif model.activation == "sigmoid":
        post.append(v0_5.SigmoidDescr())
    outputs = v0_5.OutputTensorDescr(
        id=v0_5.TensorId("probabilities"),
        description=f"per-class probabilities: {', '.join(card.classes)}",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(_safe_id(c)) for c in card.classes]),
            space("y", True),
            space("x", True),
        ],
        test_tensor=v0_5.FileDescr(source=folder / "test_output.npy"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=post,
    )
    (folder / "README.md").write_text(_readme(card, halo), encoding="utf-8")
    text, doi = FAMILY_CITATIONS[card.architecture]
    cite = [v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi))]
    training_data = None
    if card.trained_on:
        training_data = DatasetDescr(
            name=card.trained_on.split(";")[0][:128] or "training data",
            description=card.trained_on,
        )
    our_card = card.to_dict()
    created = _dt.datetime.fromisoformat(card.created) if card.created else None
    return v0_5.ModelDescr(
        name=_display_name(card.name),
        description=(card.description or f"{card.architecture} model")[:1024],
        authors=[v0_5.Author(name=name) for name in (authors or ["napari-microseg user"])],
        cite=cite,
        license=license or DEFAULT_LICENSE,
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        tags=_tags(card),
        inputs=[inputs],
        outputs=[outputs],
        weights=v0_5.WeightsDescr(**weights),
        training_data=training_data,
        timestamp=created or _dt.datetime.now(_dt.timezone.utc),
        config=v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(
                reproducibility_tolerance=[
                    v0_5.ReproducibilityTolerance(relative_tolerance=1e-3, absolute_tolerance=1e-4)
                ],
                architecture_type=card.architecture,
                modality=card.modality or None,
                target_structure=[c for c in card.classes if c != "background"],
                task="semantic-segmentation",
                model_parameter_count=int(sum(v.numel() for v in state.values())),
            ),
            # Our complete card: what the import restores, lineage and metrics included.
            **{CONFIG_KEY: {"card": json.loads(json.dumps(our_card)), "version": __version__}},
        ),
    )


def _display_name(name: str) -> str:
    # bioimage.io names allow letters, digits, spaces and a few marks; keep ours readable.
    cleaned = re.sub(r"[^A-Za-z0-9 _\-().+]+", " ", name).strip()
    # The spec wants at least 5 characters; a short name gets a suffix, the card keeps it.
    return (cleaned if len(cleaned) >= 5 else f"{cleaned} model".strip())[:128]


def _tags(card: ModelCard) -> list[str]:
    tags = ["napari-microseg", "semantic-segmentation", "2d", "pytorch", card.architecture]
    if card.modality:
        tags.append(card.modality.lower())
    if card.parent:
        tags.append("fine-tuned")
    return tags


def _save_and_validate(descr: Any, out: Path) -> None:
    """Save the package atomically after ``bioimageio.spec`` found it valid."""
    from bioimageio.spec import save_bioimageio_package

    from ..io.atomic import atomic_path

    summary = descr.validation_summary
    if summary.status == "failed":
        raise ModelError(f"The bioimage.io description is invalid:\n{summary.display_text()}")
    with atomic_path(out) as tmp:
        save_bioimageio_package(descr, output_path=tmp)
