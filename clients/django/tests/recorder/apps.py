import json
import os

from django.apps import AppConfig


class RecorderConfig(AppConfig):
    name = "tests.recorder"
    label = "wa_test_recorder"

    def ready(self):
        from wa_outbox import signals

        path = os.environ["WA_TEST_SIGNAL_LOG"]

        def recorder(name):
            def handle(sender, event, session_id, **kwargs):
                with open(path, "a") as f:
                    f.write(
                        json.dumps({"signal": name, "event": event.id, "session": session_id})
                        + "\n"
                    )

            return handle

        for name in ("message_received", "message_ack", "session_status"):
            getattr(signals, name).connect(
                recorder(name), weak=False, dispatch_uid=f"recorder-{name}"
            )
