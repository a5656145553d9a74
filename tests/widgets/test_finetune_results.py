"""The Fine-tune widget's summary of a run, from its lineage and progress (no Qt needed)."""

from __future__ import annotations

from napari_microseg._widgets._finetune_results import FinetuneSummary


def test_a_trained_model_lists_every_step_it_went_through():
    lineage = {
        "metrics_before": {"dice": 0.5, "object_f1": 0.25},
        "metrics_after": {"dice": 0.9, "object_f1": 0.75},
        "recipe": {"kept": "trained"},
    }
    adapt = {"metrics_adapted": {"dice": 0.6}, "start": "parent"}
    light = {"flat": True, "metrics_flat": {"dice": 0.7, "object_f1": 0.5}}
    summary = FinetuneSummary.of(lineage, adapt, light)
    assert summary.kept == "trained" and summary.corrected
    assert summary.metrics == (
        "dice: parent 0.500 → illumination corrected 0.700 → adapted 0.600 (not used) → "
        "result 0.900; object f1: parent 0.250 → illumination corrected 0.500 → result 0.750"
    )
    assert summary.text("m-ft").startswith(
        "saved as 'm-ft' (fine-tuned; it corrects uneven illumination, as the held-out pixels "
        "asked). on held-out annotated pixels: dice: parent 0.500"
    )


def test_a_kept_parent_says_nothing_was_saved_and_a_refused_correction_is_not_shown():
    lineage = {
        "metrics_before": {"dice": 0.8},
        "metrics_after": {"dice": 0.8},
        "recipe": {"kept": "parent"},
    }
    light = {"flat": False, "metrics_flat": {"dice": 0.81}}
    summary = FinetuneSummary.of(lineage, {}, light)
    assert not summary.corrected
    assert summary.text("mito-em") == (
        "kept the parent 'mito-em': neither adaptation nor fine-tuning beat it on held-out "
        "annotated pixels (dice: parent 0.800 → result 0.800). Nothing was saved."
    )


def test_a_flat_field_parent_is_named_once():
    lineage = {"metrics_before": {"dice": 0.3}, "recipe": {"kept": "flat-field parent"}}
    summary = FinetuneSummary.of(lineage, {}, {"flat": True, "metrics_flat": {"dice": 0.7}})
    assert summary.text("x") == (
        "saved as 'x' (illumination corrected (training did not help)). on held-out annotated "
        "pixels: dice: parent 0.300 → illumination corrected 0.700"
    )


def test_a_run_on_a_noisy_session_says_its_input_is_smoothed():
    lineage = {
        "metrics_before": {"dice": 0.5},
        "metrics_after": {"dice": 0.8},
        "recipe": {"kept": "trained", "smooth": 1.0},
    }
    summary = FinetuneSummary.of(lineage, {}, {})
    assert summary.text("x") == (
        "saved as 'x' (fine-tuned; it smooths its input (sigma 1 px): the session is noisy). "
        "on held-out annotated pixels: dice: parent 0.500 → result 0.800"
    )
    parent = FinetuneSummary.of(
        {**lineage, "recipe": {"kept": "smoothed parent", "smooth": 1.0}}, {}, {}
    )
    assert parent.text("x").startswith(
        "saved as 'x' (noisy images smoothed (training did not help))"
    )


def test_a_threshold_chosen_on_the_annotations_is_said():
    lineage = {
        "metrics_before": {"dice": 0.5},
        "metrics_after": {"dice": 0.8},
        "recipe": {"kept": "trained"},
        "threshold": {"card": 0.75, "chosen": 0.9, "dice": {}, "pixels": 10},
    }
    summary = FinetuneSummary.of(lineage, {}, {})
    assert summary.threshold == (0.75, 0.9)
    assert summary.text("x") == (
        "saved as 'x' (fine-tuned; it segments at threshold 0.9, not 0.75, as your annotated "
        "pixels prefer). on held-out annotated pixels: dice: parent 0.500 → result 0.800"
    )
    kept = {**lineage["threshold"], "chosen": 0.75}
    assert FinetuneSummary.of({**lineage, "threshold": kept}, {}, {}).threshold is None
    parent = FinetuneSummary.of({**lineage, "recipe": {"kept": "threshold parent"}}, {}, {})
    assert parent.text("x").startswith(
        "saved as 'x' (the parent with a threshold chosen on your annotations (training did not "
        "help); it segments at threshold 0.9, not 0.75"
    )


def test_one_image_without_training_says_so_and_where_it_was_judged():
    lineage = {
        "metrics_before": {"dice": 0.75},
        "metrics_after": {"dice": 0.79},
        "recipe": {"kept": "smoothed parent", "smooth": 1.0, "gradient_steps": False},
    }
    summary = FinetuneSummary.of(lineage, {}, {})
    assert not summary.trained
    assert summary.text("nuclei-2") == (
        "saved as 'nuclei-2' (noisy images smoothed; one image, so no training: correct a "
        "second image to fine-tune). on all your annotated pixels: dice: parent 0.750 → result "
        "0.790"
    )
    kept = {
        **lineage,
        "metrics_after": {"dice": 0.75},
        "recipe": {"kept": "parent", "gradient_steps": False},
    }
    assert (
        FinetuneSummary.of(kept, {}, {})
        .text("nuclei-fluo")
        .startswith(
            "kept the parent 'nuclei-fluo': one image, so no training (its card advises a second "
            "image); no label-free correction beat it on all your annotated pixels"
        )
    )
