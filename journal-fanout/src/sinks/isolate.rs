//! Delivering a batch as requests, and isolating what a service refuses: a refused request is
//! split in halves (bisected) until the refused events stand alone; everything else is
//! delivered. The refused events go back in the `Outcome`; the pipeline counts and logs them
//! and writes the notice event into the destination (one place for every sink).

use std::future::Future;
use std::ops::Range;

use anyhow::Result;

use super::http::Answer;
use std::sync::Arc;

use super::{Outcome, Record, Rejected};

/// One event rendered for a destination.
pub struct Item {
    /// Requests only mix items with equal keys (Loggly: the tag set).
    pub key: String,
    /// The rendered event; its length counts toward the request limit.
    pub body: String,
}

/// A destination's request format and service call.
pub trait Requests: Send {
    /// Largest request body, bytes.
    fn max_request_bytes(&self) -> usize;
    /// Bytes a request adds per item (separators) and once (envelope).
    fn framing(&self) -> (usize, usize);
    /// Renders one record, within the per-event limit.
    fn render(&self, record: &Record) -> Item;
    /// Sends items that share one key as one request (transient failures retried inside).
    fn send(&mut self, key: &str, items: &[&Item]) -> impl Future<Output = Result<Answer>> + Send;
}

/// Delivers `batch`; returns when every record is accepted or refused (see the sink contract).
pub async fn deliver<R: Requests>(r: &mut R, batch: &[Arc<Record>]) -> Result<Outcome> {
    let items: Vec<Item> = batch.iter().map(|rec| r.render(rec)).collect();
    let refused = send_isolating(r, &items).await?;
    let rejected = summarize(batch, &refused);
    Ok(Outcome { rejected })
}

/// Sends all items, bisecting refused requests; returns (index, reason) of refused items.
async fn send_isolating<R: Requests>(r: &mut R, items: &[Item]) -> Result<Vec<(usize, String)>> {
    // Stable order by key keeps journal order within each request.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].key.cmp(&items[b].key));
    let mut pending = chunks(r, items, &order);
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
    refused.sort();
    Ok(refused)
}

/// Splits `order` into runs of one key within the request size limit.
fn chunks<R: Requests>(r: &R, items: &[Item], order: &[usize]) -> Vec<Range<usize>> {
    let (per_item, envelope) = r.framing();
    let max = r.max_request_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = envelope;
    for (pos, &i) in order.iter().enumerate() {
        let len = items[i].body.len() + per_item;
        let new_key = pos > start && items[i].key != items[order[start]].key;
        if pos > start && (new_key || size + len > max) {
            out.push(start..pos);
            start = pos;
            size = envelope;
        }
        size += len;
    }
    if start < order.len() {
        out.push(start..order.len());
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
