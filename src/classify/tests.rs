//! Every cause of the contract has a fixture line; the AWS examples get the obvious causes; the
//! timing thresholds follow the load balancer's idle timeout.

use super::*;
use crate::parse::parse_line;

const CAUSE_LINES: &str = include_str!("../../tests/fixtures/causes.log");
const CAUSE_EXPECTED: &str = include_str!("../../tests/fixtures/causes.expected");
const AWS_EXAMPLES: &str = include_str!("../../tests/fixtures/aws_examples.log");

fn cause_of(line: &str, lb: &LbSettings) -> Cause {
    let entry = parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
    classify(&entry, lb)
}

#[test]
fn every_fixture_line_gets_its_cause() {
    let lb = LbSettings::default();
    let expected: Vec<&str> = CAUSE_EXPECTED.lines().collect();
    let lines: Vec<&str> = CAUSE_LINES.lines().collect();
    assert_eq!(lines.len(), expected.len());
    for (line, want) in lines.iter().zip(&expected) {
        assert_eq!(cause_of(line, &lb).as_str(), *want, "{line}");
    }
}

#[test]
fn every_cause_has_a_fixture_line() {
    for cause in Cause::ALL {
        assert!(
            CAUSE_EXPECTED.lines().any(|l| l == cause.as_str()),
            "no fixture line for {}",
            cause.as_str()
        );
    }
}

#[test]
fn spellings_match_the_contract() {
    let contract = include_str!("../../docs/causes.md");
    for cause in Cause::ALL {
        assert!(
            contract.contains(&format!("`{}`", cause.as_str())),
            "{} missing from docs/causes.md",
            cause.as_str()
        );
        assert_eq!(Cause::from_name(cause.as_str()), Some(*cause));
        assert!(!cause.hint().is_empty());
    }
    assert_eq!(Cause::ALL.len(), 39);
}

#[test]
fn aws_examples() {
    let lb = LbSettings::default();
    let causes: Vec<Cause> = AWS_EXAMPLES.lines().map(|l| cause_of(l, &lb)).collect();
    use Cause::*;
    assert_eq!(
        causes,
        vec![
            TargetOk,
            TargetOk,
            TargetOk,
            TargetOk,
            TargetOk,
            TargetOk,
            LambdaError,
            MalformedRequest
        ]
    );
}

#[test]
fn idle_timeout_is_per_load_balancer() {
    // A 504 after 30 s with nothing dispatched: too slow for a 30 s load balancer, unexplained
    // for the default 60 s one.
    let line = CAUSE_LINES.lines().nth(34).expect("the 504 fixture");
    let mut entry = parse_line(line.as_bytes()).expect("parses");
    entry.request_creation_time = Some(entry.time - 30_000_000);
    assert_eq!(
        classify(&entry, &LbSettings::default()),
        Cause::TargetTimeoutOther
    );
    assert_eq!(
        classify(&entry, &LbSettings::with_idle_timeout_secs(30)),
        Cause::TargetTooSlow
    );
}

#[test]
fn connect_timeout_window_edges() {
    let lb = LbSettings::default();
    let line = CAUSE_LINES
        .lines()
        .nth(32)
        .expect("the connect-timeout fixture");
    let entry = parse_line(line.as_bytes()).expect("parses");
    let at = |elapsed_us: i64| {
        let mut e = entry.clone();
        e.request_creation_time = Some(e.time - elapsed_us);
        classify(&e, &lb)
    };
    assert_eq!(at(9_499_999), Cause::TargetTimeoutOther);
    assert_eq!(at(9_500_000), Cause::TargetConnectTimeout);
    assert_eq!(at(11_000_000), Cause::TargetConnectTimeout);
    assert_eq!(at(11_000_001), Cause::TargetTimeoutOther);
    assert_eq!(at(59_000_000), Cause::TargetTooSlow);
}

#[test]
fn target_answer_wins_over_everything() {
    // Even with WAF and fixed-response actions, a target status code means the target answered.
    let line = CAUSE_LINES
        .lines()
        .nth(2)
        .expect("target 5xx fixture")
        .replacen("\"forward\"", "\"waf,fixed-response\"", 1);
    assert_eq!(cause_of(&line, &LbSettings::default()), Cause::Target5xx);
}

#[test]
fn only_faults_alert() {
    use Cause::*;
    for quiet in [TargetOk, Target4xx, FixedResponse, Redirect, LbOk] {
        assert!(!quiet.is_alertable(), "{quiet:?}");
    }
    for loud in [
        Target5xx,
        Http2StreamReset,
        LbUnknown,
        TargetRefusedConnection,
    ] {
        assert!(loud.is_alertable(), "{loud:?}");
    }
    assert_eq!(TargetRefusedConnection.scope(), Scope::Target);
    assert_eq!(NoRegisteredTargets.scope(), Scope::TargetGroup);
    assert_eq!(WafBlocked.scope(), Scope::LoadBalancer);
}

/// Regression (issue: `-` as elb_status_code): no status from the load balancer is a cause of
/// its own evidence, never a parse error.
#[test]
fn no_elb_status_code() {
    let lb = LbSettings::default();
    let line = include_str!("../../tests/fixtures/regressions/elb-status-code-dash.log").trim_end();
    // Nothing in the line says why the load balancer sent nothing: unknown, so it is counted.
    assert_eq!(cause_of(line, &lb), Cause::LbUnknown);
    // Not even a configured fixed response was sent.
    let fixed = line.replacen("\"forward\"", "\"fixed-response\"", 1);
    assert_eq!(cause_of(&fixed, &lb), Cause::LbUnknown);
    // An HTTP/2 error code from either side says a stream reset ended the request.
    assert!(line.ends_with(" \"-\" \"-\""));
    let stem = line.trim_end_matches(" \"-\" \"-\"");
    for codes in [" \"0x8\" \"-\"", " \"-\" \"0x2\""] {
        let reset = format!("{stem}{codes}");
        assert_eq!(cause_of(&reset, &lb), Cause::Http2StreamReset, "{codes}");
    }
    // The target's answer still decides when there is one.
    let answered = line.replacen(" - - 512 ", " - 200 512 ", 1);
    assert_eq!(cause_of(&answered, &lb), Cause::TargetOk);
}
