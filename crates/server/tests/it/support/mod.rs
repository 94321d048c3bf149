//! The harness of the process-level tests (`distributed`, `faults_*`,
//! `load`): each test file says `mod support;` and uses what it needs.
#![allow(dead_code, unused_imports)]

pub mod deployment;
pub mod postgres;
pub mod proxy;
pub mod tmpfs;

pub use deployment::{Deployment, DeploymentBuilder, TOKEN, TestChannel, WAIT};
