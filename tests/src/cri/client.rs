//! A CRI client as the kubelet is one: the `runtime.v1` runtime and image
//! services (the `k8s-cri` crate's generated clients) over containerd's
//! Unix socket, each call given a deadline so that a hung call fails the
//! caller instead of holding it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerStats, ContainerStatsRequest, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxStatusRequest, PodSandboxStatusResponse, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take; `RunPodSandbox` boots a VM under
/// vminitd (about a second under TCG, more on a loaded machine).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// A CRI call that failed: which, and how (its gRPC status, or the
/// deadline that passed).
#[derive(Debug)]
pub struct CriError {
    /// The call, as the CRI API names it (`RunPodSandbox`).
    pub call: &'static str,
    /// What went wrong.
    pub detail: String,
    /// The gRPC status code, where the service answered.
    pub code: Option<tonic::Code>,
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.detail)
    }
}

impl std::error::Error for CriError {}

/// A blocking CRI client: each call runs on a runtime of its own and
/// returns once the service answers or [`CALL_TIMEOUT`] passes.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI service on the Unix socket `socket`.
    pub fn connect(socket: &Path) -> Result<Cri, CriError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let socket: PathBuf = socket.to_path_buf();
        let connect = async move {
            // The URI is not dialled: every connection is the socket.
            Endpoint::from_static("http://[::]:0")
                .connect_timeout(Duration::from_secs(10))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
                }))
                .await
        };
        let channel = rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, connect).await })
            .map_err(|_| CriError {
                call: "connect",
                detail: format!("no connection after {CALL_TIMEOUT:?}"),
                code: None,
            })?
            .map_err(|e| CriError {
                call: "connect",
                detail: format!("{e:?}"),
                code: None,
            })?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Runs one call of the runtime service with the deadline.
    pub fn call<T, F, Fut>(&self, call: &'static str, f: F) -> Result<T, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.runtime.clone());
        self.finish(call, fut)
    }

    fn finish<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
        {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(CriError {
                call,
                detail: format!("{:?}: {}", status.code(), status.message()),
                code: Some(status.code()),
            }),
            Err(_) => Err(CriError {
                call,
                detail: format!("no answer after {CALL_TIMEOUT:?}"),
                code: None,
            }),
        }
    }

    /// `Version`.
    pub fn version(&self) -> Result<VersionResponse, CriError> {
        self.call(
            "Version",
            |mut c| async move { c.version(VersionRequest::default()).await },
        )
    }

    /// Whether `Status` says the runtime and its network are ready.
    pub fn ready(&self) -> Result<bool, CriError> {
        let status = self.call(
            "Status",
            |mut c| async move { c.status(StatusRequest::default()).await },
        )?;
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        Ok(["RuntimeReady", "NetworkReady"]
            .iter()
            .all(|kind| conditions.iter().any(|c| c.r#type == *kind && c.status)))
    }

    /// Whether the image service has `image` (`ImageStatus`).
    pub fn has_image(&self, image: &str) -> Result<bool, CriError> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let fut = {
            let mut c = self.images.clone();
            async move { c.image_status(request).await }
        };
        Ok(self.finish("ImageStatus", fut)?.image.is_some())
    }

    /// `RunPodSandbox` under the runtime handler `handler`: the pod's id.
    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String, CriError> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_owned(),
        };
        self.call("RunPodSandbox", |mut c| async move { c.run_pod_sandbox(request).await })
            .map(|r| r.pod_sandbox_id)
    }

    /// `CreateContainer` in pod `pod` (whose config was `sandbox`): the
    /// container's id.
    pub fn create_container(
        &self,
        pod: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, CriError> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        self.call(
            "CreateContainer",
            |mut c| async move { c.create_container(request).await },
        )
        .map(|r| r.container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(
            "StartContainer",
            |mut c| async move { c.start_container(request).await },
        )
        .map(|_| ())
    }

    /// `ExecSync` of `cmd` in container `id`, which the service ends after
    /// `timeout_s` seconds.
    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout_s: i64) -> Result<ExecSyncResponse, CriError> {
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|a| (*a).to_owned()).collect(),
            timeout: timeout_s,
        };
        self.call("ExecSync", |mut c| async move { c.exec_sync(request).await })
    }

    /// `ContainerStats` of container `id`.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, CriError> {
        let request = ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        let answer = self.call(
            "ContainerStats",
            |mut c| async move { c.container_stats(request).await },
        )?;
        answer.stats.ok_or_else(|| CriError {
            call: "ContainerStats",
            detail: format!("no stats for {id}"),
            code: None,
        })
    }

    /// `ContainerStatus` of container `id`.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let answer = self.call(
            "ContainerStatus",
            |mut c| async move { c.container_status(request).await },
        )?;
        answer.status.ok_or_else(|| CriError {
            call: "ContainerStatus",
            detail: format!("no status for {id}"),
            code: None,
        })
    }

    /// `PodSandboxStatus` of pod `pod`, verbose (containerd's `info`:
    /// the runtime spec, the network namespace, the CNI result).
    pub fn pod_status(&self, pod: &str) -> Result<PodSandboxStatusResponse, CriError> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: true,
        };
        self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(request).await
        })
    }

    /// `StopContainer`: SIGTERM (the image's stop signal), SIGKILL after
    /// `timeout_s` seconds.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), CriError> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: timeout_s,
        };
        self.call("StopContainer", |mut c| async move { c.stop_container(request).await })
            .map(|_| ())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(
            "RemoveContainer",
            |mut c| async move { c.remove_container(request).await },
        )
        .map(|_| ())
    }

    /// `StopPodSandbox`: its containers killed, its network torn down.
    pub fn stop_pod(&self, pod: &str) -> Result<(), CriError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        };
        self.call(
            "StopPodSandbox",
            |mut c| async move { c.stop_pod_sandbox(request).await },
        )
        .map(|_| ())
    }

    /// `RemovePodSandbox`: the pod and its containers gone.
    pub fn remove_pod(&self, pod: &str) -> Result<(), CriError> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        };
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(request).await
        })
        .map(|_| ())
    }

    /// The ids of the pods `ListPodSandbox` lists.
    pub fn pods(&self) -> Result<Vec<String>, CriError> {
        let answer = self.call("ListPodSandbox", |mut c| async move {
            c.list_pod_sandbox(ListPodSandboxRequest::default()).await
        })?;
        Ok(answer.items.into_iter().map(|p| p.id).collect())
    }

    /// The ids of the containers `ListContainers` lists.
    pub fn containers(&self) -> Result<Vec<String>, CriError> {
        let answer = self.call("ListContainers", |mut c| async move {
            c.list_containers(ListContainersRequest::default()).await
        })?;
        Ok(answer.containers.into_iter().map(|c| c.id).collect())
    }
}
