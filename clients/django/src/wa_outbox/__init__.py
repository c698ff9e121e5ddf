"""Use WhatsApp from Django through the wa-outbox tables (wa_session, wa_message, wa_event)."""

__version__ = "0.1.0"
