from django.apps import AppConfig


class WaOutboxConfig(AppConfig):
    name = "wa_outbox"
    label = "wa_outbox"
    verbose_name = "WhatsApp outbox"
    default_auto_field = "django.db.models.BigAutoField"
