//! Delivering a batch as requests, and isolating what a service refuses: a refused request is
//! split in halves (bisected) until the refused events stand alone; everything else is
//! delivered. The refused events go back in the `Outcome`; the pipeline counts and logs them
//! and writes the notice event into the destination (one place for every sink).

use std::future::Future;
use std::ops::Range;

use anyhow::Result;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::http::Answer;
use std::sync::Arc;

use super::{Outcome, Record, Rejected};

/// One event rendered for a destination.
pub struct Item {
    /// Requests only mix items with equal keys (Loggly: the tag set). Shared: a batch has
    /// few keys and many items.
    pub key: Arc<str>,
    /// The rendered event; its length counts toward the request limit.
    pub body: String,
}

/// Keys whose requests are in flight at once. One key's requests go one after the other, so
/// its events keep their order; different keys (Loggly: one tag set per container) do not
/// wait for each other, or a host with hundreds of containers would pay a round trip per
/// container per batch, in turn.
pub const CONCURRENT_KEYS: usize = 8;

/// A destination's request format and service call.
pub trait Requests: Send + Sync {
    /// Largest request body, bytes.
    fn max_request_bytes(&self) -> usize;
    /// Bytes a request adds per item (separators) and once (envelope).
    fn framing(&self) -> (usize, usize);
    /// Renders one record, within the per-event limit.
    fn render(&mut self, record: &Record) -> Item;
    /// Sends items that share one key as one request (transient failures retried inside).
    /// Called for up to [`CONCURRENT_KEYS`] keys at once.
    fn send(&self, key: &str, items: &[&Item]) -> impl Future<Output = Result<Answer>> + Send;
}

/// Delivers `batch`; returns when every record is accepted or refused (see the sink contract).
pub async fn deliver<R: Requests>(r: &mut R, batch: &[Arc<Record>]) -> Result<Outcome> {
    let items: Vec<Item> = batch.iter().map(|rec| r.render(rec)).collect();
    let refused = send_isolating(r, &items).await?;
    let rejected = summarize(batch, &refused);
    Ok(Outcome { rejected })
}

/// Sends all items, bisecting refused requests; returns (index, reason) of refused items.
async fn send_isolating<R: Requests>(r: &R, items: &[Item]) -> Result<Vec<(usize, String)>> {
    // Each item's key as a small number (keys are few; comparing numbers, not strings, in the
    // sort and the split was a few percent of Loggly's CPU), then a stable order by key, which
    // keeps journal order within each request.
    let mut ids: rustc_hash::FxHashMap<&str, u32> = Default::default();
    let key_of: Vec<u32> = items
        .iter()
        .map(|i| {
            let n = ids.len() as u32;
            *ids.entry(&i.key).or_insert(n)
        })
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| key_of[i]);
    let per_key = chunks(r, items, &key_of, &order);
    let order = &order;
    let refused: Vec<Vec<(usize, String)>> = stream::iter(per_key)
        .map(|ranges| send_key(r, items, order, ranges))
        .buffer_unordered(CONCURRENT_KEYS)
        .try_collect()
        .await?;
    let mut refused: Vec<(usize, String)> = refused.into_iter().flatten().collect();
    refused.sort();
    Ok(refused)
}

/// Sends one key's requests in order, bisecting refused ones.
async fn send_key<R: Requests>(
    r: &R,
    items: &[Item],
    order: &[usize],
    mut pending: Vec<Range<usize>>,
) -> Result<Vec<(usize, String)>> {
    pending.reverse();
    let mut refused = Vec::new();
    while let Some(range) = pending.pop() {
        let part: Vec<&Item> = order[range.clone()].iter().map(|&i| &items[i]).collect();
        match r.send(&part[0].key, &part).await? {
            Answer::Accepted => {}
            Answer::Refused(why) if range.len() == 1 => refused.push((order[range.start], why)),
            Answer::Refused(_) => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
        }
    }
    Ok(refused)
}

/// Splits `order` into requests: per key (the keys come sorted), that key's ranges in order,
/// each within the request size limit.
fn chunks<R: Requests>(
    r: &R,
    items: &[Item],
    key_of: &[u32],
    order: &[usize],
) -> Vec<Vec<Range<usize>>> {
    let (per_item, envelope) = r.framing();
    let max = r.max_request_bytes();
    let mut out = Vec::new();
    let mut key_ranges = Vec::new();
    let mut start = 0;
    let mut size = envelope;
    for (pos, &i) in order.iter().enumerate() {
        let len = items[i].body.len() + per_item;
        if pos > start {
            let key_changes = key_of[i] != key_of[order[start]];
            if key_changes || size + len > max {
                key_ranges.push(start..pos);
                if key_changes {
                    out.push(std::mem::take(&mut key_ranges));
                }
                start = pos;
                size = envelope;
            }
        }
        size += len;
    }
    if start < order.len() {
        key_ranges.push(start..order.len());
    }
    if !key_ranges.is_empty() {
        out.push(key_ranges);
    }
    out
}

/// Refused items grouped by group, stream and reason, in journal order.
fn summarize(batch: &[Arc<Record>], refused: &[(usize, String)]) -> Vec<Rejected> {
    let mut out: Vec<Rejected> = Vec::new();
    for (i, why) in refused {
        let rec = &batch[*i];
        let t = rec.event.time;
        match out
            .iter_mut()
            .find(|r| r.group == rec.group && r.stream == rec.stream && &r.reason == why)
        {
            Some(r) => {
                r.count += 1;
                r.first = r.first.min(t);
                r.last = r.last.max(t);
            }
            None => out.push(Rejected {
                group: rec.group.clone(),
                stream: rec.stream.clone(),
                count: 1,
                first: t,
                last: t,
                reason: why.clone(),
            }),
        }
    }
    out
}
