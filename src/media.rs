//! Fetching media_url with an SSRF guard, a size cap and a timeout.
