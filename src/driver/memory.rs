//! A scripted in-memory driver, only for unit tests of the runner's loops.
