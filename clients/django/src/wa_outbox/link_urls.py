"""The "link your WhatsApp" page: path("whatsapp/", include("wa_outbox.link_urls"))."""

from django.urls import path

from . import linking

app_name = "wa_outbox_link"

urlpatterns = [
    path("link/", linking.LinkPageView.as_view(), name="link"),
    path("link/state", linking.LinkStateView.as_view(), name="link-state"),
    path("link/start", linking.LinkStartView.as_view(), name="link-start"),
    path("link/disconnect", linking.LinkDisconnectView.as_view(), name="link-disconnect"),
    path("link/logout", linking.LinkLogoutView.as_view(), name="link-logout"),
    path("link/link.js", linking.LinkScriptView.as_view(), name="link-script"),
]
