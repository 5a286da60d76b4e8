"""The admin import form."""

from __future__ import annotations

from pathlib import Path

from django import forms

from . import services


class ImportForm(forms.Form):
    slug = forms.SlugField(max_length=50, help_text="panorama slug (created if missing)")
    folder = forms.CharField(
        max_length=1000, help_text="capture folder: absolute, or relative to an allowed import folder"
    )
    subpanorama = forms.CharField(
        max_length=100, required=False, help_text="put every frame into this sub-panorama (default: one per folder)"
    )
    sky = forms.BooleanField(
        required=False,
        help_text="a separately shot sky capture: one sub-panorama (default 'sky') merged into the ground panorama last",
    )
    columns = forms.IntegerField(min_value=1, max_value=100000, required=False, help_text="grid columns")
    gap = forms.FloatField(min_value=0.01, max_value=86400, required=False, help_text="burst gap, seconds")
    dry_run = forms.BooleanField(required=False, initial=True, help_text="only show the plan")

    def clean_folder(self) -> str:
        try:
            path: Path = services.resolve_import_dir(self.cleaned_data["folder"])
        except services.ImportRootError as e:
            raise forms.ValidationError(str(e)) from e
        return str(path)

    def clean_subpanorama(self) -> str:
        name = self.cleaned_data.get("subpanorama", "").strip()
        if "/" in name or "\\" in name:
            raise forms.ValidationError("a sub-panorama name cannot contain slashes")
        return name
