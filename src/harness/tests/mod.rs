//! Harness tests on a fake engine and a simulated clock, so every timing is exact.
mod experiment_tests;
mod fake_engine;
mod run_loop_tests;
mod workload_tests;
