//! prefsmith's integration tests: one binary (one link) for everything under `tests/`.
//!
//! * `slt` — SQL behaviour of every function, from `tests/sql/*.slt` (sqllogictest);
//! * `reference` — pair tables checked against the independent Python implementation;
//! * `select_margin` — BeeS selection against the independent numpy reference;
//! * `augment` — reward-augmented copies, checked row by row with pyarrow;
//! * `export` — TRL, OpenRLHF and NeMo layouts, and conversational round trips;
//! * `route` — curriculum ranks and DPO/SFT routing (hand-computed and numpy);
//! * `cli` — the binary end to end: quickstart, jobs, `sql`, `synth`, `inspect`;
//! * `bad_input` — clear, named errors and no output that looks complete;
//! * `model` — the llama model, tokenizer, scoring, sampling and judging against references;
//! * `s3` — stages on a real S3 server (SeaweedFS, started by the tests): identical output,
//!   named errors, and nothing that looks complete after a failure;
//! * `train` — the trainer: losses vs numpy, learning, MixDPO, exact resume, bad input;
//! * `report` — `prefsmith report` rendered by headless Chromium, failed and empty stages;
//! * `experiment` — every gold-reward experiment at CI size, figures checked in Python.
//!
//! A few of these files run past 600 lines: each holds one component's tests with the fixtures
//! they share (a synthetic table, a started server), and every test is its own short unit.

mod augment;
mod bad_input;
mod clean;
mod cli;
mod common;
mod experiment;
mod export;
mod model;
mod reference;
mod report;
mod route;
mod s3;
mod s3_server;
mod select_margin;
mod slt;
mod train;
