"""The post-processing pipeline: a stored, re-runnable recipe from probabilities to labels.

A :class:`PostprocessPipeline` is a small JSON-serialisable description that a
widget builds, a model card stores as its recommended post-processing
(``card.recommended["postprocess"] = pipeline.to_dict()``) and anyone
re-runs on a cached probability map, with no new inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import numpy as np

from ..progress import Job, Progress, drain
from .cleanup import (
    closing,
    fill_holes,
    label_components,
    opening,
    relabel_sequential,
    remove_small_holes,
    remove_small_objects,
)
from .thresholds import (
    apply_threshold,
    check_probability,
    default_hysteresis_thresholds,
    hysteresis,
    threshold_otsu,
)
from .watershed import watershed_split

Method = Literal["otsu", "threshold", "hysteresis", "watershed"]
METHODS: tuple[str, ...] = ("otsu", "threshold", "hysteresis", "watershed")


@dataclass
class PostprocessPipeline:
    """A re-runnable recipe from a probability map to a label image.

    The stages run in this order, each skipped when it is switched off:

    1. pick the foreground (and boundary) class of a ``(K, ...)`` stack;
    2. binarize by ``method``: ``"otsu"`` / ``"threshold"`` (``prob > t``),
       ``"hysteresis"`` (``low``, ``high``) or ``"watershed"`` (``prob > t``);
    3. on the mask: ``opening_radius``, then ``closing_radius``;
    4. label: connected components, or for ``"watershed"`` the split of
       touching objects (:func:`watershed_split` with ``markers``, ``h``,
       ``min_distance``, ``compactness`` and the boundary class);
    5. on the labels: ``fill_holes`` or ``max_hole_size``, then ``min_size``;
    6. renumber to sequential uint32 ids.

    Each stage is also a method (:meth:`select`, :meth:`binarize`,
    :meth:`clean_mask`, :meth:`label_mask`, :meth:`fill`, :meth:`clean`), for
    callers that run them piece by piece, such as the labelling of a volume
    block by block (:func:`~napari_microseg.core.blocks.labels.label_to_zarr`).

    Parameters
    ----------
    method : {"otsu", "threshold", "hysteresis", "watershed"}
        How the foreground is found.
    threshold : float, optional
        ``"threshold"``: the fixed value (required). ``"otsu"`` and
        ``"watershed"``: None computes Otsu's threshold on the map; a value,
        as filled in by :meth:`resolve`, is used as is.
    low, high : float, optional
        Hysteresis thresholds; None derives them from Otsu's threshold
        (see :func:`~.thresholds.default_hysteresis_thresholds`).
    foreground_class : int
        Index of the object class in a ``(K, ...)`` probability stack.
    boundary_class : int, optional
        Index of the boundary class of background / object / boundary models;
        used by ``"watershed"`` as the flooding surface.
    markers : {"distance", "probability"}
        Watershed markers: maxima of the distance transform or of the probability.
    h : float, optional
        Watershed h-maxima height (pixels for distance markers, probability for
        probability markers); None for the default.
    min_distance : int, optional
        Watershed markers at least this many pixels apart, instead of h-maxima.
    compactness : float
        Compact watershed when > 0.
    opening_radius, closing_radius : float
        Radii of the binary opening and closing of the mask; 0 switches them off.
    fill_holes : bool
        Fill every hole inside objects.
    max_hole_size : float
        Fill holes up to this size (when ``fill_holes`` is off).
    min_size : float
        Remove objects smaller than this.
    physical_units : bool
        Sizes (``min_size``, ``max_hole_size``), radii and a distance ``h`` are
        in µm (µm², µm³) and need the voxel size at :meth:`run`; else pixels.
    connectivity : int
        1 (faces) to ndim (corners) for components and flooding; the
        watershed from h-maxima on the objects (the default) floods over
        corners whatever this is (see :func:`watershed_split`).

    Examples
    --------
    Re-run a stored pipeline on a cached probability map:

    >>> stored = PostprocessPipeline(method="hysteresis", min_size=20).to_dict()
    >>> pipeline = PostprocessPipeline.from_dict(stored)
    >>> pipeline.run(np.zeros((16, 16), np.float32)).max()
    np.uint32(0)
    """

    method: Method = "otsu"
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    foreground_class: int = 1
    boundary_class: int | None = None
    markers: Literal["distance", "probability"] = "distance"
    h: float | None = None
    min_distance: int | None = None
    compactness: float = 0.0
    opening_radius: float = 0.0
    closing_radius: float = 0.0
    fill_holes: bool = False
    max_hole_size: float = 0.0
    min_size: float = 0.0
    physical_units: bool = False
    connectivity: int = 1

    #: Schema version written by :meth:`to_dict`.
    SCHEMA: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}.")
        if self.method == "threshold" and self.threshold is None:
            raise ValueError("method 'threshold' needs a threshold value in [0, 1].")
        for name in ("threshold", "low", "high"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {value}.")
        if self.markers not in ("distance", "probability"):
            raise ValueError(f"markers must be 'distance' or 'probability'; got {self.markers!r}.")
        for name in (
            "opening_radius",
            "closing_radius",
            "max_hole_size",
            "min_size",
            "compactness",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
        if self.boundary_class is not None and self.boundary_class == self.foreground_class:
            raise ValueError("boundary_class must differ from foreground_class.")
        if self.connectivity < 1:
            raise ValueError(f"connectivity must be >= 1; got {self.connectivity}.")

    # ------------------------------------------------------------------ storage

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, for a model card's ``recommended["postprocess"]``."""
        return {"schema": self.SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessPipeline:
        """Rebuild a pipeline from :meth:`to_dict` output; missing keys take defaults.

        Raises
        ------
        ValueError
            For unknown keys (a typo would otherwise be ignored silently),
            values of the wrong type (naming the field and the type it takes)
            or invalid values.
        """
        if not isinstance(data, dict):
            raise ValueError(
                "A post-processing pipeline must be a JSON object of settings "
                f'(e.g. {{"method": "otsu", "min_size": 20}}), not {type(data).__name__}.'
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k != "schema"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown post-processing setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}."
            )
        hints = get_type_hints(cls)
        for name, value in values.items():
            expected = _type_name(hints[name], value)
            if expected is not None:
                raise ValueError(
                    f"Post-processing setting {name!r} must be {expected}; got "
                    f"{value!r} ({type(value).__name__}). Fix it in the pipeline JSON."
                )
        return cls(**values)

    # ------------------------------------------------------------------ running

    def select(
        self, prob: np.ndarray, *, class_axis: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The foreground map (and boundary map) this pipeline works on.

        Parameters
        ----------
        prob : (M, N[, P]) or (K, M, N[, P]) ndarray
            One class's probabilities, or the stack of all classes.
        class_axis : int, optional
            The class axis of a stack; None for a single map.

        Returns
        -------
        foreground : (M, N[, P]) ndarray
        boundary : (M, N[, P]) ndarray or None
        """
        prob = prob if isinstance(prob, np.ndarray) else np.asarray(prob)
        if class_axis is None:
            if self.boundary_class is not None:
                raise ValueError(
                    "This pipeline uses a boundary class; pass the whole (K, ...) class "
                    "stack with class_axis, not one map."
                )
            return check_probability(prob), None
        n_classes = prob.shape[class_axis]
        for name in ("foreground_class", "boundary_class"):
            index = getattr(self, name)
            if index is not None and not 0 <= index < n_classes:
                raise ValueError(
                    f"{name} is {index} but the stack has {n_classes} classes "
                    f"(axis {class_axis} of shape {prob.shape})."
                )
        foreground = check_probability(np.take(prob, self.foreground_class, axis=class_axis))
        boundary = None
        if self.boundary_class is not None:
            boundary = check_probability(
                np.take(prob, self.boundary_class, axis=class_axis),
                name="The boundary probability map",
            )
        return foreground, boundary

    def resolve(self, prob: np.ndarray, *, class_axis: int | None = None) -> PostprocessPipeline:
        """A copy with the data-derived thresholds computed on ``prob`` and fixed.

        Run the resolved copy on one slice for a live preview that matches the
        whole-volume result's thresholds: Otsu on a single slice would differ.

        Parameters
        ----------
        prob : (M, N[, P]) or (K, M, N[, P]) ndarray
            The whole probability map (or stack, with ``class_axis``).
        class_axis : int, optional
            The class axis of a stack.

        Returns
        -------
        PostprocessPipeline
            With ``threshold`` (otsu, watershed) or ``low`` and ``high``
            (hysteresis) filled in.
        """
        foreground, _ = self.select(prob, class_axis=class_axis)
        return self._resolve_on(foreground)

    def _resolve_on(self, foreground: np.ndarray) -> PostprocessPipeline:
        if self.method == "threshold":
            return replace(self)
        if self.method == "hysteresis":
            low, high = default_hysteresis_thresholds(foreground, self.low, self.high)
            return replace(self, low=low, high=high)
        if self.threshold is not None:
            return replace(self)
        return replace(self, threshold=threshold_otsu(foreground))

    def run(
        self,
        prob: np.ndarray,
        *,
        class_axis: int | None = None,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Post-process a probability map into a label image.

        Parameters
        ----------
        prob : (M, N[, P]) or (K, M, N[, P]) ndarray
            One class's probabilities in [0, 1], or the stack of all classes.
        class_axis : int, optional
            The class axis of a stack (0 for ``(K, ...)``); None for one map.
        spacing : sequence of float, optional
            Voxel size in µm per spatial axis; needed when ``physical_units``
            is set, and makes watershed distances anisotropy-correct.

        Returns
        -------
        labels : (M, N[, P]) ndarray of uint32
            Sequential object ids, 0 for background.
        """
        return drain(self.run_job(prob, class_axis=class_axis, spacing=spacing), show=False)

    __call__ = run

    def run_job(
        self,
        prob: np.ndarray,
        *,
        class_axis: int | None = None,
        spacing: Sequence[float] | None = None,
    ) -> Job[np.ndarray]:
        """:meth:`run` as a progress generator (one event per stage) for widgets."""
        stages = self._stages()
        total = len(stages)
        foreground, boundary = self.select(prob, class_axis=class_axis)
        ndim = foreground.ndim
        if spacing is not None and len(spacing) != ndim:
            raise ValueError(f"spacing {tuple(spacing)} must give one size per axis ({ndim}D).")
        self._unit_spacing(spacing)  # refuse a pipeline in µm without a voxel size up front
        step = 0

        def advance(message: str) -> Progress:
            nonlocal step
            step += 1
            return Progress(step, total, message)

        resolved = self._resolve_on(foreground)
        mask, region = resolved.binarize(foreground, boundary)
        if self.method == "hysteresis":
            yield advance(f"hysteresis {resolved.low:.3g}..{resolved.high:.3g}")
        else:
            yield advance(f"threshold {resolved.threshold:.3g}")
        mask, region = yield from self._clean_mask_steps(mask, region, spacing, advance)
        labels = resolved.label_mask(
            mask, foreground, region=region, boundary=boundary, spacing=spacing
        )
        yield advance("watershed split" if self.method == "watershed" else "connected components")
        del mask, region
        # Both labellings number the objects 1..n already.
        labels = yield from self._clean_steps(labels, spacing, advance, sequential=True)
        return labels

    # ------------------------------------------------------------------ stages
    # run_job chains these, and the block-by-block labelling calls them on each block, so
    # that the recipe is written once.

    def binarize(
        self, foreground: np.ndarray, boundary: np.ndarray | None = None, *, seeded: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Stage 2: the foreground mask, and for a watershed with a boundary class its region.

        Thresholds left to the data (None) are computed on ``foreground``;
        :meth:`resolve` fixes them beforehand for a result that does not
        depend on the part of the map given.

        Parameters
        ----------
        foreground : (M, N[, P]) ndarray of float
            The foreground probabilities (from :meth:`select`).
        boundary : (M, N[, P]) ndarray of float, optional
            The boundary probabilities (from :meth:`select`).
        seeded : bool
            Hysteresis: keep only the regions above ``low`` that hold a voxel
            above ``high``. False keeps every voxel above ``low``, for callers
            that check the seeds themselves (objects cut by block faces).

        Returns
        -------
        mask : (M, N[, P]) ndarray of bool
            The objects.
        region : (M, N[, P]) ndarray of bool or None
            Watershed with a boundary class: objects and boundaries, the area
            to flood; else None.
        """
        resolved = self._resolve_on(foreground)
        if self.method == "hysteresis":
            if seeded:
                mask = hysteresis(
                    foreground, resolved.low, resolved.high, connectivity=self.connectivity
                )
            else:
                mask = apply_threshold(foreground, resolved.low)
        else:
            assert resolved.threshold is not None  # _resolve_on fills it in
            mask = apply_threshold(foreground, resolved.threshold)
        region = None
        if boundary is not None and self.method == "watershed":
            region = (foreground + boundary) > resolved.threshold
        return mask, region

    def clean_mask(
        self,
        mask: np.ndarray,
        region: np.ndarray | None = None,
        *,
        spacing: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Stage 3: the opening, then the closing, of the mask and the watershed region.

        Parameters
        ----------
        mask : (M, N[, P]) ndarray of bool
            The objects (from :meth:`binarize`).
        region : (M, N[, P]) ndarray of bool, optional
            The watershed region (from :meth:`binarize`).
        spacing : sequence of float, optional
            Voxel size in µm per axis; needed when ``physical_units`` is set.

        Returns
        -------
        mask : (M, N[, P]) ndarray of bool
        region : (M, N[, P]) ndarray of bool or None
        """
        return drain(self._clean_mask_steps(mask, region, spacing, _silent), show=False)

    def label_mask(
        self,
        mask: np.ndarray,
        foreground: np.ndarray,
        *,
        region: np.ndarray | None = None,
        boundary: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Stage 4: number the objects: connected components, or the watershed split.

        Parameters
        ----------
        mask : (M, N[, P]) ndarray of bool
            The objects (from :meth:`binarize` and :meth:`clean_mask`).
        foreground : (M, N[, P]) ndarray of float
            The foreground probabilities (watershed markers and flooding).
        region : (M, N[, P]) ndarray of bool, optional
            The watershed region, flooded instead of ``mask`` when given.
        boundary : (M, N[, P]) ndarray of float, optional
            The boundary probabilities, the watershed's flooding surface.
        spacing : sequence of float, optional
            Voxel size in µm per axis: anisotropy of the watershed distances,
            and a distance ``h`` in µm.

        Returns
        -------
        labels : (M, N[, P]) ndarray of uint32
            Object ids 1..n, 0 for background.
        """
        if self.method != "watershed":
            return label_components(mask, connectivity=self.connectivity)
        h = self.h
        if h is not None and self.physical_units and self.markers == "distance":
            h = h / min(self._unit_spacing(spacing))  # µm -> pixels of the finest axis
        threshold = self._resolve_on(foreground).threshold
        return watershed_split(
            foreground,
            mask=mask if region is None else region,
            threshold=threshold,
            markers=self.markers,
            h=h,
            min_distance=self.min_distance,
            boundary=boundary,
            compactness=self.compactness,
            spacing=spacing,
            connectivity=self.connectivity,
        )

    def fill(self, labels: np.ndarray, *, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Stage 5a: fill the holes in objects (all, or up to ``max_hole_size``), in place.

        Parameters
        ----------
        labels : (M, N[, P]) ndarray of uint32
            Objects; changed in place.
        spacing : sequence of float, optional
            Voxel size in µm per axis; needed when ``physical_units`` is set.

        Returns
        -------
        labels : (M, N[, P]) ndarray of uint32
            ``labels``, unchanged when neither ``fill_holes`` nor
            ``max_hole_size`` is set.
        """
        if self.fill_holes:
            return fill_holes(labels, out=labels)
        if self.max_hole_size > 0:
            unit_spacing = self._unit_spacing(spacing)
            return remove_small_holes(labels, self.max_hole_size, spacing=unit_spacing, out=labels)
        return labels

    def resampled(self, zoom: Sequence[float]) -> PostprocessPipeline:
        """The same recipe for the image resampled by ``zoom`` per spatial axis.

        Sizes in pixels (``min_size``, ``max_hole_size``) scale with the
        product of ``zoom``, and lengths in pixels (radii, ``min_distance``, a
        distance ``h``) with its geometric mean, so that a recipe chosen on
        the image finds the same objects in a copy with other pixels (training
        validates at the model's pixel size). Thresholds and a probability
        ``h`` do not change; neither does a recipe in physical units.

        Parameters
        ----------
        zoom : sequence of float
            New pixels per old pixel along each spatial axis (0.5: half the
            rows and columns).

        Returns
        -------
        PostprocessPipeline
        """
        factors = [float(z) for z in zoom]
        if not factors or any(not np.isfinite(z) or z <= 0 for z in factors):
            raise ValueError(f"zoom must be positive numbers, got {tuple(zoom)!r}.")
        if self.physical_units or all(z == 1 for z in factors):
            return self
        area = float(np.prod(factors))
        length = area ** (1 / len(factors))
        return replace(
            self,
            min_size=self.min_size * area,
            max_hole_size=self.max_hole_size * area,
            opening_radius=self.opening_radius * length,
            closing_radius=self.closing_radius * length,
            h=self.h * length if self.h is not None and self.markers == "distance" else self.h,
            min_distance=(
                None if self.min_distance is None else max(1, round(self.min_distance * length))
            ),
        )

    def without_cleanup(self) -> PostprocessPipeline:
        """This pipeline with hole filling and small-object removal switched off."""
        return replace(self, fill_holes=False, max_hole_size=0.0, min_size=0.0)

    def clean(
        self,
        labels: np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        sequential: bool = False,
    ) -> np.ndarray:
        """Only the cleanup stages: fill holes, remove small objects, relabel.

        ``self.without_cleanup().run(prob)`` followed by ``self.clean(...)``
        equals ``self.run(prob)``; a live preview caches the first part and
        re-runs only this one when a cleanup setting moves.

        Parameters
        ----------
        labels : (M, N[, P]) ndarray of int
            Objects; changed in place when their dtype is uint32.
        spacing : sequence of float, optional
            Voxel size in µm per axis; needed when ``physical_units`` is set.
        sequential : bool
            ``labels`` already numbers its objects 1..n (as ``run`` gives
            them): they are renumbered only when small objects are removed.

        Returns
        -------
        labels : (M, N[, P]) ndarray of uint32
            Sequential object ids, 0 for background.
        """
        self._unit_spacing(spacing)  # refuse a pipeline in µm without a voxel size up front
        labels = np.asarray(labels, dtype=np.uint32)
        return drain(self._clean_steps(labels, spacing, _silent, sequential=sequential), show=False)

    def _unit_spacing(self, spacing: Sequence[float] | None) -> Sequence[float] | None:
        """The voxel size that sizes and radii are measured with: None when in pixels."""
        if not self.physical_units:
            return None
        if spacing is None:
            raise ValueError(
                "This pipeline gives sizes in µm; pass the voxel size (spacing) or switch "
                "physical_units off."
            )
        return spacing

    def _clean_mask_steps(
        self,
        mask: np.ndarray,
        region: np.ndarray | None,
        spacing: Sequence[float] | None,
        advance: Callable[[str], Progress],
    ) -> Job[tuple[np.ndarray, np.ndarray | None]]:
        unit_spacing = self._unit_spacing(spacing)
        for radius, operation, name in (
            (self.opening_radius, opening, "opening"),
            (self.closing_radius, closing, "closing"),
        ):
            if radius > 0:
                mask = operation(mask, radius, spacing=unit_spacing)
                region = None if region is None else operation(region, radius, spacing=unit_spacing)
                yield advance(name)
        return mask, region

    def _clean_steps(
        self,
        labels: np.ndarray,
        spacing: Sequence[float] | None,
        advance: Callable[[str], Progress],
        *,
        sequential: bool,
    ) -> Job[np.ndarray]:
        if self.fill_holes or self.max_hole_size > 0:
            labels = self.fill(labels, spacing=spacing)  # the pipeline owns labels: in place
            yield advance("fill holes" if self.fill_holes else "fill small holes")
        if self.min_size > 0:
            unit_spacing = self._unit_spacing(spacing)
            labels = remove_small_objects(labels, self.min_size, spacing=unit_spacing, out=labels)
            yield advance("remove small objects")
        # Filling holes keeps every id; only removing objects leaves gaps to close.
        if self.min_size > 0 or not sequential:
            labels = relabel_sequential(labels)
        yield advance(f"{int(labels.max()) if labels.size else 0} objects")
        return labels

    def _stages(self) -> list[str]:
        stages = ["binarize"]
        stages += ["opening"] * (self.opening_radius > 0)
        stages += ["closing"] * (self.closing_radius > 0)
        stages += ["label"]
        stages += ["holes"] * (self.fill_holes or self.max_hole_size > 0)
        stages += ["small objects"] * (self.min_size > 0)
        return [*stages, "relabel"]

    def describe(self) -> str:
        """One line for logs and the CLI, listing only the active stages."""
        parts = [self.method]
        if self.method in ("otsu", "threshold", "watershed") and self.threshold is not None:
            parts.append(f"t={self.threshold:.3g}")
        if self.method == "hysteresis":
            parts.append(f"low={_fmt(self.low)} high={_fmt(self.high)}")
        if self.method == "watershed":
            parts.append(f"markers={self.markers}")
            if self.boundary_class is not None:
                parts.append(f"boundary class {self.boundary_class}")
        unit = " µm" if self.physical_units else " px"
        for name, label in (("opening_radius", "opening"), ("closing_radius", "closing")):
            if getattr(self, name) > 0:
                parts.append(f"{label} r={getattr(self, name):g}{unit}")
        if self.fill_holes:
            parts.append("fill holes")
        elif self.max_hole_size > 0:
            parts.append(f"holes <= {self.max_hole_size:g}{unit}")
        if self.min_size > 0:
            parts.append(f"min size {self.min_size:g}{unit}")
        return ", ".join(parts)


def _silent(message: str) -> Progress:
    """The progress event of a stage run outside :meth:`PostprocessPipeline.run_job`."""
    return Progress(0, 0, message)


def _fmt(value: float | None) -> str:
    return "auto" if value is None else f"{value:.3g}"


def postprocess(
    prob: np.ndarray,
    pipeline: PostprocessPipeline | dict[str, Any] | None = None,
    *,
    class_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    **settings: Any,
) -> np.ndarray:
    """Post-process a probability map with a pipeline, a stored dict, or keyword settings.

    Parameters
    ----------
    prob : (M, N[, P]) or (K, M, N[, P]) ndarray
        Probabilities in [0, 1].
    pipeline : PostprocessPipeline or dict, optional
        The recipe; a dict as stored in a model card. Default: Otsu.
    class_axis : int, optional
        The class axis of a ``(K, ...)`` stack.
    spacing : sequence of float, optional
        Voxel size in µm.
    **settings
        Fields of :class:`PostprocessPipeline` (override ``pipeline``'s).

    Returns
    -------
    labels : (M, N[, P]) ndarray of uint32

    Examples
    --------
    >>> prob = np.array([[0.9, 0.9, 0.0, 0.7]], np.float32)
    >>> postprocess(prob, method="threshold", threshold=0.5)
    array([[1, 1, 0, 2]], dtype=uint32)
    """
    if pipeline is None:
        pipeline = PostprocessPipeline(**settings)
    else:
        if isinstance(pipeline, dict):
            pipeline = PostprocessPipeline.from_dict(pipeline)
        if settings:
            pipeline = replace(pipeline, **settings)
    return pipeline.run(prob, class_axis=class_axis, spacing=spacing)


def _type_name(hint: Any, value: Any) -> str | None:
    """None when ``value`` fits the field type ``hint``, else the type in words.

    JSON has no int/float distinction for whole numbers, so an int is a valid
    float; a bool is never a number.
    """
    options = (hint,) if get_origin(hint) in (None, Literal) else get_args(hint)
    words = []
    for option in options:
        if option is type(None):
            if value is None:
                return None
            words.append("null")
        elif get_origin(option) is Literal:
            # Only the type here: __post_init__ names the allowed values of a wrong one.
            if any(type(value) is type(choice) for choice in get_args(option)):
                return None
            words.append("one of " + ", ".join(repr(v) for v in get_args(option)))
        elif option is bool:
            if isinstance(value, bool):
                return None
            words.append("true or false")
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return None
            words.append("a whole number")
        elif option is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return None
            words.append("a number")
    return " or ".join(words)
