//! Every end-to-end suite in one test binary, one module per surface or concern: each test
//! starts real Herald binaries (and circusd, redis-server, the original Thunderpush where it
//! needs them) on free loopback ports and stops them. One binary rather than one per file
//! so the release build links and monomorphises the client stack once. Run one suite with
//! a module filter, e.g. `cargo test --release -p e2e --test cluster webhooks::`.

mod bench_smoke;
mod circus;
mod delivery;
mod faults;
mod graphql;
mod messages;
mod metrics;
mod mozilla_api;
mod native;
mod openapi;
mod ppg;
mod recovery;
mod rfc6455;
mod scale_out;
mod sockjs;
mod status_page;
mod thunderpush;
mod thunderpush_original;
mod v1_api;
mod vpush;
mod webhooks;
mod webpush;
