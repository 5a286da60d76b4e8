"""Sign-in pages (/accounts/...) and a panorama's membership pages (/p/<slug>/members/)."""

from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password-reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "accounts/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("accounts/reset/done/", views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("accounts/invite/<str:token>/", views.accept, name="accept"),
    path("accounts/invitations/<int:pk>/respond/", views.respond, name="respond"),
    path("p/<slug:slug>/members/", views.members, name="members"),
    path("p/<slug:slug>/members/invite/", views.invite, name="invite"),
    path("p/<slug:slug>/presentation/", views.presentation, name="presentation"),
    path("p/<slug:slug>/members/<int:user_id>/role/", views.change_role, name="change_role"),
    path("p/<slug:slug>/members/<int:user_id>/remove/", views.remove_member, name="remove"),
    path("p/<slug:slug>/invitations/<int:pk>/revoke/", views.revoke_invitation, name="revoke"),
]
