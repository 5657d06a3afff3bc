//! `cwlogs fetch`: FilterLogEvents, paginated, in parallel time slices, merged in order;
//! and `--follow`, by polling with event-id de-duplication.
//!
//! Flow: services → [`Source`]s (a group, or a group and ≤100 of its streams) → each a
//! chain of time slices fetched concurrently but read in order ([`Ordered`]) → k-way merge
//! by timestamp across sources → [`Formatter`] → [`Out`].
//!
//! The emulator (moto) only interleaves streams when asked (`interleaved=true`, which AWS
//! ignores and always does) and ignores `logStreamNamePrefix`, so task prefixes are
//! resolved to stream names with DescribeLogStreams first — correct on both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use aws_sdk_cloudwatchlogs::Client;
use tokio::sync::{mpsc, Semaphore};

use crate::cli::FetchArgs;
use crate::event::RawEvent;
use crate::format::{Formatter, Style, DEFAULT_TEMPLATE, MULTI_TEMPLATE, VERBOSE_TEMPLATE};
use crate::output::{Out, Progress};
use crate::streams::{self, Window};
use crate::time::{self, local_display};
use crate::{client, groups, live, task};

/// FilterLogEvents takes at most this many stream names.
const MAX_NAMES_PER_CALL: usize = 100;
/// Windows shorter than this are one request, not slices.
const MIN_SLICE_MS: i64 = 60_000;
/// Slices per parallel request: more slices than requests in flight keep the pipe full
/// when event density is uneven.
const SLICES_PER_LANE: usize = 2;
/// No event can be older than its group's creation minus this (PutLogEvents' limit).
const MAX_EVENT_AGE_MS: i64 = 14 * 86_400_000;
/// Follow mode: pause between polls (FilterLogEvents has a low per-account quota).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Write to stdout in chunks about this big.
const FLUSH_BYTES: usize = 64 * 1024;

/// What one FilterLogEvents query reads: a group, or some of its streams.
#[derive(Clone, Debug)]
struct Source {
    group: Arc<str>,
    streams: Option<Vec<String>>,
}

pub async fn run(args: FetchArgs, aws: &crate::cli::AwsArgs, color: bool) -> Result<()> {
    let now = time::now_ms();
    let start = time::parse(&args.since, now)?;
    let end = match &args.until {
        Some(u) => time::parse(u, now)?,
        None => now,
    };
    if start > end {
        bail!(crate::cli::ConfigError(format!(
            "--since ({}) is after --until ({}); swap them or widen the window",
            local_display(start),
            local_display(end)
        )));
    }
    let style = if args.json {
        Style::Json
    } else if args.raw {
        Style::Raw
    } else if args.verbose {
        Style::Template(VERBOSE_TEMPLATE.into())
    } else {
        Style::Template(args.format.clone().unwrap_or_else(|| {
            // Several services interleaved: say which line came from which.
            if args.services.len() > 1 {
                MULTI_TEMPLATE.into()
            } else {
                DEFAULT_TEMPLATE.into()
            }
        }))
    };
    crate::event::set_utc(args.utc);
    // Template and filter errors before any network call.
    let filter = crate::filter::Filter::new(&args.grep_v, args.level.as_deref())
        .map_err(crate::cli::config)?;
    let fmt = Formatter::new(style, color)
        .map_err(crate::cli::config)?
        .with_filter(filter);

    let conf = client::load(aws).await?;
    let client = client::logs(&conf);
    let progress = Progress::new();
    progress.spawn_ticker();
    let mut out = Out::new(progress.clone());

    // Resolve every service first: a typo fails fast, with suggestions.
    let mut resolved = Vec::new();
    let mut named = std::collections::HashSet::new();
    for name in args.services.iter().filter(|n| named.insert(n.as_str())) {
        resolved.push(groups::resolve(&client, name).await?);
    }
    let earliest = resolved
        .iter()
        .map(|g| {
            g.creation_time
                .unwrap_or(0)
                .saturating_sub(MAX_EVENT_AGE_MS)
        })
        .min()
        .unwrap_or(0);
    let start = start.max(earliest.min(end));
    let window = Window { start, end };

    let task = args.task.as_deref();
    let mut sources = Vec::new();
    for g in &resolved {
        sources.extend(
            sources_for(
                &client,
                &g.name,
                task,
                window,
                args.max_streams,
                args.follow,
            )
            .await?,
        );
    }

    let watch = if args.follow {
        watch_for(&conf, &args, &sources).await?
    } else {
        None
    };

    let pattern = args.grep.clone().filter(|p| !p.is_empty());
    let lanes = args.parallel as usize;
    let mut seen = if args.follow {
        Seen::default()
    } else {
        Seen::off()
    };
    let printed = print_window(
        &client,
        &sources,
        window,
        pattern.as_deref(),
        lanes,
        &fmt,
        &mut out,
        &mut seen,
    )
    .await?;
    progress.finish();

    if args.follow {
        let poll = Poll {
            since: start,
            lookback_ms: args.lookback.as_millis().min(i64::MAX as u128) as i64,
            task,
            max_streams: args.max_streams,
            pattern: pattern.as_deref(),
        };
        let watch = match watch {
            Some(find) => find.await??,
            None => None,
        };
        let live = if args.poll {
            None
        } else {
            live::Target::new(&resolved, task, pattern.as_deref())
        };
        return follow(&client, &resolved, &poll, &fmt, &mut out, seen, watch, live).await;
    }
    if printed == 0 {
        let what = match &pattern {
            Some(p) => format!("no events match {p:?}"),
            None => "no events".to_string(),
        };
        bail!(
            "{what} in {} between {} and {}; widen the window, e.g. --since 24h (or --since all)",
            args.services.join(", "),
            local_display(window.start),
            local_display(window.end)
        );
    }
    Ok(())
}

/// The ECS task to watch for `--until-task-stops`, or automatically when `--task` names
/// one task and `--cluster` is given.
async fn watch_for(
    conf: &aws_config::SdkConfig,
    args: &FetchArgs,
    sources: &[Source],
) -> Result<Option<tokio::task::JoinHandle<Result<Option<task::Watch>>>>> {
    let required = args.until_task_stops;
    let Some(prefix) = args.task.as_deref() else {
        if required {
            bail!(crate::cli::ConfigError(
                "--until-task-stops needs --task with the ECS task's ID (or a prefix only its \
                 streams start with)"
                    .into()
            ));
        }
        return Ok(None);
    };
    let names: Vec<String> = sources
        .iter()
        .flat_map(|s| s.streams.iter().flatten().cloned())
        .collect();
    let Some(id) = task::named_task(prefix, &names) else {
        if required {
            bail!(crate::cli::ConfigError(format!(
                "--until-task-stops needs --task to name one ECS task, but the streams starting \
                 with {prefix:?} ({}) do not end in one task ID; give the whole task ID",
                names.join(", ")
            )));
        }
        return Ok(None);
    };
    // Finding the cluster may take a few ECS calls: done while the window prints.
    let (conf, cluster, every) = (conf.clone(), args.cluster.clone(), args.task_poll_every);
    Ok(Some(tokio::spawn(async move {
        let find = task::Watch::find(&conf, cluster.as_deref(), &id, every, required);
        // An endpoint that never answers ECS calls must not hold following back (for long,
        // when the watch was not even asked for).
        let limit = if required {
            task::ANSWER_WITHIN
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(limit, find).await {
            Ok(found) => found,
            Err(_) if required => Err(anyhow::anyhow!(
                "ECS did not answer within {}s while looking for task {id}; check the network, \
                 --region and --endpoint-url, or follow without --until-task-stops",
                task::ANSWER_WITHIN.as_secs()
            )),
            Err(_) => Ok(None),
        }
    })))
}

/// The sources for one group: the whole group, or its active streams matching `task`
/// in chunks FilterLogEvents accepts.
async fn sources_for(
    client: &Client,
    group: &str,
    task: Option<&str>,
    w: Window,
    max: usize,
    follow: bool,
) -> Result<Vec<Source>> {
    let group: Arc<str> = group.into();
    let Some(prefix) = task else {
        return Ok(vec![Source {
            group,
            streams: None,
        }]);
    };
    let names: Vec<String> = if follow {
        let (found, matched_any) =
            streams::maybe_active(client, &group, Some(prefix), w, max).await?;
        if !matched_any {
            return Err(streams::nothing_active(client, &group, Some(prefix), w, false).await);
        }
        found.into_iter().map(|s| s.name).collect()
    } else {
        streams::active(client, &group, Some(prefix), w, max)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    Ok(names
        .chunks(MAX_NAMES_PER_CALL)
        .map(|c| Source {
            group: group.clone(),
            streams: Some(c.to_vec()),
        })
        .collect())
}

/// One paginated FilterLogEvents query. Pages may be empty yet carry a token: keep going
/// until there is no token.
struct Pager {
    client: Client,
    src: Source,
    start: i64,
    end: Option<i64>,
    pattern: Option<String>,
    token: Option<String>,
    done: bool,
}

impl Pager {
    fn new(
        client: &Client,
        src: &Source,
        start: i64,
        end: Option<i64>,
        pattern: Option<&str>,
    ) -> Pager {
        Pager {
            client: client.clone(),
            src: src.clone(),
            start,
            end,
            pattern: pattern.map(str::to_string),
            token: None,
            done: false,
        }
    }

    // `interleaved` is deprecated because AWS ignores it and always interleaves; moto only
    // sorts across streams when it is sent.
    #[allow(deprecated)]
    async fn next(&mut self) -> Result<Option<Vec<RawEvent>>> {
        if self.done {
            return Ok(None);
        }
        let req = self
            .client
            .filter_log_events()
            .log_group_name(&*self.src.group)
            .set_log_stream_names(self.src.streams.clone())
            .start_time(self.start)
            .set_end_time(self.end)
            .set_filter_pattern(self.pattern.clone())
            .interleaved(true)
            .set_next_token(self.token.take());
        let out = client::send(
            &format!("fetching events of log group {:?}", &*self.src.group),
            || req.clone().send(),
        )
        .await?;
        let mut page: Vec<RawEvent> = out
            .events()
            .iter()
            .map(|e| RawEvent {
                group: self.src.group.clone(),
                stream: e.log_stream_name().unwrap_or_default().to_string(),
                id: e.event_id().unwrap_or_default().to_string(),
                timestamp: e.timestamp().unwrap_or(0),
                ingestion: e.ingestion_time().unwrap_or(0),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect();
        // Stable: events with equal timestamps keep the service's order.
        page.sort_by_key(|e| e.timestamp);
        match out.next_token() {
            Some(t) if !t.is_empty() => self.token = Some(t.to_string()),
            _ => self.done = true,
        }
        Ok(Some(page))
    }
}

/// A source's window cut into time slices, fetched `lanes` at a time, read in order.
///
/// Slices start in order (permits are taken in order from a FIFO semaphore), and the
/// reader drains them in order, so the slice being read always runs: no deadlock, and
/// at most `lanes` slices' worth of pages wait in memory.
struct Ordered {
    slices: mpsc::Receiver<mpsc::Receiver<Result<Vec<RawEvent>>>>,
    current: Option<mpsc::Receiver<Result<Vec<RawEvent>>>>,
}

impl Ordered {
    fn start(
        client: &Client,
        src: &Source,
        w: Window,
        pattern: Option<&str>,
        lanes: usize,
        progress: &Progress,
    ) -> Ordered {
        let cuts = slices(w, lanes * SLICES_PER_LANE);
        let (stx, srx) = mpsc::channel(cuts.len());
        let sem = Arc::new(Semaphore::new(lanes));
        let (client, src, pattern, progress) = (
            client.clone(),
            src.clone(),
            pattern.map(str::to_string),
            progress.clone(),
        );
        tokio::spawn(async move {
            for (s, e) in cuts {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let (tx, rx) = mpsc::channel(2);
                if stx.send(rx).await.is_err() {
                    return;
                }
                let mut pager = Pager::new(&client, &src, s, Some(e), pattern.as_deref());
                let progress = progress.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    loop {
                        match pager.next().await {
                            Ok(Some(page)) => {
                                progress.add(page.len());
                                if tx.send(Ok(page)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => return,
                            Err(err) => {
                                let _ = tx.send(Err(err)).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ordered {
            slices: srx,
            current: None,
        }
    }

    async fn next_page(&mut self) -> Result<Option<Vec<RawEvent>>> {
        loop {
            if self.current.is_none() {
                match self.slices.recv().await {
                    Some(rx) => self.current = Some(rx),
                    None => return Ok(None),
                }
            }
            match self.current.as_mut().expect("set above").recv().await {
                Some(Ok(page)) => return Ok(Some(page)),
                Some(Err(e)) => return Err(e),
                None => self.current = None,
            }
        }
    }
}

/// Cut an inclusive window into about `n` inclusive, disjoint, ordered slices.
fn slices(w: Window, n: usize) -> Vec<(i64, i64)> {
    let span = w.end - w.start + 1;
    let n = (n as i64).min(span / MIN_SLICE_MS).max(1);
    let width = span / n;
    (0..n)
        .map(|i| {
            let s = w.start + i * width;
            let e = if i == n - 1 { w.end } else { s + width - 1 };
            (s, e)
        })
        .collect()
}

/// Events already printed (follow mode), so none prints twice.
///
/// Keyed by content — group, stream, timestamp, message — because live tail events carry no
/// event id, and an event may come by live tail and by a poll (the gap after a session, the
/// switch to polling). Identical events (same stream, millisecond and text) are counted, not
/// merged: each source's count of a key is what it has seen of it, and an event prints
/// when a source has seen more of its key than were printed.
#[derive(Default)]
struct Seen {
    /// Off for a plain fetch: slices are disjoint, nothing can repeat, no need to remember.
    off: bool,
    /// Key → (timestamp, printed).
    printed: HashMap<String, (i64, u32)>,
    /// Key → seen in the current live tail session.
    live: HashMap<String, u32>,
    newest: Option<i64>,
}

impl Seen {
    fn off() -> Seen {
        Seen {
            off: true,
            ..Seen::default()
        }
    }

    fn key(e: &RawEvent) -> String {
        format!("{}\0{}\0{}\0{}", e.group, e.stream, e.timestamp, e.message)
    }

    fn note_newest(&mut self, ts: i64) {
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
    }

    /// The initial window: every event offered is a new one.
    fn first(&mut self, e: &RawEvent) -> bool {
        if self.off {
            return true;
        }
        self.printed
            .entry(Seen::key(e))
            .or_insert((e.timestamp, 0))
            .1 += 1;
        self.note_newest(e.timestamp);
        true
    }

    /// A poll's events (everything from its start on, in time order): those not printed yet.
    fn poll_batch(&mut self, batch: Vec<RawEvent>) -> Vec<RawEvent> {
        let mut in_batch: HashMap<String, u32> = HashMap::new();
        let mut fresh = Vec::new();
        for e in batch {
            let key = Seen::key(&e);
            let n = in_batch.entry(key.clone()).or_insert(0);
            *n += 1;
            let printed = &mut self.printed.entry(key).or_insert((e.timestamp, 0)).1;
            if *n > *printed {
                *printed = *n;
                self.note_newest(e.timestamp);
                fresh.push(e);
            }
        }
        fresh
    }

    /// A live tail event: new unless a poll printed it already.
    fn live(&mut self, e: &RawEvent) -> bool {
        let key = Seen::key(e);
        let n = self.live.entry(key.clone()).or_insert(0);
        *n += 1;
        let printed = &mut self.printed.entry(key).or_insert((e.timestamp, 0)).1;
        if *n > *printed {
            *printed = *n;
            self.note_newest(e.timestamp);
            return true;
        }
        false
    }

    /// A new live tail session delivers only what was ingested after it started.
    fn new_session(&mut self) {
        self.live.clear();
    }

    /// Forget events older than any later poll will ask for.
    fn prune(&mut self, before: i64) {
        self.printed.retain(|_, (ts, _)| *ts >= before);
        let printed = &self.printed;
        self.live.retain(|k, _| printed.contains_key(k));
    }
}

/// Fetch a bounded window from every source and print it merged in time order.
/// Returns the number of events printed.
#[allow(clippy::too_many_arguments)]
async fn print_window(
    client: &Client,
    sources: &[Source],
    w: Window,
    pattern: Option<&str>,
    lanes: usize,
    fmt: &Formatter,
    out: &mut Out,
    seen: &mut Seen,
) -> Result<u64> {
    let mut readers: Vec<Ordered> = sources
        .iter()
        .map(|s| Ordered::start(client, s, w, pattern, lanes, out.progress()))
        .collect();
    let mut heads: Vec<VecDeque<RawEvent>> = vec![VecDeque::new(); readers.len()];
    let mut exhausted = vec![false; readers.len()];
    let mut buf = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut printed = 0u64;
    loop {
        for i in 0..readers.len() {
            while heads[i].is_empty() && !exhausted[i] {
                // About to wait on the network: show what is ready first.
                out.write(&buf)?;
                buf.clear();
                match readers[i].next_page().await? {
                    Some(page) => heads[i] = page.into(),
                    None => exhausted[i] = true,
                }
            }
        }
        // The next event in time order across sources (ties: the first source).
        let Some(i) = (0..heads.len())
            .filter(|&i| !heads[i].is_empty())
            .min_by_key(|&i| heads[i][0].timestamp)
        else {
            break;
        };
        // Take every event of source i up to the next source's head in one go.
        let limit = (0..heads.len())
            .filter(|&j| j != i && !heads[j].is_empty())
            .map(|j| heads[j][0].timestamp)
            .min();
        while let Some(e) = heads[i].front() {
            if limit.is_some_and(|l| e.timestamp > l) {
                break;
            }
            let e = heads[i].pop_front().expect("front exists");
            if seen.first(&e) {
                fmt.write(&e, &mut buf)?;
                printed += 1;
            }
            if buf.len() >= FLUSH_BYTES {
                out.write(&buf)?;
                buf.clear();
            }
        }
    }
    out.write(&buf)?;
    Ok(printed)
}

/// What each follow-mode poll asks for.
struct Poll<'a> {
    since: i64,
    /// Each poll re-reads this far behind the newest event seen, to catch events that
    /// reach CloudWatch late; the id set keeps them from printing twice.
    lookback_ms: i64,
    task: Option<&'a str>,
    max_streams: usize,
    pattern: Option<&'a str>,
}

/// Follow until interrupted (or until the watched task stops), printing each event once:
/// by live tail while it is allowed and complete, else by polling.
#[allow(clippy::too_many_arguments)]
async fn follow(
    client: &Client,
    resolved: &[groups::Group],
    poll: &Poll<'_>,
    fmt: &Formatter,
    out: &mut Out,
    mut seen: Seen,
    watch: Option<task::Watch>,
    mut live: Option<live::Target>,
) -> Result<()> {
    let mut newest = seen.newest.unwrap_or(time::now_ms());
    let task_id = watch.as_ref().map(|w| w.task().to_string());
    let mut stopped = watch.map(task::Watch::spawn);
    let mut f = Follower {
        client,
        resolved,
        poll,
        fmt,
        out,
        seen: &mut seen,
        newest: &mut newest,
    };
    // After sampling, live tail is tried again a minute later (the burst may be over), and
    // the notice is said at most once a minute.
    let minute = sampling_period();
    let mut sampled_live: Option<live::Target> = None;
    let mut retry_live_at = None;
    let mut last_notice: Option<std::time::Instant> = None;
    let reason = loop {
        if retry_live_at.is_some_and(|t| std::time::Instant::now() >= t) {
            live = sampled_live.take();
            retry_live_at = None;
        }
        if let Some(target) = live.as_ref() {
            match f.live(target, &mut stopped).await? {
                LiveEnd::Stopped(reason) => break reason,
                LiveEnd::Sampled => {
                    if last_notice.is_none_or(|t| t.elapsed() >= minute) {
                        f.say(
                            "cwlogs: CloudWatch is sampling this live tail (over 500 events/s); \
                             switching to complete polling",
                        );
                        last_notice = Some(std::time::Instant::now());
                    }
                    sampled_live = live.take();
                    retry_live_at = Some(std::time::Instant::now() + minute);
                }
                LiveEnd::Denied(why) => {
                    f.say(&format!(
                        "cwlogs: live tail is not allowed for these credentials ({why}); \
                         polling instead (logs:StartLiveTail grants it)"
                    ));
                    live = None;
                }
                LiveEnd::Unavailable => live = None,
            }
            continue;
        }
        let pause = tokio::time::sleep(POLL_EVERY);
        let reason = match stopped.as_mut() {
            None => {
                pause.await;
                None
            }
            Some(rx) => tokio::select! {
                _ = pause => None,
                r = rx => match r {
                    Ok(reason) => Some(reason),
                    // The watcher gave up (it said why): follow on until Ctrl-C.
                    Err(_) => {
                        stopped = None;
                        continue;
                    }
                },
            },
        };
        f.poll_once().await?;
        if let Some(reason) = reason {
            break reason;
        }
    };
    // One more poll: it reads back --lookback, which brings the task's last events.
    f.poll_once().await?;
    f.say(&format!(
        "cwlogs: task {} stopped ({reason}); exiting",
        task_id.as_deref().unwrap_or_default()
    ));
    Ok(())
}

/// A minute: how long polling lasts after live tail was sampled, and how often that is said.
/// CWLOGS_SAMPLING_PERIOD (undocumented) shortens it for tests.
fn sampling_period() -> Duration {
    std::env::var("CWLOGS_SAMPLING_PERIOD")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(60))
}

/// How a run of live tail sessions ended.
enum LiveEnd {
    Stopped(String),
    Sampled,
    Denied(String),
    Unavailable,
}

/// What following needs, in one place.
struct Follower<'a, 'p> {
    client: &'a Client,
    resolved: &'a [groups::Group],
    poll: &'a Poll<'p>,
    fmt: &'a Formatter,
    out: &'a mut Out,
    seen: &'a mut Seen,
    newest: &'a mut i64,
}

impl Follower<'_, '_> {
    fn say(&self, line: &str) {
        crate::output::erase_progress();
        eprintln!("{line}");
    }

    /// Live tail sessions, one after another, until one cannot start, samples, or the task
    /// stops. Each session starts with a poll of the gap since the last event seen.
    async fn live(
        &mut self,
        target: &live::Target,
        stopped: &mut Option<tokio::sync::oneshot::Receiver<String>>,
    ) -> Result<LiveEnd> {
        let mut sessions = 0u32;
        loop {
            let session = match live::start(self.client, target).await {
                Ok(s) => s,
                Err(live::Refused::Denied(why)) => return Ok(LiveEnd::Denied(why)),
                // A session that ran before may fail to restart for a moment; polling
                // carries on without loss either way.
                Err(live::Refused::Unavailable) => return Ok(LiveEnd::Unavailable),
            };
            sessions += 1;
            self.seen.new_session();
            // Events between the last one seen and the session's start (the window's end,
            // or the previous session's): the session will not bring them.
            let (mut updates, reader) = session.spawn_reader(target.clone());
            // The reader stops when we leave, whichever way.
            struct Abort(tokio::task::JoinHandle<()>);
            impl Drop for Abort {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let _reader = Abort(reader);
            self.poll_once().await?;
            loop {
                let next = match stopped.as_mut() {
                    None => updates.recv().await,
                    Some(rx) => tokio::select! {
                        u = updates.recv() => u,
                        r = rx => match r {
                            Ok(reason) => return Ok(LiveEnd::Stopped(reason)),
                            Err(_) => {
                                *stopped = None;
                                continue;
                            }
                        },
                    },
                };
                let update = next.unwrap_or(Ok(live::Update::Ended))?;
                match update {
                    live::Update::Events(events) => {
                        let mut buf = Vec::new();
                        for e in &events {
                            if self.seen.live(e) {
                                self.fmt.write(e, &mut buf)?;
                            }
                        }
                        self.out.write(&buf)?;
                        *self.newest = (*self.newest).max(self.seen.newest.unwrap_or(0));
                        let now = time::now_ms();
                        self.seen.prune(
                            self.poll
                                .since
                                .max((*self.newest).min(now) - self.poll.lookback_ms),
                        );
                    }
                    // Switch to polling from the last event seen: the sampled update's own
                    // events come from the polls.
                    live::Update::Sampled => {
                        self.poll_once().await?;
                        return Ok(LiveEnd::Sampled);
                    }
                    live::Update::Ended => break,
                }
            }
            // Guards against an endpoint that ends every session at once.
            if sessions > 3 && sessions.is_power_of_two() {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }

    /// One poll: everything from the lookback on, new events printed.
    async fn poll_once(&mut self) -> Result<()> {
        let (client, poll) = (self.client, self.poll);
        let now = time::now_ms();
        let from = poll.since.max((*self.newest).min(now) - poll.lookback_ms);
        let w = Window {
            start: from,
            end: now,
        };
        let mut batch = Vec::new();
        for g in self.resolved {
            for src in sources_for(client, &g.name, poll.task, w, poll.max_streams, true).await? {
                let mut pager = Pager::new(client, &src, from, None, poll.pattern);
                while let Some(page) = pager.next().await? {
                    batch.extend(page);
                }
            }
        }
        batch.sort_by_key(|e| e.timestamp);
        let mut buf = Vec::new();
        for e in &self.seen.poll_batch(batch) {
            self.fmt.write(e, &mut buf)?;
        }
        self.out.write(&buf)?;
        *self.newest = (*self.newest).max(self.seen.newest.unwrap_or(*self.newest));
        self.seen.prune(from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_window_exactly_once() {
        let w = Window {
            start: 1_000,
            end: 3_600_000,
        };
        for n in [1, 2, 7, 8, 100] {
            let s = slices(w, n);
            assert_eq!(s[0].0, w.start);
            assert_eq!(s.last().unwrap().1, w.end);
            for pair in s.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "{s:?}");
            }
            assert!(s.iter().all(|(a, b)| a <= b));
        }
        // Short windows are never cut.
        assert_eq!(
            slices(
                Window {
                    start: 0,
                    end: 30_000
                },
                8
            ),
            vec![(0, 30_000)]
        );
    }

    #[test]
    fn seen_dedups_and_prunes() {
        let ev = |id: &str, ts| RawEvent {
            group: "g".into(),
            stream: "s".into(),
            id: id.into(),
            timestamp: ts,
            ingestion: ts,
            message: id.into(),
        };
        let mut s = Seen::default();
        // The window: a, and b twice (same stream, millisecond and text: two events).
        for e in [ev("a", 10), ev("b", 20), ev("b", 20)] {
            assert!(s.first(&e));
        }
        assert_eq!(s.newest, Some(20));
        // A poll re-reading all of it, and one new c, prints only c.
        let fresh = s.poll_batch(vec![ev("a", 10), ev("b", 20), ev("b", 20), ev("c", 30)]);
        assert_eq!(
            fresh.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        // A live session brings c (printed by the poll) and a third b (new).
        s.new_session();
        assert!(!s.live(&ev("c", 30)));
        assert!(!s.live(&ev("b", 20)));
        assert!(!s.live(&ev("b", 20)));
        assert!(s.live(&ev("b", 20)));
        assert!(s.live(&ev("d", 40)));
        // A poll after the switch: nothing new.
        let all = vec![
            ev("b", 20),
            ev("b", 20),
            ev("b", 20),
            ev("c", 30),
            ev("d", 40),
        ];
        assert!(s.poll_batch(all).is_empty());
        s.prune(15);
        assert!(s.first(&ev("a", 10)));
    }
}
