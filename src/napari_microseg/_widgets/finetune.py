"""Fine-tune widget: adapt a model to a new session, label-free first, then from corrections.

It proposes the recipe benchmarks/bench_adapt.py found best (issue #21):

1. "Adapt to this image": re-estimate the model's batch-norm statistics on the
   image, no labels needed, about a second (:func:`~..core.training.adapt.adapt`);
2. fine-tune on the corrected labels with the few-shot settings of
   :meth:`TrainSettings.for_finetune` (flat-field correction of uneven
   illumination and adaptation first, each kept only if the held-out annotated
   pixels agree; per-part learning rates; early stop; the parent kept when
   nothing beats it).

"Adapt to this image" can also correct uneven illumination (a checkbox), which
no label can check, so it is off unless ticked.

The base model follows the image in view: the model that segmented it (the
Segment widget records it in its result layers' metadata), else the bundled
model suggested for it, until the user picks one. Training uses whole
annotated slices, or only the edited region plus a margin (what changed since
the model's result, grown to the touched objects); the number of annotated
pixels is shown. Other images of the session corrected the same way can be
ticked to learn from at once ("also learn from"), and images nobody corrected
for the batch-norm statistics only ("uncorrected images"; :mod:`._more_images`);
each list shows only when the viewer holds such layers.
Training runs in a worker thread with live curves; at the end the dock shows
the held-out metrics of the parent, the adapted and the fine-tuned model, and
one click segments again with the new model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning

from ._dock import DockedContainer
from ._finetune_results import FinetuneSummary, TrainingCurves
from ._layer_edits import edited_since_made
from ._more_images import (
    other_corrections,
    pixel_size_um,
    statistics_pairs,
    training_pairs,
    uncorrected_images,
)
from ._runner import JobRunner
from .segment import NO_MODEL, image_axes, layer_hints

if TYPE_CHECKING:
    import napari

    from ..core.models.base import SegmentationModel
    from ..core.progress import Progress

LOG = logging.getLogger(__name__)

#: Height of the "also learn from" and "uncorrected images" lists, in pixels: about four rows.
LIST_HEIGHT = 80
#: What the fine-tune learns from: every pixel of the annotated slices, or the edited region.
WHOLE_SLICES = "whole annotated slices"
EDITED_REGION = "edited region + margin"
#: The recipe the widget proposes (benchmarks/bench_adapt.py, docs/benchmarks.md).
RECIPE = (
    "Recipe: 1) Adapt to this image (no labels, about a second); 2) correct a few objects or "
    "slices and fine-tune (corrects uneven illumination if the held-out pixels gain, adapts "
    "first, encoder at 1/4 of the rate, early stop on held-out pixels, keeps the parent if "
    "nothing beats it, segments at the threshold your annotated pixels prefer)."
)
#: The recipe for a model whose card says label-free adaptation lowered its scores.
RECIPE_NO_LABEL_FREE = (
    "Recipe for this model: correct a few objects or images and fine-tune (skip 'Adapt to this "
    "image': benchmarks/bench_adapt.py found that it lowers this model's scores; the fine-tune "
    "tries the statistics itself and keeps them only when held-out pixels agree)."
)
#: Added to the recipe of a model whose card says one image's fine-tunes were worse.
ONE_IMAGE_HINT = (
    "Annotate two or more images or slices: trained on one, this model scored worse on the "
    "session's other images (benchmarks/bench_adapt.py), so with one it is not trained; only "
    "the corrections that need no training (smoothing a noisy session, a fixed threshold) are "
    "tried."
)
FLAT_FIELD_TOOLTIP = (
    "With 'Adapt to this image': the new model divides each plane by its smoothed brightness "
    "before segmenting, which undoes uneven illumination (vignetting, a lamp off centre). "
    "benchmarks/bench_flatfield.py: mito-em under an illumination gradient Dice 0.27 -> 0.90; "
    "it can cost up to 0.01 on evenly lit images, so leave it off when the light is even. A "
    "fine-tune from that model keeps the correction; a fine-tune also tries it by itself and "
    "keeps it when the held-out pixels gain."
)
MORE_TOOLTIP = (
    "Other images of this session you corrected: the labels Segment made on them (named "
    "'<image> <model> labels'). Each counts whole (every non-empty slice) and is normalised with "
    "its own image, as Segment normalises it; the held-out pixels come from all of them. "
    "benchmarks/bench_adapt.py: as good as stacking the same images on gland-he, worse on "
    "nuclei-fluo; images of one shape can be stacked into one layer instead."
)
UNCORRECTED_TOOLTIP = (
    "Other images of this session you did not correct: the fine-tune measures its batch-norm "
    "statistics on them too (kept only if held-out annotated pixels agree); nothing is trained "
    "on them. benchmarks/bench_adapt.py, gland-he with two corrected images and two uncorrected "
    "ones ticked, eight simulated sessions: Dice on the session's other images up in five, never "
    "down (mean +0.011); object F1 from +0.056 to -0.044 (mean 0.000)."
)
ADAPT_TOOLTIP = (
    "Re-estimate the model's batch-norm statistics on this image; saves a new model, "
    "the base model is not changed."
)


class FinetuneWidget(DockedContainer):
    """Dock widget that adapts a model to an image and fine-tunes it on corrected labels."""

    # The model the user picked by hand (the image in view no longer changes it), and whether
    # the picker is being changed by the widget itself. Class defaults: magicgui may reset the
    # choices before __init__ has run to its end.
    _picked: str | None = None
    _programmatic: bool = False

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        from ..core.training.settings import TrainSettings

        defaults = TrainSettings.for_finetune()
        self.recipe_label = Label(value=RECIPE)
        self.model_combo = ComboBox(label="base model", choices=[NO_MODEL])
        self.image_combo: ComboBox = create_widget(annotation=Image, label="image")
        self.adapt_button = PushButton(text="Adapt to this image (no labels)")
        self.adapt_button.tooltip = ADAPT_TOOLTIP
        self.flat_field = CheckBox(value=False, text="correct uneven illumination (flat field)")
        self.flat_field.tooltip = FLAT_FIELD_TOOLTIP
        self.labels_combo: ComboBox = create_widget(annotation=Labels, label="corrected labels")
        self.region_combo = ComboBox(choices=[WHOLE_SLICES, EDITED_REGION], label="train on")
        self.slices = LineEdit(value="", label="annotated slices")
        self.pixels_label = Label(value="annotated pixels: -", label="annotated")
        self.more_labels = Select(
            label="also learn from", choices=self._more_choices, allow_multiple=True
        )
        self.more_labels.tooltip = MORE_TOOLTIP
        self.more_images = Select(
            label="uncorrected images", choices=self._uncorrected_choices, allow_multiple=True
        )
        self.more_images.tooltip = UNCORRECTED_TOOLTIP
        for select in (self.more_labels, self.more_images):
            select.native.setMaximumHeight(LIST_HEIGHT)
        self.margin = SpinBox(value=16, min=0, max=1000, label="margin (px)")
        self.new_name = LineEdit(value="", label="new model name")
        self.minutes = FloatSpinBox(
            value=defaults.minutes, min=0.1, max=600.0, step=0.5, label="minutes"
        )
        self.steps = SpinBox(value=defaults.steps, min=1, max=1_000_000, label="max steps")
        self.learning_rate = FloatSpinBox(
            value=defaults.learning_rate, min=1e-6, max=1.0, step=1e-4, label="learning rate"
        )
        self._adapt_default = defaults.adapt_batchnorm
        self.adapt_first = CheckBox(
            value=defaults.adapt_batchnorm, text="adapt batch-norm statistics first"
        )
        self.freeze = CheckBox(value=False, text="freeze the encoder")
        self.device_combo = ComboBox(choices=["auto", "cpu", "cuda", "mps"], label="device")
        self.start_button = PushButton(text="Start fine-tuning")
        self.cancel_button = PushButton(
            text="Cancel (keeps the best so far as a draft)", enabled=False
        )
        self.result_label = Label(value="")
        self.segment_again = PushButton(text="Segment again with the new model", visible=False)
        self.extend(
            [
                self.recipe_label,
                self.model_combo,
                self.image_combo,
                self.flat_field,
                self.adapt_button,
                self.labels_combo,
                self.region_combo,
                self.slices,
                self.margin,
                self.pixels_label,
                self.more_labels,
                self.more_images,
                self.new_name,
                self.minutes,
                self.steps,
                self.learning_rate,
                self.adapt_first,
                self.freeze,
                self.device_combo,
                self.start_button,
                self.cancel_button,
                self.result_label,
                self.segment_again,
            ]
        )
        self.curves = TrainingCurves()
        self.content.layout().addWidget(self.curves.canvas)
        self.runner = JobRunner("Fine-tune", on_state=self._set_running, status=self.result_label)
        self.append(self.runner.panel)
        self.recipe_label.native.setWordWrap(True)
        self.result_label.native.setWordWrap(True)
        self.new_model: SegmentationModel | None = None
        # The labels as a widget made them (the model's result), per layer: the edited region
        # is what differs from them.
        self._made: dict[int, np.ndarray] = {}
        self._bound: Labels | None = None
        self.start_button.changed.connect(self.start)
        self.adapt_button.changed.connect(self.adapt_to_image)
        self.cancel_button.changed.connect(self.runner.cancel)
        self.segment_again.changed.connect(self.segment_with_new_model)
        self.labels_combo.changed.connect(self._bind_labels)
        self.labels_combo.changed.connect(self.detect_slices)
        self.labels_combo.changed.connect(self.refresh_more)
        self.image_combo.changed.connect(self.refresh_more)
        self.more_labels.changed.connect(self.refresh_more)
        self.more_labels.changed.connect(self.update_pixels)
        self.image_combo.changed.connect(self.follow_image)
        self.model_combo.changed.connect(self._remember_pick)
        self.model_combo.changed.connect(self._suggest_name)
        self.model_combo.changed.connect(self.show_recipe)
        self.region_combo.changed.connect(self.update_pixels)
        self.slices.changed.connect(self.update_pixels)
        self.margin.changed.connect(self.update_pixels)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        for layer in self.viewer.layers:
            self._remember_made(layer)
        self.refresh_models()
        self.follow_image()
        self.show_recipe()
        self._bind_labels(self.labels_combo.value)
        self.detect_slices()
        self.refresh_more()
        self.wrap_for_dock()

    # ------------------------------------------------------------------ inputs
    def refresh_models(self, keep: str | None = None) -> None:
        from ..core.models.registry import list_models

        usable = [e for e in list_models() if e.usable and e.task == "semantic"]
        self._entries = {e.name: e for e in usable}
        current = keep if keep is not None else self.model_combo.value
        choices = [(f"{e.name} — {e.family}, {e.modality}", e.name) for e in usable]
        self._set_model(lambda: setattr(self.model_combo, "choices", choices or [NO_MODEL]))
        if current in [value for _, value in choices]:
            self._set_model(lambda: setattr(self.model_combo, "value", current))
        self._suggest_name()

    def _set_model(self, change: Any) -> None:
        self._programmatic = True
        try:
            change()
        finally:
            self._programmatic = False

    def _remember_pick(self, event: Any = None) -> None:
        if not self._programmatic:
            self._picked = self.model_combo.value

    def model_for_image(self, layer: Image | None) -> str | None:
        """The model that segmented ``layer``, else the bundled model suggested for it.

        The Segment widget names its results ``"<image> <model> labels"`` and
        ``"<image> <model> probabilities"`` and records the model in their
        metadata; the newest such layer wins.
        """
        entries = getattr(self, "_entries", {})
        if layer is None or not entries:
            return None
        prefix = f"{layer.name} "
        for other in reversed(list(self.viewer.layers)):
            made_by = (other.metadata or {}).get("model")
            if other.name.startswith(prefix) and made_by in entries:
                return made_by
        from ..core.models.bundled import suggest_model

        try:
            hints = layer_hints(layer)
        except (ValueError, TypeError, IndexError):
            return None
        name = suggest_model(entries.values(), **hints)
        return name if name in entries else None

    def follow_image(self, event: Any = None) -> str | None:
        """Base model (until the user picks one) and labels layer follow the chosen image."""
        layer = self.image_combo.value
        if layer is not None:
            self._pick_labels_for(layer)
        if self._picked is not None and self._picked in getattr(self, "_entries", {}):
            return None
        name = self.model_for_image(layer)
        if name is not None:
            self._set_model(lambda: setattr(self.model_combo, "value", name))
            self._suggest_name()
        return name

    def _pick_labels_for(self, layer: Image) -> None:
        """Preselect the labels layer made from this image (``"<image> ... labels"``)."""
        prefix = f"{layer.name} "
        for other in reversed(list(self.viewer.layers)):
            if isinstance(other, Labels) and other.name.startswith(prefix):
                self.labels_combo.value = other
                return

    def reset_choices(self, event: Any = None) -> None:
        # magicgui resets every ComboBox to its constructor choices; keep the chosen model.
        keep = self.model_combo.value
        self._set_model(lambda: super(FinetuneWidget, self).reset_choices(event))
        if hasattr(self, "curves"):
            self.refresh_models(keep=keep)
            self.refresh_more()

    def refresh_more(self, event: Any = None) -> None:
        """Offer the other images of the session, and show each list only when it has some."""
        for select in (self.more_labels, self.more_images):
            select.reset_choices()
            select.visible = bool(select.choices)

    # The lists are made after the pickers they read, so these run only once those exist.
    def _more_choices(self, widget: Any = None) -> list[tuple[str, Labels]]:
        """Labels layers of the viewer's other images, for "also learn from"."""
        return other_corrections(self.viewer, self.labels_combo.value, self.image_combo.value)

    def _uncorrected_choices(self, widget: Any = None) -> list[tuple[str, Image]]:
        """Image layers other than the chosen one and those of ticked labels."""
        return uncorrected_images(self.viewer, self.image_combo.value, self.more_labels.value)

    def _suggest_name(self, event: Any = None) -> None:
        base = self.model_combo.value
        # A name the user typed stays; our own suggestion follows the chosen model.
        ours = self.new_name.value in ("", getattr(self, "_suggested_name", ""))
        if base and base != NO_MODEL and ours:
            from ..core.models.registry import unique_model_name

            self._suggested_name = unique_model_name(f"{base}-ft")
            self.new_name.value = self._suggested_name

    def detect_slices(self, event: Any = None) -> None:
        """Fill in the annotated slices of a label stack (non-empty slices)."""
        layer = self.labels_combo.value
        if layer is None or layer.data.ndim < 3:
            self.slices.value = ""
            self.update_pixels()
            return
        from ..core.training.data import annotated_slices

        found = annotated_slices(np.asarray(layer.data))
        self.slices.value = ",".join(map(str, found))
        self.update_pixels()

    # ------------------------------------------------------------ edited region
    def _on_inserted(self, event: Any) -> None:
        self._remember_made(event.value)

    def _remember_made(self, layer: Any) -> None:
        """Keep a copy of labels a widget made, while nobody has edited them yet."""
        if isinstance(layer, Labels) and isinstance(layer.data, np.ndarray):
            if not edited_since_made(layer):
                self._made[id(layer)] = np.array(layer.data, copy=True)

    def _bind_labels(self, layer: Labels | None) -> None:
        old = self._bound
        if old is not None:
            old.events.data.disconnect(self._on_labels_edit)
            old.events.labels_update.disconnect(self._on_labels_edit)
        self._bound = layer
        if layer is not None:
            self._remember_made(layer)
            layer.events.data.connect(self._on_labels_edit)
            layer.events.labels_update.connect(self._on_labels_edit)

    def _on_labels_edit(self, event: Any = None) -> None:
        layer = self._bound
        if layer is not None and not edited_since_made(layer):
            self._remember_made(layer)  # the Segment widget wrote a new result into it
        self.update_pixels()

    def annotated_mask(self) -> np.ndarray | None:
        """The pixels that count for training, or None for whole annotated slices.

        Raises
        ------
        ValueError
            When the edited region is asked for but unknown (the labels were
            edited before this widget saw the model's result).
        """
        layer = self.labels_combo.value
        if self.region_combo.value != EDITED_REGION or layer is None:
            return None
        made = self._made.get(id(layer))
        if made is None or made.shape != np.shape(layer.data):
            raise ValueError(
                f"The edited region of {layer.name!r} is unknown: it was not made by Segment, or "
                "was edited before this widget was opened. Train on whole annotated slices, or "
                "open Fine-tune before correcting."
            )
        from ..core.training.annotations import edited_region

        return edited_region(made, np.asarray(layer.data), margin=int(self.margin.value))

    def update_pixels(self, event: Any = None) -> int | None:
        """Show how many pixels the fine-tune would learn from."""
        layer = self.labels_combo.value
        if layer is None:
            self.pixels_label.value = "annotated pixels: -"
            return None
        try:
            mask = self.annotated_mask()
        except ValueError:
            self.pixels_label.value = "edited region unknown (see Start)"
            return None
        labels = np.asarray(layer.data)
        if mask is not None:
            count = int(mask.sum())
            where = "in the edited region"
        elif labels.ndim >= 3:
            from ..core.training.data import parse_slices

            try:
                chosen = parse_slices(self.slices.value) or []
            except ValueError:
                chosen = []
            count = len([z for z in chosen if 0 <= z < labels.shape[0]]) * int(
                np.prod(labels.shape[1:])
            )
            where = f"in {len(chosen)} slice(s)"
        else:
            count = int(labels.size) if np.any(labels) else 0
            where = "in the image"
        more = len(self.more_labels.value)
        also = f", and {more} other image(s)" if more else ""
        self.pixels_label.value = f"{count:,} annotated pixels {where}{also}"
        return count

    # --------------------------------------------------------------------- run
    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.cancel_button.enabled = running

    def start(self) -> None:
        """Check the inputs and start fine-tuning in the background."""
        base = self.model_combo.value
        image, labels = self.image_combo.value, self.labels_combo.value
        if not base or base == NO_MODEL:
            show_warning("Choose the base model to fine-tune.")
            return
        if (
            image is None
            or labels is None
            or image not in self.viewer.layers
            or (labels not in self.viewer.layers)
        ):
            show_warning("Choose the image and its corrected labels layer.")
            return
        try:
            axes = image_axes(image)
        except ValueError as error:
            show_warning(str(error))
            return
        spatial = image.data.shape[:-1] if image.rgb else image.data.shape
        if tuple(spatial) != tuple(labels.data.shape):
            show_warning(
                f"The labels {labels.data.shape} and the image {tuple(spatial)} differ in shape; "
                "correct the labels made from this image."
            )
            return
        from ..core.training.annotations import check_annotation, check_modality
        from ..core.training.data import TrainingDataError, parse_slices
        from ..core.training.jobs import finetune
        from ..core.training.settings import TrainSettings

        # Snapshots: the user may keep painting while the model trains.
        label_data = np.array(labels.data, copy=True)
        try:
            annotated = self.annotated_mask()
            slices = parse_slices(self.slices.value or None)
            if annotated is None and slices is not None and label_data.ndim >= 3:
                annotated = np.zeros(label_data.shape, bool)
                annotated[[z for z in slices if 0 <= z < label_data.shape[0]]] = True
            # Bad input gets its message now, before anything loads or trains.
            check_annotation(label_data, annotated)
            check_modality(self._entry_card(base), image.data, axes)
            more = training_pairs(self.viewer, self.more_labels.value)
            unlabelled = statistics_pairs(self.viewer, self.more_images.value)
            for pair in [*more, *unlabelled]:
                try:
                    check_modality(self._entry_card(base), pair.image, pair.axes)
                except TrainingDataError as error:
                    raise TrainingDataError(f"{pair.name}: {error}") from error
        except (ValueError, TrainingDataError) as error:
            show_warning(str(error))
            return
        settings = TrainSettings.for_finetune(
            self.card_of(base),  # its recommended pull towards the start, if any
            minutes=float(self.minutes.value),
            steps=int(self.steps.value),
            learning_rate=float(self.learning_rate.value),
            freeze_encoder=bool(self.freeze.value),
            adapt_batchnorm=bool(self.adapt_first.value),
        )
        job = finetune(
            base,
            np.array(image.data, copy=True),
            label_data,
            annotated=annotated,
            slices=None if annotated is not None else slices,
            axes=axes,
            name=self.new_name.value or None,
            settings=settings,
            device=self.device_combo.value,
            spacing=pixel_size_um(image, axes),
            more=more,
            unlabelled=unlabelled,
        )
        self._adapt_info: dict[str, Any] = {}
        self._illumination_info: dict[str, Any] = {}
        self.curves.clear()
        self.result_label.value = "training…"
        self.segment_again.visible = False
        self.runner.start(
            job, self._on_done, on_cancel=self._on_cancel, on_progress=self._on_progress
        )

    def _entry_card(self, name: str) -> Any:
        """A model-like object with the card of a registry entry (for the input checks)."""
        from types import SimpleNamespace

        from ..core.models.checkpoint import read_card

        card = read_card(self._entries[name].path)
        return SimpleNamespace(name=card.name, card=card, in_channels=card.in_channels)

    def card_of(self, name: str | None) -> Any:
        """The card of registry entry ``name``; None if there is none or it cannot be read."""
        if not name or name not in getattr(self, "_entries", {}):
            return None
        try:
            return self._entry_card(name).card
        except (OSError, ValueError, KeyError):
            return None

    def advice_for(self, name: str | None) -> str | None:
        """The card's warning against label-free adaptation of ``name``, if any."""
        from ..core.training.adapt import label_free_advice

        card = self.card_of(name)
        return None if card is None else label_free_advice(card)

    def show_recipe(self, event: Any = None) -> None:
        """The chosen model's recipe: its learning rate and step limit; no label-free
        adaptation where it hurt."""
        from ..core.training.adapt import label_free_advice
        from ..core.training.settings import (
            finetune_learning_rate,
            finetune_steps,
            finetune_trains_one_plane,
        )

        card = self.card_of(self.model_combo.value)
        self.learning_rate.value = finetune_learning_rate(card)
        self.steps.value = finetune_steps(card)
        advice = None if card is None else label_free_advice(card)
        recipe = RECIPE if advice is None else RECIPE_NO_LABEL_FREE
        one_image = "" if finetune_trains_one_plane(card) else f" {ONE_IMAGE_HINT}"
        self.recipe_label.value = recipe + one_image
        self.adapt_button.tooltip = ADAPT_TOOLTIP + (f"\n\n{advice}" if advice else "")
        # The fine-tune skips the statistics for such a model anyway (recipe.adapted_start).
        if advice:
            self.adapt_first.value = self.adapt_first.enabled = False
        elif not self.adapt_first.enabled:
            self.adapt_first.enabled = True
            self.adapt_first.value = self._adapt_default

    def adapt_to_image(self) -> None:
        """Re-estimate the base model's batch-norm statistics on the image; no labels needed."""
        base, image = self.model_combo.value, self.image_combo.value
        if not base or base == NO_MODEL or image is None or image not in self.viewer.layers:
            show_warning("Choose the base model and the image to adapt it to.")
            return
        from ..core.training.adapt import adapt
        from ..core.training.annotations import check_modality
        from ..core.training.data import TrainingDataError

        try:
            axes = image_axes(image)
            check_modality(self._entry_card(base), image.data, axes)
        except (ValueError, TrainingDataError) as error:
            show_warning(str(error))
            return
        self._advice = self.advice_for(base)
        job = adapt(
            base,
            np.array(image.data, copy=True),
            axes=axes,
            device="cpu",
            flat_field=True if self.flat_field.value else None,
            spacing=pixel_size_um(image, axes),
        )
        self.result_label.value = "adapting to the image…"
        self.segment_again.visible = False
        self.runner.start(job, self._on_adapted)

    def _on_adapted(self, model: SegmentationModel) -> None:
        self.new_model = model
        layers = len(model.card.lineage.get("batchnorm_layers", []))
        lineage = model.card.lineage
        matched = "intensities matched, " if lineage.get("match_intensities") else ""
        flattened = "illumination corrected, " if lineage.get("flat_field") else ""
        sigma = lineage.get("smooth")
        smoothed = f"noisy input smoothed (sigma {sigma:g} px), " if sigma else ""
        resampled = (lineage.get("data") or {}).get("resampled")
        scale = f", at the model's pixel size ({resampled})" if resampled else ""
        self.result_label.value = (
            f"saved as {model.name!r}: {flattened}{smoothed}{matched}{layers} batch-norm layers "
            f"adapted to this image{scale} "
            "(no labels, so no score yet: segment again and look, or correct a few objects and "
            "fine-tune)."
        )
        self.segment_again.visible = True
        self.refresh_models()
        advice = getattr(self, "_advice", None)
        if advice:
            self.result_label.value += f" Warning: {advice}"
            show_warning(advice)
            return
        show_info(f"Adapted model {model.name!r} saved; it is in every model list now.")

    def _on_progress(self, event: Progress) -> None:
        if event.info.get("phase") == "adapt" and "metrics_adapted" in event.info:
            self._adapt_info = dict(event.info)
        if event.info.get("phase") == "illumination":
            self._illumination_info = dict(event.info)
        self.curves.add(event)
        phase = event.info.get("phase", "")
        if phase != "train" or event.step % 10 == 0:
            self.curves.draw()

    def _on_done(self, model: SegmentationModel) -> None:
        self.curves.draw()
        summary = FinetuneSummary.of(
            model.card.lineage,
            getattr(self, "_adapt_info", {}),
            getattr(self, "_illumination_info", {}),
        )
        if summary.kept == "parent":
            self.new_model = None
            self.segment_again.visible = False
            self.result_label.value = summary.text(model.name)
            show_info("The parent model stays best; no new model was saved.")
            return
        self.new_model = model
        self.result_label.value = summary.text(model.name)
        self.segment_again.visible = True
        self.new_name.value = ""
        self.refresh_models()
        show_info(f"Fine-tuned model {model.name!r} saved; it is in every model list now.")

    def _on_cancel(self) -> None:
        self.result_label.value = "cancelled: the best model so far is kept as a draft"
        self.refresh_models()

    def segment_with_new_model(self) -> None:
        """Open the Segment widget on the same image with the new model and run it."""
        from .segment import SegmentWidget

        if self.new_model is None:
            return
        widget = next(
            (w for w in _docked_widgets(self.viewer) if isinstance(w, SegmentWidget)), None
        )
        if widget is None:
            widget = SegmentWidget(self.viewer)
            self.viewer.window.add_dock_widget(widget, name="Segment")
        widget.refresh_models()
        widget.image_combo.value = self.image_combo.value
        widget.model_combo.value = self.new_model.name
        widget.run()


def _docked_widgets(viewer: napari.Viewer) -> list[Any]:
    docked = getattr(viewer.window, "dock_widgets", None)  # newer napari: the inner widgets
    if docked is not None:
        return list(docked.values())
    found = []
    for dock in viewer.window._dock_widgets.values():
        inner = dock.widget()
        magic = getattr(inner, "_magic_widget", None)
        found.append(magic if magic is not None else inner)
    return found
