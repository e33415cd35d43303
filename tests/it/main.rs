//! ferry's integration tests: the real binary against real git servers on loopback.

mod cli;
mod cluster;
mod credentials;
mod deploy;
mod engine_trust;
mod failures;
mod fast_path;
mod fleet_bitbucket;
mod fleet_gitea;
mod fleet_github;
mod fleet_gitlab;
mod fleet_host;
mod fleet_serve;
mod fleets;
mod harness;
mod http_face;
mod lambda;
mod lfs;
mod lifecycle;
mod moto;
mod narrow;
mod policies;
mod polling;
mod serve_deploy;
mod service;
mod service_trust;
