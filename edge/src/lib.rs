//! shipit's edge: the reverse proxy in front of a local target's slots.

pub mod slot;

pub use slot::Slot;
