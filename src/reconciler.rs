//! The session reconciler: leases, capacity, desired_state.
