"""Signals other apps connect to (the lead's re-render pipeline)."""

from django.dispatch import Signal

#: Sent when an editor sets a region to needs_rerender; kwargs: region, user.
rerender_requested = Signal()
