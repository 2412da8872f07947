//! Shared helpers of the end-to-end tests. Run them through `cargo xtask test`, which builds
//! the binaries they start and runs them as root.
pub mod chaos;
pub mod dashboards;
pub mod graph;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use weft_lab::manifest::Manifests;
use weft_lab::{Lab, LabOptions, Runtime};

/// Where weft's binaries are (`cargo xtask test` sets WEFT_BIN_DIR).
pub fn bin_dir() -> PathBuf {
    require_root();
    let dir = std::env::var_os("WEFT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug")));
    for binary in ["weft-agent", "weft-cni", "weft-ca", "weft-testapp"] {
        assert!(
            dir.join(binary).exists(),
            "{} is missing: run the tests with `cargo xtask test`, which builds it",
            dir.join(binary).display()
        );
    }
    dir
}

pub fn testapp() -> PathBuf {
    bin_dir().join("weft-testapp")
}

/// A lab name no other test of this run uses (tests run in parallel threads and binaries).
pub fn unique_lab_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Lab names are at most 16 characters: up to 6 of the tag, 5 of the pid, `x`, 4 of n.
    let tag: String = tag.chars().take(6).collect();
    format!("{tag}{}x{}", std::process::id() % 100_000, n % 10_000)
}

pub fn manifests(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests")).join(name)
}

/// The Python of the venv `cargo xtask setup` fills with the e2e tests' peers and clients
/// (grpcio, h2, websockets, …).
pub fn python() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xtask/ext-authz/bin/python"
    ))
}

/// Brings up a lab with agents from `tests/manifests/<dir>`, each container command word
/// named in `words` replaced by its path (the Python of [`python`], a script).
pub fn lab_up_with_commands(tag: &str, dir: &str, nodes: usize, words: &[(&str, PathBuf)]) -> Lab {
    let python = python();
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let mut loaded = Manifests::load_dir(&manifests(dir)).expect("the manifests");
    for container in loaded
        .pods
        .iter_mut()
        .flat_map(|p| p.spec.containers.iter_mut())
    {
        for word in container.command.iter_mut() {
            if let Some((_, path)) = words.iter().find(|(name, _)| name == word) {
                *word = path.display().to_string();
            }
        }
    }
    lab_up_manifests(tag, &loaded, nodes, true, &[])
}

/// Brings up a lab from `tests/manifests/<dir>`; dropping the result takes it down.
pub fn lab_up(tag: &str, dir: &str, nodes: usize, agents: bool) -> Lab {
    lab_up_with(tag, dir, nodes, agents, &[])
}

/// The lab builds network namespaces, veths, cgroups and eBPF programs: root only.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests build a lab of network namespaces, veth pairs, cgroups and eBPF \
         programs, which needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF): run them with \
         `cargo xtask test` as root"
    );
}

/// Like [`lab_up`], with extra arguments for every agent.
pub fn lab_up_with(tag: &str, dir: &str, nodes: usize, agents: bool, agent_args: &[&str]) -> Lab {
    let options = LabOptions::new(unique_lab_name(tag)).nodes(nodes);
    lab_up_options(options, &read_manifests(dir), agents, agent_args)
}

/// Like [`lab_up`], for a dual-stack cluster: every pod has an IPv6 address beside its IPv4
/// one, and Services asking for it an IPv6 ClusterIP.
pub fn lab_up_dual_stack(tag: &str, dir: &str, nodes: usize, agents: bool) -> Lab {
    let options = LabOptions::new(unique_lab_name(tag))
        .nodes(nodes)
        .dual_stack(true);
    lab_up_options(options, &read_manifests(dir), agents, &[])
}

/// Brings up a lab from manifests the test has read (and perhaps adjusted).
pub fn lab_up_manifests(
    tag: &str,
    manifests: &Manifests,
    nodes: usize,
    agents: bool,
    agent_args: &[&str],
) -> Lab {
    let options = LabOptions::new(unique_lab_name(tag)).nodes(nodes);
    lab_up_options(options, manifests, agents, agent_args)
}

/// Like [`lab_up`] with agents, each run from `image` under podman and runc as the
/// DaemonSet's pod template runs it (`weft_lab::container`), not as a process of the lab.
pub fn lab_up_in_containers(tag: &str, dir: &str, nodes: usize, image: &str) -> Lab {
    lab_up_containerized(tag, dir, nodes, image, None)
}

/// Like [`lab_up_in_containers`], the application pods' containers also run from
/// `app_image` (`weft_lab::image::TESTAPP`) under podman and runc when given.
pub fn lab_up_containerized(
    tag: &str,
    dir: &str,
    nodes: usize,
    image: &str,
    app_image: Option<&str>,
) -> Lab {
    let bins = bin_dir();
    let options = LabOptions::new(unique_lab_name(tag)).nodes(nodes);
    let runtime = Runtime {
        bin_dir: Some(bins.clone()),
        ca: Some(bins.join("weft-ca")),
        agent_log: Some("debug".into()),
        agent_image: Some(image.to_string()),
        app_image: app_image.map(String::from),
        ..Runtime::default()
    };
    match Lab::up(&options, &read_manifests(dir), &runtime) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {} did not come up: {e}", options.name),
    }
}

fn read_manifests(dir: &str) -> Manifests {
    match Manifests::load_dir(&manifests(dir)) {
        Ok(m) => m,
        Err(e) => panic!("reading tests/manifests/{dir}: {e}"),
    }
}

fn lab_up_options(
    options: LabOptions,
    manifests: &Manifests,
    agents: bool,
    agent_args: &[&str],
) -> Lab {
    let bins = bin_dir();
    let runtime = Runtime {
        bin_dir: Some(bins.clone()),
        agent: agents.then(|| bins.join("weft-agent")),
        ca: agents.then(|| bins.join("weft-ca")),
        agent_log: Some("debug".into()),
        agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        agent_image: None,
        app_image: None,
    };
    match Lab::up(&options, manifests, &runtime) {
        Ok(lab) => lab,
        Err(e) => panic!("lab {} did not come up: {e}", options.name),
    }
}

/// Runs `weft-testapp ARGS…` inside `pod` and returns its output.
pub fn testapp_in(lab: &Lab, pod: &str, args: &[&str]) -> Output {
    let mut command = match lab.pod_command(pod, testapp()) {
        Ok(c) => c,
        Err(e) => panic!("preparing a command in {pod}: {e}"),
    };
    match command.args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("running weft-testapp {args:?} in {pod}: {e}"),
    }
}

/// `weft-testapp ARGS…` inside `pod`, running in the background (its output piped, for
/// [`testapp_report`]).
pub fn spawn_testapp_in(lab: &Lab, pod: &str, args: &[&str]) -> std::process::Child {
    let mut command = lab
        .pod_command(pod, testapp())
        .unwrap_or_else(|e| panic!("preparing a command in {pod}: {e}"));
    command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting weft-testapp {args:?} in {pod}: {e}"))
}

/// The JSON report of a [`spawn_testapp_in`] process, once it is done (`what` names it in
/// a failure).
pub fn testapp_report(child: std::process::Child, what: &str) -> serde_json::Value {
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Like [`testapp_in`], asserting success and parsing each stdout line as JSON.
pub fn testapp_json(lab: &Lab, pod: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let output = testapp_in(lab, pod, args);
    assert!(
        output.status.success(),
        "weft-testapp {args:?} in {pod} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("weft-testapp printed a non-JSON line {line:?}: {e}"),
        })
        .collect()
}

/// `GET path` on the admin endpoint (127.0.0.1:15000) of the agent of `node`, as JSON.
pub fn agent_admin(lab: &Lab, node: &str, path: &str) -> serde_json::Value {
    let body = lab
        .agent_get(node, path)
        .unwrap_or_else(|e| panic!("asking the agent of {node} for {path}: {e}"));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the agent's {path} is not JSON ({e}): {body}"))
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The IP of `pod`, as text.
pub fn pod_ip(lab: &Lab, pod: &str) -> String {
    lab.plan
        .pod(pod)
        .unwrap_or_else(|| panic!("no pod {pod}"))
        .ip
        .to_string()
}

/// The IPv6 address of `pod` (in a dual-stack lab), as text without brackets.
pub fn pod_ip6(lab: &Lab, pod: &str) -> String {
    lab.plan
        .pod(pod)
        .unwrap_or_else(|| panic!("no pod {pod}"))
        .ip6
        .unwrap_or_else(|| panic!("pod {pod} has no IPv6 address: is the lab dual-stack?"))
        .to_string()
}

/// The agent of `node`'s records of recent connections (`GET /connections`).
pub fn agent_connections(lab: &Lab, node: &str) -> Vec<serde_json::Value> {
    match agent_admin(lab, node, "/connections") {
        serde_json::Value::Array(records) => records,
        other => panic!("/connections is not a list: {other}"),
    }
}

/// The agent of `node`'s connection records once `settled` holds for them, or the last ones
/// read after 5 s (so the caller's assertion shows what was there). The agent writes a record
/// when both halves of a connection have closed, which can trail the client's exit: reading
/// right after the client returns races with the proxy's last steps.
pub fn agent_connections_when(
    lab: &Lab,
    node: &str,
    mut settled: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    eventually(std::time::Duration::from_secs(5), || {
        records = agent_connections(lab, node);
        settled(&records)
    });
    records
}

/// A capture of the fabric between the nodes (every link of the fabric namespace).
pub struct FabricCapture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl FabricCapture {
    pub fn start(lab: &Lab) -> Self {
        let file = lab.paths.root.join("fabric.pcap");
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.plan.fabric_netns))
            // -Z root: tcpdump otherwise drops to its own user before opening the file.
            // --immediate-mode: packets reach the file as they come, not once a buffer fills.
            .args([
                "tcpdump",
                "-Z",
                "root",
                "--immediate-mode",
                "-i",
                "any",
                "-U",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .arg("tcp")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tcpdump runs (installed by cargo xtask setup)");
        // tcpdump says "listening on br0" once it captures.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Self { child, file }
    }

    /// Stops the capture; returns the raw file and tcpdump's one-line summaries.
    pub fn stop(mut self) -> (Vec<u8>, String) {
        // Let the last packets reach the file before tcpdump stops reading.
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SIGINT, so tcpdump closes its file properly.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let raw = std::fs::read(&self.file).expect("pcap written");
        let text = std::process::Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump reads");
        (raw, String::from_utf8_lossy(&text.stdout).into_owned())
    }
}

/// Loads a cgroup/connect4 program that lets every connect through unchanged: a stand-in
/// for another release's program in a pod's link (2 instructions: `r0 = 1; exit`).
pub fn load_pass_through_connect4() -> std::io::Result<std::os::fd::OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
    const BPF_CGROUP_INET4_CONNECT: u32 = 10;
    /// `bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    // BPF_ALU64 | BPF_MOV | BPF_K into r0 with imm 1, then BPF_JMP | BPF_EXIT.
    let instructions: [u64; 2] = [0xb7 | (1 << 32), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"passthru");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_INET4_CONNECT,
    };
    // SAFETY: a BPF_PROG_LOAD attribute whose instructions and license outlive the call.
    unsafe { weft_host::bpf_link::bpf_new_fd(BPF_PROG_LOAD, &attr) }
}

/// Creates a hash map with these sizes and pins it at `pin`: a stand-in for a map another
/// release pinned with another layout.
pub fn pin_hash_map(
    pin: &std::path::Path,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    use weft_host::bpf_link::{bpf, bpf_new_fd};
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    /// `bpf_attr` for BPF_MAP_CREATE, up to `map_flags`.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    /// `bpf_attr` for BPF_OBJ_PIN.
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let create = MapCreate {
        map_type: BPF_MAP_TYPE_HASH,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: a BPF_MAP_CREATE attribute.
    let map = unsafe { bpf_new_fd(BPF_MAP_CREATE, &create) }?;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: map.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: a BPF_OBJ_PIN attribute whose path outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &attr) }.map(drop)
}
