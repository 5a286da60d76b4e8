"""Forms of the membership pages and of accepting an invitation."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from webapp.panoramas.models import Membership, Panorama


class InviteForm(forms.Form):
    who = forms.CharField(
        label="E-mail or username", max_length=254, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.REVIEWER)

    def clean_who(self) -> str:
        return self.cleaned_data["who"].strip()


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class SignUpForm(UserCreationForm):
    """Account for an invited person; the e-mail comes from the invitation."""

    class Meta(UserCreationForm.Meta):
        fields = ("username",)


class PresentationForm(forms.ModelForm):
    """What the home page shows and which sites may embed the panorama (owners)."""

    class Meta:
        model = Panorama
        fields = ("title", "description", "credits", "embed_origins")
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "credits": forms.Textarea(attrs={"rows": 2}),
        }
        labels = {"embed_origins": "Sites allowed to embed it"}

    def clean_title(self) -> str:
        # One line: the title goes into e-mail subjects, where a line break is refused.
        return " ".join(self.cleaned_data["title"].split())
