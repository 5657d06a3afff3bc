//! `fetch -f --until-task-stops`: which ECS task a `--task` prefix names, and when it stops.
//!
//! `aws logs tail --follow` never ends after the task it follows is gone; here ECS
//! DescribeTasks is asked every few seconds, and following ends when the task is STOPPED.
//! These calls go to ECS, not CloudWatch Logs, so they do not take from the logs budget.

use std::time::Duration;

use anyhow::Result;
use aws_sdk_ecs::Client;
use tokio::sync::oneshot;

use crate::client::explain;

/// Clusters looked through to find a task when `--cluster` is not given.
const MAX_CLUSTERS_SEARCHED: usize = 20;
/// ECS calls that take longer than this count as failed.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// Consecutive failed checks after which cwlogs stops watching (and says so).
const MAX_FAILED_CHECKS: u32 = 6;

/// The ECS task ID at the end of a stream name (`ecs/app/0f5c…` or the bare ID): 32 hex
/// digits (current task ARNs) or a UUID (old ones).
pub fn task_id(stream: &str) -> Option<&str> {
    let last = stream.rsplit('/').next()?;
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_uuid = {
        let parts: Vec<&str> = last.split('-').collect();
        parts.len() == 5
            && parts
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(p, n)| p.len() == n && hex(p))
    };
    ((last.len() == 32 && hex(last)) || is_uuid).then_some(last)
}

/// The one task `prefix` names: a whole task ID itself, or the only task among the streams
/// it matched. `None` when it names none or several.
pub fn named_task(prefix: &str, streams: &[String]) -> Option<String> {
    if let Some(id) = task_id(prefix) {
        return Some(id.to_string());
    }
    let mut ids = streams.iter().map(|s| task_id(s));
    let first = ids.next()??;
    ids.all(|id| id == Some(first)).then(|| first.to_string())
}

/// A task being watched.
pub struct Watch {
    client: Client,
    cluster: String,
    task: String,
    every: Duration,
}

impl Watch {
    /// Find `task` in `cluster` (or, without one, in the account's clusters). `required`:
    /// `--until-task-stops` was asked for, so not finding it is an error; otherwise (the
    /// automatic case) there is simply nothing to watch.
    pub async fn find(
        conf: &aws_config::SdkConfig,
        cluster: Option<&str>,
        task: &str,
        every: Duration,
        required: bool,
    ) -> Result<Option<Watch>> {
        let client = Client::new(conf);
        let found = match cluster {
            Some(c) => match status(&client, c, task).await {
                Ok(Some(_)) => Ok(Some(c.to_string())),
                Ok(None) => Err(daemon_kit::config_error(format!(
                    "ECS task {task} is not in cluster {c:?}: check --cluster and --task \
                     (ECS forgets tasks about an hour after they stop)"
                ))),
                Err(e) => Err(e),
            },
            None => search(&client, task).await,
        };
        let cluster = match found {
            Ok(Some(c)) => c,
            Ok(None) if required => {
                return Err(daemon_kit::config_error(format!(
                    "no ECS cluster of this account and region has task {task} (looked at up to \
                     {MAX_CLUSTERS_SEARCHED}): pass --cluster, or check --task and --region"
                )))
            }
            Err(e) if required => return Err(e),
            _ => return Ok(None),
        };
        Ok(Some(Watch {
            client,
            cluster,
            task: task.to_string(),
            every,
        }))
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    /// Check now and every period; the receiver gets why the task stopped. It is dropped
    /// without a word sent when checks keep failing (a notice says so).
    pub fn spawn(self) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failures = 0;
            loop {
                tick.tick().await;
                let check = status(&self.client, &self.cluster, &self.task);
                let checked = tokio::time::timeout(ANSWER_WITHIN, check)
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30s")));
                match checked {
                    Ok(Some(Status::Stopped(reason))) => {
                        let _ = tx.send(reason);
                        return;
                    }
                    // ECS forgets a task about an hour after it stopped.
                    Ok(None) => {
                        let _ = tx.send("no longer known to ECS".into());
                        return;
                    }
                    Ok(Some(Status::Running)) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        if failures >= MAX_FAILED_CHECKS {
                            crate::output::erase_progress();
                            eprintln!(
                                "cwlogs: cannot check whether ECS task {} has stopped ({e:#}); \
                                 following on until Ctrl-C",
                                self.task
                            );
                            return;
                        }
                    }
                }
            }
        });
        rx
    }
}

enum Status {
    Running,
    Stopped(String),
}

/// The task's state in `cluster`; `None` if the cluster does not have it.
async fn status(client: &Client, cluster: &str, task: &str) -> Result<Option<Status>> {
    let out = client
        .describe_tasks()
        .cluster(cluster)
        .tasks(task)
        .send()
        .await
        .map_err(|e| {
            ecs_error(
                &format!("asking ECS about task {task} in cluster {cluster:?}"),
                cluster,
                e,
            )
        })?;
    let Some(t) = out.tasks().iter().find(|t| {
        t.task_arn()
            .is_some_and(|a| a.rsplit('/').next() == Some(task))
    }) else {
        return Ok(None);
    };
    if t.last_status() != Some("STOPPED") {
        return Ok(Some(Status::Running));
    }
    let reason = t
        .stopped_reason()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| t.stop_code().map(|c| c.as_str().to_string()))
        .unwrap_or_else(|| "no reason given".into());
    Ok(Some(Status::Stopped(reason)))
}

/// An ECS error in words: its permissions and its cluster are the operator's to fix (exit 2).
fn ecs_error<E, R>(
    what: &str,
    cluster: &str,
    err: aws_sdk_ecs::error::SdkError<E, R>,
) -> anyhow::Error
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_ecs::error::ProvideErrorMetadata;
    match err.code() {
        Some("AccessDeniedException") => daemon_kit::config_error(format!(
            "access denied while {what}: --until-task-stops needs ecs:DescribeTasks (and \
             ecs:ListClusters without --cluster); ask for them, or follow without it"
        )),
        Some("ClusterNotFoundException") => daemon_kit::config_error(format!(
            "ECS has no cluster {cluster:?} in this account and region: check --cluster and \
             --region"
        )),
        _ => explain(what, err),
    }
}

/// The cluster that has `task`, looking through the account's clusters.
async fn search(client: &Client, task: &str) -> Result<Option<String>> {
    let out = client
        .list_clusters()
        .max_results(MAX_CLUSTERS_SEARCHED as i32)
        .send()
        .await
        .map_err(|e| ecs_error("listing the ECS clusters (to find the task's)", "", e))?;
    for arn in out.cluster_arns() {
        let name = arn.rsplit('/').next().unwrap_or(arn);
        if status(client, name, task).await?.is_some() {
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_in_stream_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(task_id(id), Some(id));
        assert_eq!(task_id(&format!("ecs/app/{id}")), Some(id));
        let uuid = "0f5c3b2a-1d2e-4f60-8a9b-0c1d2e3f4a5b";
        assert_eq!(task_id(uuid), Some(uuid));
        assert_eq!(task_id("web-1"), None);
        assert_eq!(task_id("0f5c3b2a"), None);
    }

    #[test]
    fn a_prefix_names_one_task_or_none() {
        let a = "ecs/app/0123456789abcdef0123456789abcdef".to_string();
        let a2 = "ecs/sidecar/0123456789abcdef0123456789abcdef".to_string();
        let b = "ecs/app/fedcba9876543210fedcba9876543210".to_string();
        assert_eq!(
            named_task("ecs/", &[a.clone(), a2.clone()]).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(named_task("ecs/", &[a.clone(), b]), None);
        assert_eq!(named_task("web", &["web-1".into()]), None);
        assert_eq!(named_task("x", &[]), None);
        // A whole ID names its task even before any stream has shown up.
        assert_eq!(
            named_task("0123456789abcdef0123456789abcdef", &[]).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }
}
