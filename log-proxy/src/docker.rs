//! Container metadata from the Docker Engine API (bollard), off the hot path.
//!
//! The processor asks for a container reference (the syslog tag: short ID, full ID or name)
//! and carries on with other containers; answers come back on a channel. A watcher on Docker's
//! event stream warms the cache on `start` (before the container's first line, usually) and
//! reports `destroy`. Docker being down, slow or ignorant of the container is an answer too
//! ([`Answer::Failed`]): the line is forwarded with what the tag says, never held forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use crossbeam_channel::Sender;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::limiter::Limit;

/// Label overriding a container's rate limit: `BURST/INTERVAL` or `0`.
pub const LIMIT_LABEL: &str = "log-proxy.rate-limit";
/// Label holding the tag template (Docker's own tag must stay the container ID).
pub const TAG_LABEL: &str = "tag";
/// ECS agent label with the task ARN.
pub const TASK_LABEL: &str = "com.amazonaws.ecs.task-arn";

/// What the proxy knows about one container.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub id_full: String,
    /// Name without the leading `/`.
    pub name: String,
    /// `Config.Image`, as given at create.
    pub image_name: String,
    /// Image ID without `sha256:`.
    pub image_id: String,
    /// The rendered `tag` label, when the container has one.
    pub tag: Option<String>,
    pub task_arn: Option<String>,
    /// From the `log-proxy.rate-limit` label; `Err` keeps the bad value for the warning.
    pub limit: Option<Result<Limit, String>>,
    /// Every label, for the policy's `match.label` (see [`crate::policy`]).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Meta {
    pub fn id12(&self) -> &str {
        &self.id_full[..self.id_full.len().min(12)]
    }

    /// The part of the ECS task ARN after the last `/`.
    pub fn task_uuid(&self) -> Option<&str> {
        self.task_arn
            .as_deref()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
    }
}

/// An answer from the Docker side.
#[derive(Debug)]
pub enum Answer {
    /// `reference` resolved (also sent unasked when a container starts, keyed by its short ID).
    Found { reference: String, meta: Arc<Meta> },
    /// `reference` could not be resolved; `reason` is for the operator.
    Failed { reference: String, reason: String },
    /// A container was destroyed.
    Destroyed { id_full: String },
}

/// Handle for asking lookups; cheap to clone.
#[derive(Clone)]
pub struct Lookups {
    tx: mpsc::UnboundedSender<String>,
}

impl Lookups {
    /// Ask for `reference`; the answer arrives on the processor's channel.
    pub fn request(&self, reference: String) {
        let _ = self.tx.send(reference);
    }
}

/// `--docker-host none`: no Docker on this host (only local syslog clients): tags are not
/// looked up, so no line waits for an answer.
pub const NO_DOCKER: &str = "none";

/// How long one inspect may take before the line goes out without metadata.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Start the Docker side on the current tokio runtime.
pub fn start(docker_host: String, answers: Sender<Answer>) -> Lookups {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let client = Arc::new(tokio::sync::RwLock::new(None::<Docker>));
    // Watch events (and keep trying to connect while Docker is down).
    tokio::spawn(watch_events(
        docker_host.clone(),
        client.clone(),
        answers.clone(),
    ));
    tokio::spawn(async move {
        while let Some(reference) = rx.recv().await {
            let client = client.clone();
            let answers = answers.clone();
            let host = docker_host.clone();
            tokio::spawn(async move {
                let answer =
                    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(&host, &client, &reference))
                        .await
                    {
                        Ok(Ok(meta)) => Answer::Found {
                            reference,
                            meta: Arc::new(meta),
                        },
                        Ok(Err(reason)) => Answer::Failed { reference, reason },
                        Err(_) => Answer::Failed {
                            reason: format!(
                                "Docker at {host} did not answer within {LOOKUP_TIMEOUT:?}"
                            ),
                            reference,
                        },
                    };
                let _ = answers.send(answer);
            });
        }
    });
    Lookups { tx }
}

/// The running containers' metadata (for `log-proxy check-config`), each inspected.
pub async fn running(host: &str) -> Result<Vec<Meta>, String> {
    let d = tokio::time::timeout(LOOKUP_TIMEOUT, connect(host))
        .await
        .map_err(|_| format!("no answer within {LOOKUP_TIMEOUT:?}"))??;
    let list = d
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut out = Vec::new();
    for c in list {
        let Some(id) = c.id else { continue };
        if let Ok(info) = d
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            out.push(meta_from(info));
        }
    }
    Ok(out)
}

async fn connected(
    host: &str,
    client: &tokio::sync::RwLock<Option<Docker>>,
) -> Result<Docker, String> {
    if let Some(d) = client.read().await.as_ref() {
        return Ok(d.clone());
    }
    let d = connect(host).await?;
    *client.write().await = Some(d.clone());
    Ok(d)
}

/// Connect and negotiate the API version (Docker 20.10 speaks ≤ 1.41; bollard's default is
/// newer and would get HTTP 400 on every call).
async fn connect(host: &str) -> Result<Docker, String> {
    let d = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 5, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, 5, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with('/') {
        Docker::connect_with_unix(host, 5, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(format!(
            "--docker-host {host:?} is not unix:///path, tcp://host:port or http://host:port"
        ));
    };
    let d = d.map_err(|e| format!("cannot reach Docker at {host}: {e}"))?;
    d.negotiate_version()
        .await
        .map_err(|e| format!("cannot reach Docker at {host}: {e}"))
}

async fn lookup(
    host: &str,
    client: &tokio::sync::RwLock<Option<Docker>>,
    reference: &str,
) -> Result<Meta, String> {
    let d = connected(host, client).await?;
    match d
        .inspect_container(
            reference,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(info) => Ok(meta_from(info)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(format!("Docker knows no container {reference:?}")),
        Err(e) => {
            // Connection trouble: reconnect on the next lookup.
            *client.write().await = None;
            Err(format!("Docker lookup of {reference:?} failed: {e}"))
        }
    }
}

fn meta_from(info: bollard::models::ContainerInspectResponse) -> Meta {
    let config = info.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let mut m = Meta {
        id_full: info.id.unwrap_or_default(),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image_name: config.image.unwrap_or_default(),
        image_id: info
            .image
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string(),
        tag: None,
        task_arn: labels.get(TASK_LABEL).cloned(),
        limit: labels.get(LIMIT_LABEL).map(|v| v.parse::<Limit>()),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    m.tag = labels.get(TAG_LABEL).map(|t| render_tag(t, &m));
    m
}

/// Render a `tag` template the way Docker's `--log-opt tag` does for its common fields.
pub fn render_tag(template: &str, m: &Meta) -> String {
    let image_id12 = &m.image_id[..m.image_id.len().min(12)];
    let mut out = template.to_string();
    for (k, v) in [
        ("{{.ID}}", m.id12()),
        ("{{.FullID}}", m.id_full.as_str()),
        ("{{.Name}}", m.name.as_str()),
        ("{{.ImageName}}", m.image_name.as_str()),
        ("{{.ImageID}}", image_id12),
        ("{{.ImageFullID}}", m.image_id.as_str()),
        ("{{.DaemonName}}", "docker"),
    ] {
        out = out.replace(k, v);
    }
    out
}

async fn watch_events(
    host: String,
    client: Arc<tokio::sync::RwLock<Option<Docker>>>,
    answers: Sender<Answer>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut unavailable = crate::episode::Episode::default();
    loop {
        let d = match connected(&host, &client).await {
            Ok(d) => d,
            Err(e) => {
                if unavailable.hit() {
                    tracing::warn!(error = %e, "Docker unavailable; lines are forwarded without container metadata until it is back (retrying; logged again when it is)");
                } else {
                    tracing::debug!(error = %e, "Docker still unavailable");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Some(ended) = unavailable.end() {
            tracing::info!(
                attempts = ended.seen,
                "Docker available again (unavailable {ended})"
            );
        }
        backoff = Duration::from_millis(200);
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["start", "destroy"]),
        ]);
        let mut events = d.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { break };
            let Some(id) = ev.actor.and_then(|a| a.id) else {
                continue;
            };
            match ev.action.as_deref() {
                Some("start") => {
                    if let Ok(meta) = lookup(&host, &client, &id).await {
                        let _ = answers.send(Answer::Found {
                            reference: meta.id12().to_string(),
                            meta: Arc::new(meta),
                        });
                    }
                }
                Some("destroy") => {
                    let _ = answers.send(Answer::Destroyed { id_full: id });
                }
                _ => {}
            }
        }
        // The stream ended (Docker restarted): reconnect.
        *client.write().await = None;
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tag_templates() {
        let m = Meta {
            id_full: "0414557846fd0123456789abcdef0123456789abcdef0123456789abcdef0123".into(),
            name: "web".into(),
            image_name: "nginx:1".into(),
            image_id: "ab12cd34ef56ab12cd34ef56".into(),
            ..Default::default()
        };
        assert_eq!(render_tag("{{.Name}}/{{.ID}}", &m), "web/0414557846fd");
        assert_eq!(
            render_tag("{{.ImageName}}-{{.ImageID}}", &m),
            "nginx:1-ab12cd34ef56"
        );
        assert_eq!(render_tag("{{.DaemonName}}", &m), "docker");
        assert_eq!(render_tag("{{.FullID}}", &m).len(), 64);
    }

    #[test]
    fn task_uuid_is_after_last_slash() {
        let m = Meta {
            task_arn: Some("arn:aws:ecs:us-east-1:1:task/prod/abc123".into()),
            ..Default::default()
        };
        assert_eq!(m.task_uuid(), Some("abc123"));
    }
}
