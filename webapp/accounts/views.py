"""Site sign-in for every member, and membership pages for a panorama's owners.

Sign-in, sign-out and password reset are Django's auth views with the site's
templates. The membership pages answer 404 to anyone who cannot see the
panorama and 403 to members who are not owners.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from webapp.panoramas.models import Membership, Panorama
from webapp.viewer.permissions import RANK, role_of

from . import membership
from .forms import InviteForm, PresentationForm, RoleForm, SignUpForm
from .models import Invitation, hash_token

# ---------------------------------------------------------------- sign-in


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


# ---------------------------------------------------------------- membership


def _owned_panorama(request: HttpRequest, slug: str) -> Panorama:
    pano = get_object_or_404(Panorama.objects.select_related("owner"), slug=slug)
    role = role_of(request.user, pano)
    if role is None:
        raise Http404("no such panorama")
    if role != "owner":
        raise PermissionDenied("only the panorama's owners manage its members")
    return pano


def _mail(subject: str, template: str, context: dict, to: str) -> None:
    # A title with a line break (admin, older data) must not make the invitation fail.
    subject = " ".join(subject.split())
    send_mail(subject, render_to_string(template, context), settings.DEFAULT_FROM_EMAIL, [to])


@login_required
@require_http_methods(["GET", "HEAD"])
def members(request: HttpRequest, slug: str) -> HttpResponse:
    pano = _owned_panorama(request, slug)
    return _members_page(request, pano, InviteForm())


def _members_page(
    request: HttpRequest,
    pano: Panorama,
    form: InviteForm,
    status: int = 200,
    presentation: PresentationForm | None = None,
) -> HttpResponse:
    pending = [i for i in pano.invitations.filter(accepted__isnull=True) if i.is_pending]
    ctx = {
        "presentation": presentation or PresentationForm(instance=pano),
        "embed_url": request.build_absolute_uri(reverse("sharing:embed", kwargs={"slug": pano.slug})),
        "iiif_url": request.build_absolute_uri(reverse("sharing:iiif_info", kwargs={"slug": pano.slug})),
        "pano": pano,
        "members": membership.members(pano),
        "owners": membership.owner_ids(pano),
        "pending": pending,
        "form": form,
        "roles": Membership.Role.choices,
    }
    return render(request, "accounts/members.html", ctx, status=status)


@login_required
@require_POST
def invite(request: HttpRequest, slug: str) -> HttpResponse:
    pano = _owned_panorama(request, slug)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _members_page(request, pano, form, status=400)
    who, role = form.cleaned_data["who"], form.cleaned_data["role"]
    user = membership.find_user(who)
    if user is not None:
        if role_of(user, pano) is not None and not user.is_superuser:
            form.add_error("who", f"{user.get_username()} is already a member; change their role below")
            return _members_page(request, pano, form, status=400)
        # An account joins only by accepting: nobody is put on a panorama without their consent.
        Invitation.objects.filter(panorama=pano, invitee=user, accepted__isnull=True).delete()
        inv, token = Invitation.issue(pano, user.email or "", role, request.user, invitee=user)
        if user.email:
            link = request.build_absolute_uri(reverse("accounts:accept", kwargs={"token": token}))
            _mail(
                f"Invitation to {pano.title} on Terapan",
                "accounts/email/added.txt",
                {"pano": pano, "role": role, "by": request.user, "url": link, "expires": inv.expires},
                user.email,
            )
        messages.success(request, f"Invitation sent to {user.get_username()} as {role}; they join when they accept it.")
        return redirect("accounts:members", slug=pano.slug)
    if "@" not in who:
        form.add_error("who", f"no user is named {who!r}; invite them by e-mail instead")
        return _members_page(request, pano, form, status=400)
    try:
        validate_email(who)
    except ValidationError:
        form.add_error("who", f"{who!r} is not a valid e-mail address")
        return _members_page(request, pano, form, status=400)
    # A new invitation replaces a pending one to the same address (its link stops working).
    Invitation.objects.filter(panorama=pano, email__iexact=who, accepted__isnull=True).delete()
    inv, token = Invitation.issue(pano, who, role, request.user)
    link = request.build_absolute_uri(reverse("accounts:accept", kwargs={"token": token}))
    _mail(
        f"Invitation to review {pano.title} on Terapan",
        "accounts/email/invitation.txt",
        {"pano": pano, "role": role, "by": request.user, "url": link, "expires": inv.expires},
        who,
    )
    messages.success(request, f"Invitation sent to {who} as {role}.")
    return redirect("accounts:members", slug=pano.slug)


@login_required
@require_POST
def presentation(request: HttpRequest, slug: str) -> HttpResponse:
    """Title, description, credits and embedding sites, changed by an owner."""
    pano = _owned_panorama(request, slug)
    form = PresentationForm(request.POST, instance=pano)
    if not form.is_valid():
        return _members_page(request, pano, InviteForm(), status=400, presentation=form)
    form.save()
    messages.success(request, "Presentation saved.")
    return redirect("accounts:members", slug=pano.slug)


def _member_user(pano: Panorama, user_id: int):
    user = get_object_or_404(get_user_model(), pk=user_id)
    if pano.owner_id != user.pk and not pano.memberships.filter(user=user).exists():
        raise Http404("not a member")
    return user


@login_required
@require_POST
def change_role(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    pano = _owned_panorama(request, slug)
    user = _member_user(pano, user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles.")
        return redirect("accounts:members", slug=pano.slug)
    try:
        membership.set_role(pano, user, form.cleaned_data["role"])
    except membership.MembershipError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']}.")
    pano.refresh_from_db()
    if role_of(request.user, pano) != "owner":
        return redirect(pano.get_absolute_url())  # stepped down: this page is no longer theirs
    return redirect("accounts:members", slug=pano.slug)


@login_required
@require_POST
def remove_member(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    pano = _owned_panorama(request, slug)
    user = _member_user(pano, user_id)
    try:
        membership.remove(pano, user)
    except membership.MembershipError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{user.get_username()} no longer has access to {pano.title}.")
    pano.refresh_from_db()
    if role_of(request.user, pano) != "owner":
        return redirect("viewer:home")
    return redirect("accounts:members", slug=pano.slug)


@login_required
@require_POST
def revoke_invitation(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    pano = _owned_panorama(request, slug)
    inv = get_object_or_404(Invitation, pk=pk, panorama=pano, accepted__isnull=True)
    inv.delete()
    messages.success(request, f"Invitation of {inv.email} withdrawn.")
    return redirect("accounts:members", slug=pano.slug)


# ---------------------------------------------------------------- invitations


def _join(inv: Invitation, user) -> None:
    """USER takes the invitation's role (never lowering one they already have)."""
    with transaction.atomic():
        current = role_of(user, inv.panorama)
        if current is None or RANK[inv.role] > RANK[current]:
            membership.set_role(inv.panorama, user, inv.role)
        Invitation.objects.filter(pk=inv.pk).update(accepted=timezone.now(), accepted_by=user)


def _for_someone_else(request: HttpRequest, inv: Invitation) -> bool:
    return inv.invitee_id is not None and request.user.pk != inv.invitee_id


@require_http_methods(["GET", "HEAD", "POST"])
def accept(request: HttpRequest, token: str) -> HttpResponse:
    """The link in an invitation: sign up (or use the signed-in account) and join, or decline."""
    inv = Invitation.objects.select_related("panorama", "invitee").filter(token_hash=hash_token(token)).first()
    if inv is None or not inv.is_pending:
        return render(request, "accounts/invite_invalid.html", status=404)
    signed_in = request.user.is_authenticated
    if inv.invitee_id is not None and not signed_in:
        return redirect_to_login(request.get_full_path())
    if _for_someone_else(request, inv):
        return render(request, "accounts/invite_invalid.html", {"other_account": True}, status=403)
    form = None if signed_in else SignUpForm(request.POST or None)
    if request.method == "POST":
        if request.POST.get("decline") and signed_in:
            return _decline(request, inv)
        if signed_in:
            user = request.user
        elif form is not None and form.is_valid():
            user = form.save(commit=False)
            user.email = inv.email
            user.save()
        else:
            return render(request, "accounts/accept.html", {"inv": inv, "form": form}, status=400)
        _join(inv, user)
        if not signed_in:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to {inv.panorama.title}.")
        return redirect(inv.panorama.get_absolute_url())
    return render(request, "accounts/accept.html", {"inv": inv, "form": form})


def _decline(request: HttpRequest, inv: Invitation) -> HttpResponse:
    inv.delete()
    messages.success(request, f"Invitation to {inv.panorama.title} declined.")
    return redirect("sharing:home")


@login_required
@require_POST
def respond(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept or decline, from the home page, an invitation addressed to the signed-in account."""
    inv = get_object_or_404(Invitation.objects.select_related("panorama"), pk=pk, invitee=request.user)
    if not inv.is_pending:
        return render(request, "accounts/invite_invalid.html", status=404)
    if request.POST.get("decline"):
        return _decline(request, inv)
    _join(inv, request.user)
    messages.success(request, f"Welcome to {inv.panorama.title}.")
    return redirect(inv.panorama.get_absolute_url())
