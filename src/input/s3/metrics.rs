//! The S3 input's telemetry, registered on the app's registry by one constructor. Every label
//! value comes from a closed set (object and message outcomes, SQS operations, call outcomes),
//! so the input adds a fixed number of series however many objects it reads.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What became of one object, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectOutcome {
    /// Read to its end, every line counted.
    Counted,
    /// Already counted (same bucket, key and ETag) within the dedupe memory.
    Duplicate,
    /// Its key is not an ALB log key under the configured prefix.
    SkippedKey,
    /// GetObject failed, or the body was cut short.
    Unreadable,
    /// Not gzip it claimed to be, or a gzip stream that breaks off.
    Corrupt,
    /// Lines were read and not one of them was an ALB log line.
    NotAlb,
}

impl ObjectOutcome {
    const ALL: [ObjectOutcome; 6] = [
        ObjectOutcome::Counted,
        ObjectOutcome::Duplicate,
        ObjectOutcome::SkippedKey,
        ObjectOutcome::Unreadable,
        ObjectOutcome::Corrupt,
        ObjectOutcome::NotAlb,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectOutcome::Counted => "counted",
            ObjectOutcome::Duplicate => "duplicate",
            ObjectOutcome::SkippedKey => "skipped_key",
            ObjectOutcome::Unreadable => "unreadable",
            ObjectOutcome::Corrupt => "corrupt",
            ObjectOutcome::NotAlb => "not_alb",
        }
    }

    /// Whether the object's message may be deleted: it was counted, or it never will be.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            ObjectOutcome::Counted | ObjectOutcome::Duplicate | ObjectOutcome::SkippedKey
        )
    }
}

/// What became of one SQS message, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Every object in it is final; the message was deleted.
    Deleted,
    /// An object could not be read or decoded: left for the queue's redrive policy.
    Left,
    /// Shutdown came first: made visible again at once for another instance.
    Returned,
    /// S3's `s3:TestEvent`, sent when notifications are set up; deleted.
    TestEvent,
    /// A valid notification of an event that creates no object (e.g. a deletion); deleted.
    Ignored,
    /// Not an S3 event notification at all: left for the redrive policy.
    Invalid,
}

impl MessageOutcome {
    const ALL: [MessageOutcome; 6] = [
        MessageOutcome::Deleted,
        MessageOutcome::Left,
        MessageOutcome::Returned,
        MessageOutcome::TestEvent,
        MessageOutcome::Ignored,
        MessageOutcome::Invalid,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Deleted => "deleted",
            MessageOutcome::Left => "left",
            MessageOutcome::Returned => "returned",
            MessageOutcome::TestEvent => "test_event",
            MessageOutcome::Ignored => "ignored",
            MessageOutcome::Invalid => "invalid",
        }
    }
}

/// The SQS calls the input makes, as the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ReceiveMessage,
    DeleteMessage,
    ChangeMessageVisibility,
}

impl Operation {
    const ALL: [Operation; 3] = [
        Operation::ReceiveMessage,
        Operation::DeleteMessage,
        Operation::ChangeMessageVisibility,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::ReceiveMessage => "receive_message",
            Operation::DeleteMessage => "delete_message",
            Operation::ChangeMessageVisibility => "change_message_visibility",
        }
    }

    /// The API's own name, for messages.
    pub const fn api_name(self) -> &'static str {
        match self {
            Operation::ReceiveMessage => "ReceiveMessage",
            Operation::DeleteMessage => "DeleteMessage",
            Operation::ChangeMessageVisibility => "ChangeMessageVisibility",
        }
    }
}

/// The S3 input's counters and gauges.
#[derive(Clone)]
pub struct S3Metrics {
    objects: IntCounterVec,
    object_bytes: IntCounterVec,
    messages: IntCounterVec,
    requests: IntCounterVec,
    pub lines: IntCounter,
    pub object_age: Histogram,
    pub objects_in_flight: IntGauge,
    pub bytes_in_flight: IntGauge,
    pub messages_in_flight: IntGauge,
    pub dedupe_evictions: IntCounter,
}

impl S3Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let objects = IntCounterVec::new(
            Opts::new(
                "albwatch_s3_objects_total",
                "S3 objects by outcome: counted, duplicate, skipped_key, unreadable, corrupt, not_alb.",
            ),
            &["outcome"],
        )?;
        let object_bytes = IntCounterVec::new(
            Opts::new(
                "albwatch_s3_object_bytes_total",
                "Bytes of S3 objects as stored (the notification's size), by outcome.",
            ),
            &["outcome"],
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "albwatch_s3_messages_total",
                "SQS messages by outcome: deleted, left (for the redrive policy), returned \
                 (at shutdown), test_event, ignored, invalid.",
            ),
            &["outcome"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "albwatch_sqs_requests_total",
                "SQS calls by operation and outcome (ok, error).",
            ),
            &["operation", "outcome"],
        )?;
        let lines = IntCounter::new(
            "albwatch_s3_lines_total",
            "Lines of S3 objects read to their end (outcome counted).",
        )?;
        let object_age = Histogram::with_opts(
            HistogramOpts::new(
                "albwatch_s3_object_age_seconds",
                "Wall clock when an object's lines were all counted minus the time S3 reported \
                 it created.",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
        )?;
        let objects_in_flight = IntGauge::new(
            "albwatch_s3_objects_in_flight",
            "S3 objects being read now.",
        )?;
        let bytes_in_flight = IntGauge::new(
            "albwatch_s3_bytes_in_flight",
            "Bytes (as stored) of the S3 objects being read now.",
        )?;
        let messages_in_flight = IntGauge::new(
            "albwatch_s3_messages_in_flight",
            "SQS messages received and not yet deleted or left.",
        )?;
        let dedupe_evictions = IntCounter::new(
            "albwatch_s3_dedupe_evictions_total",
            "Counted objects forgotten by the dedupe memory (s3.dedupe_capacity) to make room: \
             a redelivery of one of them would be counted again.",
        )?;
        for o in ObjectOutcome::ALL {
            objects.with_label_values(&[o.as_str()]);
            object_bytes.with_label_values(&[o.as_str()]);
        }
        for o in MessageOutcome::ALL {
            messages.with_label_values(&[o.as_str()]);
        }
        for op in Operation::ALL {
            for outcome in ["ok", "error"] {
                requests.with_label_values(&[op.as_str(), outcome]);
            }
        }
        registry.register(Box::new(objects.clone()))?;
        registry.register(Box::new(object_bytes.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(lines.clone()))?;
        registry.register(Box::new(object_age.clone()))?;
        registry.register(Box::new(objects_in_flight.clone()))?;
        registry.register(Box::new(bytes_in_flight.clone()))?;
        registry.register(Box::new(messages_in_flight.clone()))?;
        registry.register(Box::new(dedupe_evictions.clone()))?;
        Ok(S3Metrics {
            objects,
            object_bytes,
            messages,
            requests,
            lines,
            object_age,
            objects_in_flight,
            bytes_in_flight,
            messages_in_flight,
            dedupe_evictions,
        })
    }

    pub fn object(&self, outcome: ObjectOutcome, bytes: u64) {
        self.objects.with_label_values(&[outcome.as_str()]).inc();
        self.object_bytes
            .with_label_values(&[outcome.as_str()])
            .inc_by(bytes);
    }

    pub fn message(&self, outcome: MessageOutcome) {
        self.messages.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn request(&self, op: Operation, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.requests
            .with_label_values(&[op.as_str(), outcome])
            .inc();
    }
}
