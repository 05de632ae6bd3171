//! ringnet — placeholder, theory of operation written below once the modules exist.
pub mod backend;
pub mod config;
pub mod egress;
pub mod pool;
pub mod ring;
pub mod stack;
pub mod wire;
