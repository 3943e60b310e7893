//! The plugin end to end, one module per capability, in one test binary: the test peers in
//! `tests/support` are compiled once for all of them. (`tests/krew.rs`, whose cross builds
//! load the machine for minutes, stays a binary of its own and runs after this one.)

#[path = "../support/mod.rs"]
mod support;

mod apiserver;
mod boot;
mod check;
mod cli;
mod cluster_access;
mod day1;
mod deep;
mod docs;
mod dtk;
mod fleet;
mod hub;
mod mirrors;
mod nodeos;
mod preflight;
mod preflight_check;
mod rbac;
mod runbook;
mod secureboot;
mod status;
mod terminal;
