//! sandman: per-user hardened SSH containers with a GPU slice.
//!
//! Data flows one way: a front end (`commands` for the CLI, `server` for HTTP) calls `sessions`,
//! which reserves in `store`, picks a slice from `gpu`, and starts the container through an
//! `engine::Engine`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod disk;
pub mod engine;
pub mod error;
pub mod firewall;
pub mod gpu;
pub mod image;
pub mod limits;
pub mod locks;
pub mod progress;
pub mod quota;
pub mod server;
pub mod sessions;
pub mod ssh;
pub mod store;
pub mod validate;
pub mod views;
pub mod workspace;
