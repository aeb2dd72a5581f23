//! End-to-end tests: the real `sandman` binary, the real Docker engine, the real OpenSSH clients.

mod harness;
mod http;

mod address;
mod api;
mod cli;
mod clients;
mod concurrency;
mod crash;
mod errors;
mod firewall;
mod gpu;
mod health;
mod hostile;
mod identity;
mod idle;
mod image;
mod limits;
mod login;
mod network;
mod package;
mod quota;
mod reap;
mod swarm;
