//! What weft-cni does for each command. The previous plugin's result is always passed on
//! unchanged: weft changes nothing of the pod's interfaces or addresses.
//!
//! - ADD: a Kubernetes pod is sent to the agent with its network namespace; the plugin
//!   succeeds once the agent says the pod is captured, or not in the mesh. Anything else
//!   fails the ADD: an agent that cannot be reached, or that cannot decide yet, with code 11
//!   ("try again later"), so the runtime tears the sandbox down and the kubelet retries;
//!   the pod does not start meanwhile.
//! - DEL: the agent is told, best effort; DEL never fails on weft's account (the agent also
//!   forgets a pod when it leaves the cluster).
//! - CHECK: fails when the agent says a pod of the mesh is not captured.
//! - STATUS (1.1): fails while the agent cannot be reached. GC (1.1): nothing to collect.
//! - VERSION: the versions implemented.
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::client::{AgentLink, ClientError};
use crate::protocol::{DEFAULT_SOCKET, PodSandbox, Request, Response};
use crate::spec::{
    self, CniError, Command, DEFAULT_VERSION, Invocation, NetConf, codes, pass_through,
};

/// How long ADD and CHECK wait for the agent, unless `timeoutSeconds` says otherwise: the
/// agent may wait for the API server's news of the pod (up to 10 s) before it decides.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// DEL, STATUS: short, since nothing waits on them.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's socket named by the configuration.
pub fn socket_of(conf: Option<&NetConf>) -> PathBuf {
    conf.and_then(|c| c.socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Runs one invocation: what to print on success (`None`: nothing), or the error; and the
/// version to print either in.
pub fn run(
    invocation: &Invocation,
    stdin: &[u8],
    agent: &dyn AgentLink,
) -> (String, Result<Option<Value>, CniError>) {
    if invocation.command == Command::Version {
        return (DEFAULT_VERSION.to_string(), Ok(Some(spec::version_info())));
    }
    let conf = match spec::net_conf(stdin) {
        Ok(conf) => conf,
        Err(error) => return (DEFAULT_VERSION.to_string(), Err(error)),
    };
    let outcome = spec::command_in_version(invocation.command, &conf.cni_version)
        .and_then(|()| command(invocation, &conf, agent));
    (conf.cni_version, outcome)
}

fn command(
    invocation: &Invocation,
    conf: &NetConf,
    agent: &dyn AgentLink,
) -> Result<Option<Value>, CniError> {
    let timeout = conf
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    match invocation.command {
        Command::Version => Ok(Some(spec::version_info())),
        Command::Gc => Ok(None),
        Command::Status => match agent.call(&Request::Status, None, SHORT_TIMEOUT) {
            Ok(Response::Done) => Ok(None),
            Ok(other) => Err(CniError::new(
                codes::NOT_AVAILABLE,
                format!("unexpected answer from the weft agent: {other:?}"),
            )),
            Err(error) => Err(CniError::new(
                codes::NOT_AVAILABLE,
                "the weft agent of this node cannot be reached; pods cannot start",
            )
            .with_details(error.to_string())),
        },
        Command::Add => add(invocation, conf, agent, timeout),
        Command::Del => {
            if let Some(sandbox) = sandbox(invocation, conf)? {
                match agent.call(&Request::Del(sandbox.clone()), None, SHORT_TIMEOUT) {
                    Ok(_) => {}
                    Err(error) => eprintln!(
                        "weft-cni: DEL of pod {}: the agent was not told ({error}); it forgets \
                         the pod when the pod leaves the cluster",
                        sandbox.key()
                    ),
                }
            }
            Ok(None)
        }
        Command::Check => {
            if conf.prev_result.is_none() {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    "CHECK needs prevResult in the network configuration",
                ));
            }
            let Some(sandbox) = sandbox(invocation, conf)? else {
                return Ok(None);
            };
            let key = sandbox.key();
            match agent.call(&Request::Check(sandbox), None, timeout) {
                Ok(Response::Captured { .. } | Response::NotInMesh { .. }) => Ok(None),
                Ok(Response::NotCaptured { reason, .. }) => Err(CniError::new(
                    codes::NOT_CAPTURED,
                    format!("pod {key} belongs to the mesh but is not captured"),
                )
                .with_details(reason)),
                Ok(answer) => Err(refused(&key, answer)),
                Err(error) => Err(unreachable(&key, agent, error)),
            }
        }
    }
}

fn add(
    invocation: &Invocation,
    conf: &NetConf,
    agent: &dyn AgentLink,
    timeout: Duration,
) -> Result<Option<Value>, CniError> {
    // Not a Kubernetes pod (no K8S_POD_* in CNI_ARGS): never in the mesh.
    let Some(sandbox) = sandbox(invocation, conf)? else {
        return Ok(Some(pass_through(conf)));
    };
    let key = sandbox.key();
    let netns_path = invocation.netns.clone().unwrap_or_default();
    let netns = File::open(&netns_path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            codes::UNKNOWN_CONTAINER
        } else {
            codes::IO_FAILURE
        };
        CniError::new(
            code,
            format!(
                "cannot open the network namespace {} of pod {key}",
                netns_path.display()
            ),
        )
        .with_details(e.to_string())
    })?;
    match agent.call(&Request::Add(sandbox), Some(netns.as_fd()), timeout) {
        Ok(Response::Captured { .. } | Response::NotInMesh { .. }) => Ok(Some(pass_through(conf))),
        Ok(answer) => Err(refused(&key, answer)),
        Err(error) => Err(unreachable(&key, agent, error)),
    }
}

/// The pod of this invocation, or `None` when it is not a Kubernetes pod.
fn sandbox(invocation: &Invocation, conf: &NetConf) -> Result<Option<PodSandbox>, CniError> {
    let Some(pod) = spec::pod_args(&invocation.args)? else {
        return Ok(None);
    };
    let ips = match &conf.prev_result {
        Some(previous) => spec::pod_ips(previous)?,
        None => Vec::new(),
    };
    Ok(Some(PodSandbox {
        container_id: invocation.container_id.clone().unwrap_or_default(),
        namespace: pod.namespace,
        name: pod.name,
        uid: pod.uid,
        ips,
        netns: invocation
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    }))
}

/// An answer that is not a success: the agent's refusal (transient or not), or one that
/// does not belong to the request.
fn refused(pod: &str, answer: Response) -> CniError {
    match answer {
        Response::Refused { message, retry } => CniError::new(
            if retry {
                codes::TRY_AGAIN_LATER
            } else {
                codes::AGENT_REFUSED
            },
            format!("the weft agent did not capture pod {pod}"),
        )
        .with_details(message),
        other => CniError::new(
            codes::DECODE_FAILURE,
            format!("the weft agent answered {other:?} for pod {pod}"),
        ),
    }
}

/// No answer: the pod must not start uncaptured, so the runtime is told to try again.
fn unreachable(pod: &str, agent: &dyn AgentLink, error: ClientError) -> CniError {
    let code = match error {
        ClientError::Untrusted { .. } => codes::AGENT_REFUSED,
        _ => codes::TRY_AGAIN_LATER,
    };
    CniError::new(
        code,
        format!(
            "pod {pod} waits for the weft agent of this node ({}), which captures it before \
             it starts",
            agent.socket().display()
        ),
    )
    .with_details(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::fd::BorrowedFd;
    use std::path::Path;

    use serde_json::json;

    use super::*;

    type Script = Box<dyn Fn(&Request) -> Result<Response, ClientError>>;

    /// An agent that answers from a script and remembers what it was asked.
    struct FakeAgent {
        answer: Script,
        asked: RefCell<Vec<(Request, bool)>>,
        socket: PathBuf,
    }

    impl FakeAgent {
        fn new(answer: impl Fn(&Request) -> Result<Response, ClientError> + 'static) -> Self {
            Self {
                answer: Box::new(answer),
                asked: RefCell::new(Vec::new()),
                socket: PathBuf::from("/var/run/weft/cni.sock"),
            }
        }
    }

    impl AgentLink for FakeAgent {
        fn call(
            &self,
            request: &Request,
            netns: Option<BorrowedFd<'_>>,
            _timeout: Duration,
        ) -> Result<Response, ClientError> {
            self.asked
                .borrow_mut()
                .push((request.clone(), netns.is_some()));
            (self.answer)(request)
        }

        fn socket(&self) -> &Path {
            &self.socket
        }
    }

    fn invocation(command: &str, netns: &Path, args: &str) -> Invocation {
        let vars: HashMap<&str, String> = HashMap::from([
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "sandbox-1".to_string()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", args.to_string()),
        ]);
        Invocation::from_vars(|name| vars.get(name).cloned()).expect("valid environment")
    }

    const POD: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1";

    fn stdin() -> Vec<u8> {
        json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "weft-cni",
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": [{"address": "10.244.1.7/24", "interface": 0}],
            },
        })
        .to_string()
        .into_bytes()
    }

    fn netns() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().expect("a stand-in for a namespace file")
    }

    #[test]
    fn add_passes_the_result_on_once_the_agent_captured_the_pod() {
        let ns = netns();
        let agent = FakeAgent::new(|_| {
            Ok(Response::Captured {
                pod: "shop/web-0".into(),
            })
        });
        let (version, outcome) = run(&invocation("ADD", ns.path(), POD), &stdin(), &agent);
        assert_eq!(version, "1.0.0");
        let printed = outcome.expect("success").expect("a result");
        assert_eq!(printed["ips"][0]["address"], "10.244.1.7/24");
        let asked = agent.asked.borrow();
        let (Request::Add(sandbox), with_netns) = &asked[0] else {
            panic!("asked {asked:?}")
        };
        assert!(with_netns, "the namespace travels as a descriptor");
        assert_eq!(sandbox.key(), "shop/web-0");
        assert_eq!(sandbox.uid.as_deref(), Some("u-1"));
        assert_eq!(sandbox.container_id, "sandbox-1");
        assert_eq!(
            sandbox.ips,
            ["10.244.1.7".parse::<std::net::IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn add_fails_to_be_retried_while_the_agent_is_away_or_undecided() {
        let ns = netns();
        let away = FakeAgent::new(|_| {
            Err(ClientError::Unreachable {
                socket: "/var/run/weft/cni.sock".into(),
                source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
            })
        });
        let error = run(&invocation("ADD", ns.path(), POD), &stdin(), &away)
            .1
            .expect_err("no agent, no pod");
        assert_eq!(error.code, codes::TRY_AGAIN_LATER);
        assert!(error.msg.contains("shop/web-0"), "{error}");
        assert!(error.msg.contains("/var/run/weft/cni.sock"), "{error}");
        let undecided = FakeAgent::new(|_| {
            Ok(Response::Refused {
                message: "the pod is not in the registry yet".into(),
                retry: true,
            })
        });
        let error = run(&invocation("ADD", ns.path(), POD), &stdin(), &undecided)
            .1
            .expect_err("undecided");
        assert_eq!(error.code, codes::TRY_AGAIN_LATER);
        assert!(error.details.contains("registry"), "{error}");
        let refused = FakeAgent::new(|_| {
            Ok(Response::Refused {
                message: "the pod's identity is not a SPIFFE id".into(),
                retry: false,
            })
        });
        assert_eq!(
            run(&invocation("ADD", ns.path(), POD), &stdin(), &refused)
                .1
                .expect_err("refused")
                .code,
            codes::AGENT_REFUSED
        );
    }

    #[test]
    fn a_container_that_is_no_pod_is_passed_without_asking() {
        let ns = netns();
        let agent = FakeAgent::new(|request| panic!("asked {request:?}"));
        let printed = run(&invocation("ADD", ns.path(), ""), &stdin(), &agent)
            .1
            .expect("success");
        assert_eq!(
            printed.expect("result")["ips"][0]["address"],
            "10.244.1.7/24"
        );
    }

    #[test]
    fn a_missing_namespace_is_an_unknown_container() {
        let agent = FakeAgent::new(|request| panic!("asked {request:?}"));
        let error = run(
            &invocation("ADD", Path::new("/nonexistent/netns"), POD),
            &stdin(),
            &agent,
        )
        .1
        .expect_err("no namespace");
        assert_eq!(error.code, codes::UNKNOWN_CONTAINER);
    }

    #[test]
    fn del_succeeds_even_without_an_agent() {
        let ns = netns();
        let away = FakeAgent::new(|_| {
            Err(ClientError::Timeout {
                socket: "/var/run/weft/cni.sock".into(),
                timeout: SHORT_TIMEOUT,
            })
        });
        let outcome = run(&invocation("DEL", ns.path(), POD), &stdin(), &away).1;
        assert_eq!(outcome, Ok(None));
        assert!(matches!(away.asked.borrow()[0].0, Request::Del(_)));
    }

    #[test]
    fn check_reports_a_mesh_pod_that_is_not_captured() {
        let ns = netns();
        let agent = FakeAgent::new(|_| {
            Ok(Response::NotCaptured {
                pod: "shop/web-0".into(),
                reason: "not enrolled".into(),
            })
        });
        let error = run(&invocation("CHECK", ns.path(), POD), &stdin(), &agent)
            .1
            .expect_err("not captured");
        assert_eq!(error.code, codes::NOT_CAPTURED);
        let fine = FakeAgent::new(|_| {
            Ok(Response::Captured {
                pod: "shop/web-0".into(),
            })
        });
        assert_eq!(
            run(&invocation("CHECK", ns.path(), POD), &stdin(), &fine).1,
            Ok(None)
        );
        let old = json!({"cniVersion": "0.3.1", "type": "weft-cni", "prevResult": {}});
        assert_eq!(
            run(
                &invocation("CHECK", ns.path(), POD),
                old.to_string().as_bytes(),
                &fine
            )
            .1
            .expect_err("CHECK is 0.4.0's")
            .code,
            codes::INCOMPATIBLE_VERSION
        );
    }

    #[test]
    fn version_and_status() {
        let ns = netns();
        let agent = FakeAgent::new(|_| Ok(Response::Done));
        let (_, version) = run(&invocation("VERSION", ns.path(), ""), b"", &agent);
        assert_eq!(
            version.expect("ok").expect("printed")["supportedVersions"][3],
            "1.0.0"
        );
        let v11 = json!({"cniVersion": "1.1.0", "name": "n", "type": "weft-cni"}).to_string();
        assert_eq!(
            run(&invocation("STATUS", ns.path(), ""), v11.as_bytes(), &agent).1,
            Ok(None)
        );
        let away = FakeAgent::new(|_| {
            Err(ClientError::Unreachable {
                socket: "/x".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })
        });
        assert_eq!(
            run(&invocation("STATUS", ns.path(), ""), v11.as_bytes(), &away)
                .1
                .expect_err("not available")
                .code,
            codes::NOT_AVAILABLE
        );
        assert_eq!(
            run(&invocation("GC", ns.path(), ""), v11.as_bytes(), &away).1,
            Ok(None)
        );
    }
}
