//! Cluster-wide housekeeping on cron schedules, run by one leader at a time.
