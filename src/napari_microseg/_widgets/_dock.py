"""Dock widgets that fit a small screen: each scrolls inside its dock.

napari docks a magicgui container's ``native`` widget, whose minimum height is the
sum of its rows: five of ours docked together grew the window to about 2,500 px
on a 768 px screen. :class:`DockedContainer` hands napari a scroll area instead,
whose preferred width is capped so the canvas keeps most of the window; the user
can still drag the dock wider, and a narrow dock scrolls sideways.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QScrollArea, QWidget

#: The widest a dock asks to be, in pixels: with napari's layer list (~340 px) the
#: canvas keeps at least half of a 1366 px wide window.
PREFERRED_DOCK_WIDTH = 340


class DockScroll(QScrollArea):
    """A scroll area around a dock's content, asking for at most ``PREFERRED_DOCK_WIDTH``."""

    def __init__(self, content: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setWidget(content)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(min(hint.width(), PREFERRED_DOCK_WIDTH), hint.height())


class DockedContainer(Container):
    """A magicgui container whose ``native`` (what napari docks) is a :class:`DockScroll`.

    :attr:`content` is the container's own widget, the one with the layout. A subclass
    calls :meth:`wrap_for_dock` as the last line of its ``__init__``: moving the content
    into the scroll area tells magicgui its parent changed, which resets every choice,
    so the subclass's widgets must exist by then.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.content: QWidget = super().native
        self._dock_scroll: DockScroll | None = None

    def wrap_for_dock(self) -> None:
        """Put the content in its scroll area; from now on ``native`` is the scroll area."""
        self._dock_scroll = DockScroll(self.content)
        self._dock_scroll._magic_widget = self  # as magicgui marks its own native widgets

    @property
    def native(self) -> QWidget:
        # magicgui reads `native` while the container is being built, before the scroll area.
        scroll = getattr(self, "_dock_scroll", None)
        return scroll if scroll is not None else super().native
