# wa_media: incoming media stored by the runners (migrations/20261204000200_media.sql). Unmanaged:
# this only brings Django's state in step.

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("wa_outbox", "0012_session_reject_calls"),
    ]

    operations = [
        migrations.CreateModel(
            name="Media",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("wa_message_id", models.TextField()),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("image", "Image"),
                            ("video", "Video"),
                            ("audio", "Audio"),
                            ("voice", "Voice note"),
                            ("document", "Document"),
                            ("sticker", "Sticker"),
                        ],
                        max_length=16,
                    ),
                ),
                ("mime", models.TextField(blank=True, null=True)),
                ("filename", models.TextField(blank=True, null=True)),
                ("caption", models.TextField(blank=True, null=True)),
                ("size", models.BigIntegerField(blank=True, null=True)),
                ("sha256", models.CharField(blank=True, max_length=64, null=True)),
                ("data", models.BinaryField(blank=True, null=True)),
                ("error_code", models.CharField(blank=True, max_length=32, null=True)),
                ("error", models.TextField(blank=True, null=True)),
                (
                    "created_at",
                    models.DateTimeField(
                        blank=True, db_default=django.db.models.functions.datetime.Now()
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        blank=True, db_default=django.db.models.functions.datetime.Now()
                    ),
                ),
                (
                    "event",
                    models.OneToOneField(
                        db_column="event_id",
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="media",
                        to="wa_outbox.event",
                    ),
                ),
                (
                    "session",
                    models.ForeignKey(
                        db_column="session_id",
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="media",
                        to="wa_outbox.session",
                    ),
                ),
            ],
            options={
                "verbose_name": "WhatsApp media",
                "verbose_name_plural": "WhatsApp media",
                "db_table": "wa_media",
                "ordering": ["-id"],
                "managed": False,
            },
        ),
    ]
