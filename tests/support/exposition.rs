//! Reading a Prometheus text exposition (what `/metrics` serves, or a registry encodes) in the
//! tests: one sample's value by its exact name and labels, or the sum over a whole family.

/// The value of the sample `name` (with its labels, exactly as exposed), `None` when absent.
pub fn value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The value of the sample `name` (with its labels, exactly as exposed), or 0 when absent.
pub fn sample(body: &str, name: &str) -> f64 {
    value(body, name).unwrap_or(0.0)
}

/// The sum over every sample of the family `name` (all label values).
pub fn family_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}
