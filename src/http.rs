//! Health, readiness and Prometheus metrics on WA_HTTP_LISTEN.
