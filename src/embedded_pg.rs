//! A private PostgreSQL cluster for local use when DATABASE_URL is unset.
