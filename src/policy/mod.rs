//! Network policy (work in progress).
pub mod groups;
