from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("wa/", include("wa_outbox.urls")),
    path("me/whatsapp/", include("wa_outbox.link_urls")),
]
