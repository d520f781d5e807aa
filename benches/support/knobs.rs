//! The benches' settings from the environment (`ALBWATCH_BENCH_*`): a number, or the default
//! when it is unset or not a number.

pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
