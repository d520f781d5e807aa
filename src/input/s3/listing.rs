//! `albwatch replay s3://bucket/prefix --from … --to …`: the ELB log objects of a time range,
//! found without listing the bucket — the account and region folders under `AWSLogs/` (unless
//! the prefix names them), then only the date folders of the range — and kept when the
//! 5-minute period in their name overlaps it. They are fetched `parallel` at a time on a
//! runtime of their own and handed on in the order of their periods (then keys), each a
//! streaming [`Body`], as chunks of lines exactly like local files, so the replay engine
//! cannot tell the difference.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;

use super::key::{self, S3Url};
use super::object::{self, Body};
use super::sdk::Clients;
use crate::buffers::Buffers;
use crate::input::files::Unreadable;
use crate::lines::Chunk;

/// The objects of one replay: where and when.
#[derive(Debug, Clone)]
pub struct Selection {
    pub url: S3Url,
    pub from_us: i64,
    pub to_us: i64,
    /// Objects downloading at once.
    pub parallel: usize,
}

/// Why the objects could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Setup(#[from] crate::input::aws::SetupError),
    #[error("{0}")]
    List(crate::input::aws::AwsError),
    #[error("cannot start the S3 runtime: {0}")]
    Runtime(io::Error),
}

/// The listed objects and their lines, in period order.
pub struct Objects {
    pub count: usize,
    bucket: String,
    /// Each object's key and body, as the fetching thread starts them.
    rx: std_mpsc::Receiver<(String, Body)>,
    /// Runs the listing and the downloads; it lives as long as the objects are read.
    runtime: tokio::runtime::Runtime,
}

/// Lists the selection's objects (failing before any line if that is impossible) and starts
/// fetching them; `region` overrides the AWS chain's (`s3.region`).
pub fn open(selection: Selection, region: Option<String>) -> Result<Objects, ListError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ListError::Runtime)?;
    let (tx, rx) = std_mpsc::sync_channel(selection.parallel.max(1));
    let (listed_tx, listed_rx) = std_mpsc::channel();
    let bucket = selection.url.bucket.clone();
    runtime.spawn(async move {
        let clients = match Clients::for_bucket(&selection.url.bucket, region.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                let _ = listed_tx.send(Err(ListError::from(e)));
                return;
            }
        };
        let keys = match list(&clients, &selection).await {
            Ok(keys) => keys,
            Err(e) => {
                let _ = listed_tx.send(Err(ListError::List(e)));
                return;
            }
        };
        let _ = listed_tx.send(Ok(keys.len()));
        for k in keys {
            let body = object::fetch(&clients, &selection.url.bucket, &k);
            // The bounded channel holds `parallel` bodies ahead of the reader, each
            // already downloading into its own small buffer.
            let send = tx.clone();
            let delivered = tokio::task::spawn_blocking(move || send.send((k, body)).is_ok()).await;
            if !matches!(delivered, Ok(true)) {
                return;
            }
        }
    });
    let count = listed_rx
        .recv()
        .map_err(|_| ListError::Runtime(io::Error::other("the S3 thread stopped")))??;
    Ok(Objects {
        count,
        bucket,
        rx,
        runtime,
    })
}

impl Objects {
    /// Every object's lines in batches of about `batch_bytes`; an object that cannot be read
    /// or decoded comes as one [`Unreadable`] named by its `s3://` URL and the rest go on.
    pub fn chunks(
        self,
        batch_bytes: usize,
        max_line: usize,
        buffers: Buffers,
    ) -> impl Iterator<Item = Result<Chunk, Unreadable>> {
        let Objects {
            bucket,
            rx,
            runtime,
            ..
        } = self;
        rx.into_iter().flat_map(move |(key, body)| {
            let _runs_the_downloads = &runtime;
            let path = PathBuf::from(format!("s3://{bucket}/{key}"));
            object::chunks(body, batch_bytes, max_line, buffers.clone()).map(move |item| {
                item.map_err(|e| Unreadable {
                    path: path.clone(),
                    error: io::Error::other(e.to_string()),
                })
            })
        })
    }
}

/// The keys of the selection, by period then key.
async fn list(
    clients: &Clients,
    selection: &Selection,
) -> Result<Vec<String>, crate::input::aws::AwsError> {
    let bucket = &selection.url.bucket;
    let layout = key::layout_prefix(&selection.url.prefix);
    let accounts = match &layout.account {
        Some(a) => vec![a.clone()],
        None => folders(clients, bucket, &format!("{}AWSLogs/", layout.base)).await?,
    };
    let mut found = Vec::new();
    for account in accounts {
        let regions = match &layout.region {
            Some(r) => vec![r.clone()],
            None => {
                let under = format!("{}AWSLogs/{account}/elasticloadbalancing/", layout.base);
                folders(clients, bucket, &under).await?
            }
        };
        for region in regions {
            for day in key::day_prefixes(
                &layout.base,
                &account,
                &region,
                selection.from_us,
                selection.to_us,
            ) {
                for k in keys_under(clients, bucket, &day).await? {
                    if let Some(elb) = key::parse_elb_key(&k)
                        && key::overlaps(elb.period_end_us, selection.from_us, selection.to_us)
                    {
                        found.push((elb.period_end_us, k.clone()));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found.into_iter().map(|(_, k)| k).collect())
}

/// The names of the folders directly under `prefix` (`…/NAME/` → `NAME`).
async fn folders(
    clients: &Clients,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, crate::input::aws::AwsError> {
    let mut names = Vec::new();
    each_page(clients, bucket, prefix, Some("/"), |page| {
        names.extend(page.common_prefixes().iter().filter_map(|p| {
            p.prefix()
                .and_then(|p| p.strip_prefix(prefix))
                .and_then(|p| p.strip_suffix('/'))
                .map(str::to_owned)
        }));
    })
    .await?;
    Ok(names)
}

/// Every key under `prefix`.
async fn keys_under(
    clients: &Clients,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, crate::input::aws::AwsError> {
    let mut keys = Vec::new();
    each_page(clients, bucket, prefix, None, |page| {
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    })
    .await?;
    Ok(keys)
}

/// Hands every ListObjectsV2 page under `prefix` (grouped at `delimiter`, if given) to `each`.
async fn each_page(
    clients: &Clients,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    mut each: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
) -> Result<(), crate::input::aws::AwsError> {
    let mut token = None;
    loop {
        let page = clients
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| clients.s3_error("ListObjectsV2", &e))?;
        each(&page);
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(());
        }
    }
}
