"""A test app for the `wa_outbox_listen` subprocess test: records each signal as a JSON line in
the file named by WA_TEST_SIGNAL_LOG, so the parent test can see what the command delivered."""
