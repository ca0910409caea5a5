//! A container's figures as containerd takes them, and its OOM kills as
//! containerd hears of them.
//!
//! `Stats` answers `io.containerd.cgroups.v2.Metrics` in a protobuf `Any`
//! whose type URL is the message's full name, as runc's shim sends it
//! (containerd's `typeurl` finds the type by that name: `ctr task
//! metrics` decodes it), filled from the agent's figures as containerd's
//! own cgroup v2 reader fills it: `max` as `u64::MAX`, a missing file as
//! 0 ([`metrics`]).
//!
//! `TaskOOM` is published when the container's `memory.events` counts
//! another OOM kill ([`OomWatch`]): looked for every second while the
//! container runs, and once more at its end, from the figures its daemon
//! read before the VM went down, before `TaskExit` is published.

use std::sync::Arc;
use std::time::Duration;

use agent_proto::ContainerStats;
use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use host_shim::runtime::{PodMember, Runtime, RuntimeError};
use host_shim::Client;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

/// The type URL of the metrics, as runc's shim writes it and containerd's
/// `typeurl` reads it (the message's full name, no `type.googleapis.com/`).
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// How often the OOM watch asks for the container's figures.
const OOM_POLL: Duration = Duration::from_secs(1);

/// The agent's figures as containerd's cgroup v2 metrics.
pub fn metrics(stats: &ContainerStats) -> Metrics {
    let mut metrics = Metrics::new();
    if let Some(pids) = &stats.pids {
        metrics.pids = MessageField::some(PidsStat {
            current: pids.current,
            limit: pids.max.unwrap_or(u64::MAX),
            ..Default::default()
        });
    }
    if let Some(cpu) = &stats.cpu {
        metrics.cpu = MessageField::some(CPUStat {
            usage_usec: cpu.usage_usec,
            user_usec: cpu.user_usec,
            system_usec: cpu.system_usec,
            nr_periods: cpu.nr_periods,
            nr_throttled: cpu.nr_throttled,
            throttled_usec: cpu.throttled_usec,
            nr_bursts: cpu.nr_bursts,
            burst_usec: cpu.burst_usec,
            ..Default::default()
        });
    }
    if let Some(memory) = &stats.memory {
        let stat = |key: &str| memory.stat.get(key).copied().unwrap_or(0);
        // Linux 5.9 split the working set's counts into anon and file.
        let workingset = |key: &str| match memory.stat.get(key) {
            Some(value) => *value,
            None => stat(&format!("{key}_anon")).saturating_add(stat(&format!("{key}_file"))),
        };
        metrics.memory = MessageField::some(MemoryStat {
            anon: stat("anon"),
            file: stat("file"),
            kernel_stack: stat("kernel_stack"),
            slab: stat("slab"),
            sock: stat("sock"),
            shmem: stat("shmem"),
            file_mapped: stat("file_mapped"),
            file_dirty: stat("file_dirty"),
            file_writeback: stat("file_writeback"),
            anon_thp: stat("anon_thp"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            slab_reclaimable: stat("slab_reclaimable"),
            slab_unreclaimable: stat("slab_unreclaimable"),
            pgfault: stat("pgfault"),
            pgmajfault: stat("pgmajfault"),
            workingset_refault: workingset("workingset_refault"),
            workingset_activate: workingset("workingset_activate"),
            workingset_nodereclaim: stat("workingset_nodereclaim"),
            pgrefill: stat("pgrefill"),
            pgscan: stat("pgscan"),
            pgsteal: stat("pgsteal"),
            pgactivate: stat("pgactivate"),
            pgdeactivate: stat("pgdeactivate"),
            pglazyfree: stat("pglazyfree"),
            pglazyfreed: stat("pglazyfreed"),
            thp_fault_alloc: stat("thp_fault_alloc"),
            thp_collapse_alloc: stat("thp_collapse_alloc"),
            usage: memory.current,
            usage_limit: memory.max.unwrap_or(u64::MAX),
            swap_usage: memory.swap_current.unwrap_or(0),
            // `max` where there is swap accounting, nothing where there
            // is none.
            swap_limit: match (memory.swap_max, memory.swap_current) {
                (Some(max), _) => max,
                (None, Some(_)) => u64::MAX,
                (None, None) => 0,
            },
            max_usage: memory.peak.unwrap_or(0),
            ..Default::default()
        });
    }
    if let Some(events) = &stats.memory_events {
        metrics.memory_events = MessageField::some(MemoryEvents {
            low: events.low,
            high: events.high,
            max: events.max,
            oom: events.oom,
            oom_kill: events.oom_kill,
            oom_group_kill: events.oom_group_kill,
            ..Default::default()
        });
    }
    let usage = stats
        .io
        .iter()
        .map(|device| IOEntry {
            major: device.major,
            minor: device.minor,
            rbytes: device.rbytes,
            wbytes: device.wbytes,
            rios: device.rios,
            wios: device.wios,
            ..Default::default()
        })
        .collect();
    metrics.io = MessageField::some(IOStat {
        usage,
        ..Default::default()
    });
    metrics
}

/// The metrics as `Stats` answers them: encoded in an `Any` under
/// [`METRICS_TYPE_URL`].
pub fn metrics_any(stats: &ContainerStats) -> Result<Any, String> {
    let value = metrics(stats)
        .write_to_bytes()
        .map_err(|e| format!("encode the metrics: {e}"))?;
    Ok(Any {
        type_url: METRICS_TYPE_URL.to_owned(),
        value,
        ..Default::default()
    })
}

/// Where a container's figures come from: the runtime, for a container
/// that is a VM of its own (a pod's sandbox too); the VM's agent, for a
/// pod's other containers.
#[derive(Clone)]
pub struct Source {
    runtime: Runtime,
    id: String,
    member: Option<Arc<PodMember>>,
    /// A session with the agent of the container's own VM, kept between
    /// looks (the OOM watch asks every second).
    session: Arc<Mutex<Option<Client>>>,
}

impl Source {
    /// Container `id` of `runtime`, or pod member `member`.
    pub fn new(runtime: Runtime, id: &str, member: Option<Arc<PodMember>>) -> Source {
        Source {
            runtime,
            id: id.to_owned(),
            member,
            session: Arc::new(Mutex::new(None)),
        }
    }

    /// The container's figures now (a stopped one's as it ended).
    pub async fn stats(&self) -> Result<ContainerStats, RuntimeError> {
        if let Some(member) = &self.member {
            return member.stats().await;
        }
        let mut session = self.session.lock().await;
        if session.is_none() {
            if let Ok(agent) = self.runtime.agent(&self.id).await {
                *session = Client::connect(agent).await.ok();
            }
        }
        if let Some(client) = session.as_ref() {
            if let Ok(stats) = client.container_stats(&self.id).await {
                return Ok(stats);
            }
            // The VM, or the container in it, is gone: the runtime says
            // what is left (a stopped container's last figures).
            if let Some(client) = session.take() {
                client.close().await;
            }
        }
        self.runtime.stats(&self.id).await
    }
}

/// Where a container's OOM kills are told.
#[derive(Clone)]
pub struct OomSink {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl OomSink {
    /// containerd's event service, and the namespace the container is in.
    pub fn new(publisher: &Arc<RemotePublisher>, namespace: &str) -> OomSink {
        OomSink {
            publisher: publisher.clone(),
            namespace: namespace.to_owned(),
        }
    }
}

/// The watch on one container's OOM kills: [`OomWatch::start`] with the
/// container, [`OomWatch::finish`] at its end.
pub struct OomWatch {
    state: Arc<Watched>,
    stop: oneshot::Sender<()>,
    poll: JoinHandle<()>,
}

/// What the poll and the last look share.
struct Watched {
    source: Source,
    sink: OomSink,
    /// The OOM kills told so far.
    told: Mutex<u64>,
}

impl Watched {
    /// Asks for the container's figures and tells of each OOM kill not
    /// told yet (containerd's runc shim publishes one `TaskOOM` per
    /// event). Figures that cannot be had are skipped: the next look
    /// sees the count.
    async fn look(&self) {
        let mut told = self.told.lock().await;
        let kills = match self.source.stats().await {
            Ok(stats) => stats.oom_kills(),
            Err(e) => {
                log::debug!("OOM watch of {}: {e}", self.source.id);
                return;
            }
        };
        while *told < kills {
            *told += 1;
            let event = TaskOOM {
                container_id: self.source.id.clone(),
                ..Default::default()
            };
            let published = self
                .sink
                .publisher
                .publish(
                    Context::default(),
                    TASK_OOM_EVENT_TOPIC,
                    &self.sink.namespace,
                    Box::new(event),
                )
                .await;
            if let Err(e) = published {
                log::error!("publishing {TASK_OOM_EVENT_TOPIC}: {e}");
            }
        }
    }
}

impl OomWatch {
    /// Starts looking at a started container's OOM kills every second.
    pub fn start(source: Source, sink: OomSink) -> OomWatch {
        let state = Arc::new(Watched {
            source,
            sink,
            told: Mutex::new(0),
        });
        let (stop, mut stopped) = oneshot::channel();
        let watched = state.clone();
        let poll = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(OOM_POLL) => watched.look().await,
                }
            }
        });
        OomWatch { state, stop, poll }
    }

    /// At the container's end, before its `TaskExit`: stops the poll and
    /// looks once more (the figures its daemon read as it ended), so that
    /// an OOM kill that ended it is told first, as runc's shim tells it.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.poll.await;
        self.state.look().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{CpuStat, IoStat, MemoryEvents as AgentEvents, MemoryStat as AgentMemory, PidsStat as AgentPids};
    use containerd_shim::protos::protobuf::MessageFull;

    /// What the agent reported for a busybox shell with a 64 MiB memory
    /// limit and a pids limit of 50 (memory.stat cut short).
    fn guest_container() -> ContainerStats {
        let stat = [
            ("anon", 118784),
            ("file", 1679360),
            ("kernel_stack", 16384),
            ("slab", 87368),
            ("file_mapped", 1499136),
            ("active_file", 1499136),
            ("workingset_refault_anon", 3),
            ("workingset_refault_file", 4),
            ("pgfault", 1058),
            ("pgmajfault", 15),
        ];
        ContainerStats {
            cpu: Some(CpuStat {
                usage_usec: 88009,
                user_usec: 15305,
                system_usec: 72703,
                ..Default::default()
            }),
            memory: Some(AgentMemory {
                current: 2105344,
                max: Some(64 << 20),
                peak: Some(2207744),
                stat: stat.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                ..Default::default()
            }),
            memory_events: Some(AgentEvents {
                max: 12,
                oom: 1,
                oom_kill: 1,
                ..Default::default()
            }),
            pids: Some(AgentPids {
                current: 2,
                max: Some(50),
            }),
            io: vec![IoStat {
                major: 254,
                minor: 0,
                rbytes: 1679360,
                rios: 20,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_agent_s_figures_as_containerd_s_metrics() {
        let m = metrics(&guest_container());
        assert_eq!((m.pids.current, m.pids.limit), (2, 50));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (88009, 15305, 72703)
        );
        let memory = &m.memory;
        assert_eq!(
            (memory.usage, memory.usage_limit, memory.max_usage),
            (2105344, 64 << 20, 2207744)
        );
        // No swap accounting in the guest: no swap figures, as containerd
        // reads the files that are not there.
        assert_eq!((memory.swap_usage, memory.swap_limit), (0, 0));
        assert_eq!(
            (memory.anon, memory.file, memory.kernel_stack, memory.slab),
            (118784, 1679360, 16384, 87368)
        );
        assert_eq!((memory.file_mapped, memory.active_file), (1499136, 1499136));
        assert_eq!(
            (memory.pgfault, memory.pgmajfault, memory.workingset_refault),
            (1058, 15, 7)
        );
        assert_eq!(
            (m.memory_events.max, m.memory_events.oom, m.memory_events.oom_kill),
            (12, 1, 1)
        );
        assert_eq!(m.io.usage.len(), 1);
        let io = &m.io.usage[0];
        assert_eq!(
            (io.major, io.minor, io.rbytes, io.rios, io.wbytes),
            (254, 0, 1679360, 20, 0)
        );
    }

    #[test]
    fn no_limit_is_max_and_a_missing_part_is_left_out() {
        let stats = ContainerStats {
            memory: Some(AgentMemory {
                current: 4096,
                swap_current: Some(0),
                ..Default::default()
            }),
            pids: Some(AgentPids { current: 1, max: None }),
            ..Default::default()
        };
        let m = metrics(&stats);
        assert_eq!(m.pids.limit, u64::MAX);
        assert_eq!((m.memory.usage_limit, m.memory.swap_limit), (u64::MAX, u64::MAX));
        assert!(m.cpu.is_none() && m.memory_events.is_none());
        assert!(m.io.usage.is_empty());
    }

    #[test]
    fn the_any_is_what_runc_s_shim_sends() {
        let any = metrics_any(&guest_container()).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        // The type URL is the message's own full name, which containerd
        // looks the type up by.
        assert_eq!(
            Metrics::descriptor().full_name(),
            any.type_url,
            "the metrics' protobuf name"
        );
        let decoded = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(decoded, metrics(&guest_container()));
        assert_eq!(decoded.memory.usage_limit, 64 << 20);
    }
}
