"""Signals of the render chain."""

from django.dispatch import Signal

#: Sent by the pyramid job after it published a new version; kwargs:
#: pyramid (the new Pyramid), region ([x, y, w, h] re-rendered, or None for a full build).
pyramid_published = Signal()
