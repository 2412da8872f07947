//! The node agent from its image, under podman and runc, as the DaemonSet's pod template
//! (`deploy/base/agent.yaml`) runs it: the node's network namespace, only the capabilities
//! the template lists, a read-only root, the runtime's default seccomp profile, the
//! template's environment and host mounts (`weft_lab::container`). The image is built from
//! the binaries under test the way `cargo xtask images` builds it (`weft_lab::image`), and
//! removed afterwards; the lab removes its containers when it goes down, failed test or not.
//! The application pods run as runc containers of a testapp image (`Runtime::app_image`)
//! in their pods' network namespaces and cgroups, and the traffic starts inside them.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::{
    agent_admin, agent_connections_when, bin_dir, eventually, lab_up_containerized, pod_ip,
    testapp_in, testapp_json,
};
use weft_lab::Lab;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";

/// CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_BPF (39).
const TEMPLATE_CAPABILITIES: u64 = (1 << 12) | (1 << 19) | (1 << 21) | (1 << 39);

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|dir| dir.join(program).is_file())
    })
}

/// The agent's image: `WEFT_E2E_AGENT_IMAGE` if set (e.g. `localhost/weft-agent:dev`, which
/// `cargo xtask images` built, kept afterwards), else one built for this test from the
/// binaries under test and removed when the test ends however it ends.
struct TestImage(String, bool);

impl TestImage {
    fn get() -> Self {
        match std::env::var("WEFT_E2E_AGENT_IMAGE") {
            Ok(image) if !image.is_empty() => TestImage(image, false),
            _ => Self::build(weft_lab::image::spec("weft-agent").expect("the agent's image")),
        }
    }

    /// The application pods' image (weft-testapp and `sleep`), always built for the test.
    fn testapp() -> Self {
        Self::build(&weft_lab::image::TESTAPP)
    }

    fn build(spec: &weft_lab::image::ImageSpec) -> Self {
        let bins = bin_dir();
        let tag = format!("localhost/{}:e2e-{}", spec.name, std::process::id());
        let staging = std::env::temp_dir().join(format!(
            "weft-e2e-image-{}-{}",
            spec.name,
            std::process::id()
        ));
        let image = TestImage(tag, true);
        let built = weft_lab::image::build(spec, &bins, &image.0, &staging);
        let _ = std::fs::remove_dir_all(&staging);
        if let Err(e) = built {
            panic!("building {} with buildah: {e}", image.0);
        }
        image
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        if !self.1 {
            return;
        }
        if let Err(e) = weft_lab::image::remove(&self.0) {
            eprintln!("removing the test image {}: {e}", self.0);
        }
    }
}

fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running podman {args:?}: {e}"));
    assert!(
        output.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn podman_ok(args: &[&str]) -> bool {
    Command::new("podman")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The application container whose name (after the lab's prefix) starts with `stem`.
fn pod_container(lab: &Lab, stem: &str) -> String {
    let prefix = format!(
        "{}{stem}",
        weft_lab::container::pod_container_prefix(&lab.plan.lab)
    );
    weft_lab::container::pod_containers(&lab.plan.lab)
        .into_iter()
        .find(|n| n.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no container {prefix}…"))
}

/// The cgroup v2 path of process `pid` (`0::<path>` in /proc/<pid>/cgroup).
fn unified_cgroup(pid: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_string()
}

fn echo_result(lab: &Lab, pod: &str, target: &str) -> bool {
    testapp_in(
        lab,
        pod,
        &["tcp", target, "--send", "policy", "--timeout-ms", "3000"],
    )
    .status
    .success()
}

/// The `Seccomp:` mode of process `pid` (2: a filter, as the runtime's default profile).
fn seccomp_mode(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .expect("Seccomp")
        .trim()
        .to_string()
}

/// Whether process `pid` sees its root file system mounted read-only.
fn root_read_only(pid: &str) -> bool {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&"/")
            && fields
                .get(5)
                .is_some_and(|options| options.split(',').any(|o| o == "ro"))
    })
}

/// The effective capabilities of process `pid`.
fn effective_capabilities(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex")
}

#[test]
fn agents_in_containers_carry_hbone_between_nodes_and_enforce_policy() {
    if !installed("podman") || !installed("buildah") || !installed("runc") {
        eprintln!(
            "SKIPPED: podman, buildah and runc are needed to run the agent's image \
             (`cargo xtask setup --for test` installs them)"
        );
        return;
    }
    let image = TestImage::get();
    let app_image = TestImage::testapp();
    let mut lab = lab_up_containerized("ctr", "tunnel", 2, &image.0, Some(&app_image.0));

    // Each application pod's container is a runc container of the testapp image in the
    // pod's network namespace, in a cgroup below the pod's (where the capture is attached),
    // with a mount namespace of its own showing the pod's /etc/hosts, and /proc/sys
    // read-only.
    let pods = weft_lab::container::pod_containers(&lab.plan.lab);
    assert_eq!(pods.len(), 3, "client, server, outsider: {pods:?}");
    for pod in [
        "mesh-client-app-",
        "mesh-server-app-",
        "plain-outsider-app-",
    ] {
        let name = pod_container(&lab, pod);
        let state = podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Pid}} {{.ImageName}} {{.OCIRuntime}}",
            &name,
        ]);
        let fields: Vec<&str> = state.split_whitespace().collect();
        assert_eq!(fields[0], "running", "{state}");
        assert_eq!(fields[2], app_image.0, "{state}");
        assert_eq!(fields[3], "runc", "{state}");
        let pid = fields[1];
        let stem = pod.trim_end_matches("-app-");
        let pod_cgroup = format!("/weft-lab/{}/pods/{stem}/app/libpod-", lab.plan.lab);
        let cgroup = unified_cgroup(pid);
        assert!(
            cgroup.starts_with(&pod_cgroup),
            "{name} in {cgroup}, not below {pod_cgroup}"
        );
        let own = |ns: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns")
                != std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns")
        };
        assert!(own("mnt"), "{name}: a mount namespace of its own");
        assert!(own("net"), "{name}: the pod's network namespace");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        assert!(
            mounts.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(4) == Some(&"/proc/sys")
                    && f.get(5).is_some_and(|o| o.split(',').any(|o| o == "ro"))
            }),
            "{name}: /proc/sys read-only"
        );
        let hosts = std::fs::read_to_string(format!("/proc/{pid}/root/etc/hosts")).expect("hosts");
        let plan = lab
            .plan
            .pods
            .iter()
            .find(|p| format!("{}-{}", p.namespace, p.name) == stem);
        let ours = plan
            .map(|p| lab.paths.pod_dir(p).join("hosts"))
            .expect("the pod");
        assert_eq!(
            hosts,
            std::fs::read_to_string(ours).expect("the pod's hosts"),
            "{name}"
        );
    }

    // Each node's agent is a container of the image, PID 1 of its own PID namespace,
    // holding the template's capabilities and no others, under a seccomp filter, on a
    // read-only root.
    let names = weft_lab::container::lab_containers(&lab.plan.lab);
    assert_eq!(names.len(), 2, "{names:?}");
    for (name, node) in names.iter().zip(["node-1", "node-2"]) {
        assert!(name.contains(node), "{name}");
        let state = podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Pid}} {{.ImageName}} {{.OCIRuntime}}",
            name,
        ]);
        let fields: Vec<&str> = state.split_whitespace().collect();
        assert_eq!(fields[0], "running", "{state}");
        assert_eq!(fields[2], image.0, "{state}");
        assert_eq!(fields[3], "runc", "{state}");
        assert_eq!(
            effective_capabilities(fields[1]),
            TEMPLATE_CAPABILITIES,
            "{name}"
        );
        assert_eq!(
            seccomp_mode(fields[1]),
            "2",
            "{name}: the default seccomp profile"
        );
        assert!(root_read_only(fields[1]), "{name}: a read-only root");
        let status = agent_admin(&lab, node, "/status");
        assert_eq!(
            status["pid"], 1,
            "the admin endpoint of {node} is the container's"
        );
    }

    // Pods on two nodes talk through the agents' HBONE tunnel: from inside the client's
    // container (its first connection captured, CNI ADD came before it started) …
    let server = pod_ip(&lab, "mesh/server");
    let client = pod_container(&lab, "mesh-client-app-");
    let from_container = podman(&[
        "exec",
        &client,
        "weft-testapp",
        "tcp",
        &format!("{server}:9000"),
        "--send",
        "from-the-container",
    ]);
    assert!(
        from_container.contains("from-the-container"),
        "{from_container}"
    );
    let from_container_inbound = |r: &Value| {
        r["pod"] == "mesh/server"
            && r["direction"] == "inbound"
            && r["protocol"] == "hbone"
            && r["peer_identity"] == CLIENT_ID
    };
    let records = agent_connections_when(&lab, "node-2", |records| {
        records.iter().any(from_container_inbound)
    });
    assert!(
        records.iter().any(from_container_inbound),
        "the container's connection arrived over HBONE with the client's identity: {records:?}"
    );
    // … and from a process placed in the pod as `lab exec` does.
    let marker = "weft-container-marker";
    let echo = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &format!("{server}:9000"), "--send", marker],
    );
    assert_eq!(echo[1]["echoed"], marker);
    let by_name = testapp_json(&lab, "mesh/client", &["get", "http://server.mesh/"]);
    assert_eq!(by_name[0]["status"], 200);
    assert_eq!(by_name[0]["body"]["pod"], "server");
    let is_inbound = |r: &Value| {
        r["pod"] == "mesh/server"
            && r["direction"] == "inbound"
            && r["protocol"] == "hbone"
            && r["peer_identity"] == CLIENT_ID
    };
    let inbound = agent_connections_when(&lab, "node-2", |records| {
        records.iter().filter(|r| is_inbound(r)).count() >= 2
    });
    assert!(
        inbound.iter().filter(|r| is_inbound(r)).count() >= 2,
        "{inbound:?}"
    );
    let counted = eventually(Duration::from_secs(5), || {
        agent_admin(&lab, "node-2", "/pods")
            .as_array()
            .and_then(|pods| pods.iter().find(|p| p["pod"] == "mesh/server"))
            .is_some_and(|p| p["bytes_received"].as_u64() >= Some(marker.len() as u64))
    });
    assert!(counted, "{}", agent_admin(&lab, "node-2", "/pods"));

    // A crashed agent's container is replaced by a new one (a new name, as the DaemonSet
    // makes a new pod), which adopts the programs pinned on the node's bpffs.
    lab.kill_agent("node-2").expect("kill the agent of node-2");
    lab.start_agent_again("node-2")
        .expect("a new container for the agent of node-2");
    let running = weft_lab::container::lab_containers(&lab.plan.lab)
        .into_iter()
        .filter(|name| podman(&["inspect", "--format", "{{.State.Status}}", name]) == "running")
        .count();
    assert_eq!(running, 2, "one running agent container per node");
    let again = testapp_json(
        &lab,
        "mesh/client",
        &["tcp", &format!("{server}:9000"), "--send", marker],
    );
    assert_eq!(again[1]["echoed"], marker, "through the new container");

    // STRICT refuses plaintext from outside the mesh, not the mesh's mutual TLS.
    let target = format!("{server}:9000");
    assert!(
        echo_result(&lab, "plain/outsider", &target),
        "PERMISSIVE first"
    );
    lab.apply_yaml(
        "strict",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: mesh}\nspec: {mtls: {mode: STRICT}}\n",
    )
    .expect("apply");
    assert!(
        eventually(Duration::from_secs(10), || !echo_result(
            &lab,
            "plain/outsider",
            &target
        )),
        "plaintext refused under STRICT"
    );
    assert!(echo_result(&lab, "mesh/client", &target), "mTLS passes");
    let outsider = pod_container(&lab, "plain-outsider-app-");
    assert!(
        !podman_ok(&[
            "exec",
            &outsider,
            "weft-testapp",
            "tcp",
            &target,
            "--send",
            "policy",
            "--timeout-ms",
            "3000",
        ]),
        "plaintext from the outsider's container refused under STRICT"
    );

    // A DENY policy by principal refuses the client, and the agent names the policy.
    lab.apply_yaml(
        "deny",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-client, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]}]\n",
    )
    .expect("apply");
    assert!(
        eventually(Duration::from_secs(10), || !echo_result(
            &lab,
            "mesh/client",
            &target
        )),
        "the denied principal is refused"
    );
    let names_policy = |r: &Value| {
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("mesh/deny-client"))
    };
    let records =
        agent_connections_when(&lab, "node-2", |records| records.iter().any(names_policy));
    assert!(records.iter().any(names_policy), "{records:?}");

    assert!(
        !podman_ok(&[
            "exec",
            &client,
            "weft-testapp",
            "tcp",
            &target,
            "--send",
            "policy",
            "--timeout-ms",
            "3000",
        ]),
        "the client's container is refused by the DENY policy"
    );

    // Down removes the containers (a failed test's Drop does the same).
    let name = lab.plan.lab.clone();
    lab.down().expect("down");
    assert!(
        weft_lab::container::lab_containers(&name).is_empty()
            && weft_lab::container::pod_containers(&name).is_empty(),
        "the lab's containers are gone"
    );
    assert!(weft_lab::leftovers(&name).is_empty());
}
