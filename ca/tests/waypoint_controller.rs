//! The waypoint controller against the fixture API server (`config/tests/fixture`), over the
//! real HTTP exchange: list/watch, GET, server-side apply, merge patch of status, DELETE
//! with the garbage collector deleting what a Gateway owned, and RBAC enforced with the
//! ClusterRole `weft-ca` of deploy/base/rbac.yaml, so the controller is shown to need no more
//! than that role grants. The objects are changed as users would change them: through the
//! API, as an admin (`kubectl apply`, `kubectl edit`, `kubectl delete`).
#[path = "../../config/tests/fixture/mod.rs"]
mod fixture;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fixture::ApiServer;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::{Value, json};
use weft_ca::controller::ControllerConfig;

const TOKEN: &str = "weft-ca-token";
const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfixture\n-----END CERTIFICATE-----\n";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
const MANAGED: &str = "gateway.istio.io/managed";

/// Every log line of the test binary (each test names its own objects).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("weft_ca=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        let _ = std::io::stderr().write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines(containing: &[&str]) -> Vec<String> {
    let text =
        String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    text.lines()
        .filter(|l| containing.iter().all(|c| l.contains(c)))
        .map(str::to_string)
        .collect()
}

/// A document of deploy/base/rbac.yaml, as JSON.
fn rbac(kind: &str, name: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac.yaml"),
    )
    .expect("deploy/base/rbac.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .map(|d| serde_json::to_value(d).expect("JSON"))
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in deploy/base/rbac.yaml"))
}

fn resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What a cluster with weft installed holds, and the controller running as weft-ca's
/// service account against it.
struct Cluster {
    api: ApiServer,
    admin: kube::Client,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// `prepare` runs on the API server before the controller starts.
    async fn start_with(prepare: impl FnOnce(&ApiServer)) -> Self {
        logs();
        let api = ApiServer::start().await;
        let admin = api.client();
        for namespace in ["weft-system", "shop"] {
            create(
                &admin,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .await;
        }
        create(&admin, rbac("ClusterRoleBinding", "weft-waypoints")).await;
        api.add_user(
            TOKEN,
            "system:serviceaccount:weft-system:weft-ca",
            &rbac("ClusterRole", "weft-ca"),
        );
        prepare(&api);
        let config = ControllerConfig {
            trust_bundle: Some(ROOT_PEM.to_string()),
            backoff_initial: Duration::from_millis(300),
            backoff_max: Duration::from_secs(3),
            discovery_retry: Duration::from_millis(200),
            secret_recheck: Duration::from_millis(300),
            ..ControllerConfig::default()
        };
        let client = api.client_with_token(TOKEN);
        let controller = tokio::spawn(async move {
            if let Err(e) = weft_ca::controller::run(client, config).await {
                panic!("the controller stopped: {e}");
            }
        });
        Self {
            api,
            admin,
            controller,
        }
    }

    fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.api.get(api_version, kind, "shop", name)
    }

    /// Waits until `check` holds, or fails naming `what` and the requests the server saw.
    async fn wait(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; requests: {:#?}",
                self.api.requests()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn gateways(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.admin.clone(),
            "shop",
            &resource(GATEWAY_API, "Gateway", "gateways"),
        )
    }

    async fn apply_gateway(&self, gateway: Value) {
        let name = gateway["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        self.gateways()
            .patch(
                &name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&gateway),
            )
            .await
            .expect("kubectl apply of the Gateway");
    }

    fn condition(&self, gateway: &str, type_: &str) -> Option<(String, String, String)> {
        let gateway = self.get(GATEWAY_API, "Gateway", gateway)?;
        let condition = gateway["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((
            condition["status"].as_str()?.to_string(),
            condition["reason"].as_str()?.to_string(),
            condition["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    fn made_for(&self, gateway: &str) -> Vec<&'static str> {
        [
            ("v1", "ServiceAccount"),
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
        ]
        .into_iter()
        .filter(|(api_version, kind)| self.get(api_version, kind, gateway).is_some())
        .map(|(_, kind)| kind)
        .collect()
    }
}

async fn create(client: &kube::Client, object: Value) {
    let api_version = object["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .to_string();
    let kind = object["kind"].as_str().expect("kind").to_string();
    let plural = format!("{}s", kind.to_lowercase());
    let resource = resource(&api_version, &kind, &plural);
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let object: DynamicObject = serde_json::from_value(object).expect("an object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
}

/// A waypoint Gateway as `istioctl waypoint generate` writes it.
fn waypoint(name: &str, waypoint_for: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "labels": {"istio.io/waypoint-for": waypoint_for}},
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    })
}

fn programmed(cluster: &Cluster, gateway: &str) -> bool {
    cluster
        .condition(gateway, "Programmed")
        .is_some_and(|(status, _, _)| status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waypoint_gateway_gets_its_objects_owned_by_it_and_its_status() {
    let cluster = Cluster::start().await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster
        .wait("the waypoint's objects and a Programmed status", |c| {
            c.made_for("wp").len() == 3 && programmed(c, "wp")
        })
        .await;

    let gateway = cluster
        .get(GATEWAY_API, "Gateway", "wp")
        .expect("the Gateway");
    let uid = gateway["metadata"]["uid"].as_str().expect("uid");
    for (api_version, kind) in [
        ("v1", "ServiceAccount"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
    ] {
        let object = cluster.get(api_version, kind, "wp").expect("made");
        let meta = &object["metadata"];
        assert_eq!(
            meta["ownerReferences"],
            json!([{"apiVersion": GATEWAY_API, "kind": "Gateway", "name": "wp", "uid": uid,
                    "controller": true, "blockOwnerDeletion": true}]),
            "{kind}"
        );
        assert_eq!(
            meta["labels"][MANAGED], "weft.io-waypoint-controller",
            "{kind}"
        );
        assert_eq!(
            meta["labels"]["gateway.networking.k8s.io/gateway-name"],
            "wp"
        );
        assert_eq!(
            meta["labels"]["istio.io/waypoint-for"], "service",
            "copied from the Gateway"
        );
        let managers: Vec<&str> = meta["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(
            managers,
            ["weft-controller"],
            "{kind}: written by server-side apply"
        );
    }
    let deployment = cluster
        .get("apps/v1", "Deployment", "wp")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], "wp");
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    let args = pod["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args");
    assert!(args.windows(2).any(|w| w
        == [
            json!("--ca-address"),
            json!("weft-ca.weft-system.svc:15012")
        ]));
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "the API server's default"
    );

    let service = cluster.get("v1", "Service", "wp").expect("Service");
    let ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(ports, [(15021, "status-port"), (15008, "mesh")]);
    let cluster_ip = service["spec"]["clusterIP"].as_str().expect("a cluster IP");

    let status = &cluster.get(GATEWAY_API, "Gateway", "wp").expect("Gateway")["status"];
    assert_eq!(
        status["addresses"],
        json!([{"type": "IPAddress", "value": cluster_ip}])
    );
    assert_eq!(
        cluster.condition("wp", "Accepted").map(|c| c.1),
        Some("Accepted".to_string())
    );

    // The root certificate for the namespace's waypoints, owned by the Gateway too.
    cluster
        .wait("the trust bundle", |c| {
            c.get("v1", "ConfigMap", "weft-trust-bundle").is_some()
        })
        .await;
    let bundle = cluster
        .get("v1", "ConfigMap", "weft-trust-bundle")
        .expect("ConfigMap");
    assert_eq!(bundle["data"]["root-cert.pem"], ROOT_PEM);
    assert_eq!(bundle["metadata"]["ownerReferences"][0]["uid"], uid);
    // The waypoint's ServiceAccount may read the cluster.
    cluster
        .wait("the binding's subject", |c| {
            c.api
                .get(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRoleBinding",
                    "",
                    "weft-waypoints",
                )
                .is_some_and(|b| {
                    b["subjects"]
                        == json!([{"kind": "ServiceAccount", "name": "wp", "namespace": "shop"}])
                })
        })
        .await;
}

/// Istio's Bookinfo Gateway of class `istio` (`samples/bookinfo/gateway-api/`).
fn ingress_gateway(name: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"gatewayClassName": "istio",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
                                "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_gateway_gets_its_istio_named_objects_and_a_load_balancer() {
    let cluster = Cluster::start().await;
    cluster
        .apply_gateway(ingress_gateway("bookinfo-gateway"))
        .await;
    let made = "bookinfo-gateway-istio";
    cluster
        .wait(
            "the ingress gateway's objects and a Programmed status",
            |c| c.made_for(made).len() == 3 && programmed(c, "bookinfo-gateway"),
        )
        .await;
    let gateway = cluster
        .get(GATEWAY_API, "Gateway", "bookinfo-gateway")
        .expect("the Gateway");
    let uid = gateway["metadata"]["uid"].as_str().expect("uid");
    for (api_version, kind) in [
        ("v1", "ServiceAccount"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
    ] {
        let object = cluster.get(api_version, kind, made).expect("made");
        let meta = &object["metadata"];
        assert_eq!(
            meta["ownerReferences"],
            json!([{"apiVersion": GATEWAY_API, "kind": "Gateway", "name": "bookinfo-gateway",
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}]),
            "{kind}"
        );
        assert_eq!(meta["labels"][MANAGED], "weft.io-gateway-controller");
        for label in [
            "gateway.networking.k8s.io/gateway-name",
            "istio.io/gateway-name",
        ] {
            assert_eq!(meta["labels"][label], "bookinfo-gateway", "{kind} {label}");
        }
    }
    let deployment = cluster
        .get("apps/v1", "Deployment", made)
        .expect("Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], made);
    let args = pod["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args");
    assert!(
        args.windows(2)
            .any(|w| w == [json!("--mode"), json!("ingress")])
    );
    let service = cluster.get("v1", "Service", made).expect("Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    let ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(ports, [(15021, "status-port"), (80, "http")]);
    assert_eq!(
        cluster
            .condition("bookinfo-gateway", "Accepted")
            .map(|c| c.1),
        Some("Accepted".to_string())
    );
    // Its pods read the cluster and trust the mesh's root, as a waypoint's.
    cluster
        .wait("the trust bundle and the binding's subject", |c| {
            c.get("v1", "ConfigMap", "weft-trust-bundle").is_some()
                && c.api
                    .get(
                        "rbac.authorization.k8s.io/v1",
                        "ClusterRoleBinding",
                        "",
                        "weft-waypoints",
                    )
                    .is_some_and(|b| {
                        b["subjects"]
                            == json!([{"kind": "ServiceAccount", "name": made, "namespace": "shop"}])
                    })
        })
        .await;
    cluster
        .gateways()
        .delete("bookinfo-gateway", &DeleteParams::default())
        .await
        .expect("kubectl delete of the Gateway");
    cluster
        .wait("the garbage collector", |c| c.made_for(made).is_empty())
        .await;
}

/// A `kubernetes.io/tls` Secret as `kubectl create secret tls` makes it (the data does not
/// matter to the controller).
fn tls_secret(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}})
}

/// `ResolvedRefs` of the listener `listener` of the Gateway `gateway` (status, reason,
/// message), and its `Programmed` status.
fn listener_condition(
    cluster: &Cluster,
    gateway: &str,
    listener: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let gateway = cluster.get(GATEWAY_API, "Gateway", gateway)?;
    let entry = gateway["status"]["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == listener)?
        .clone();
    let condition = entry["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        condition["status"].as_str()?.to_string(),
        condition["reason"].as_str()?.to_string(),
        condition["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

fn resolved(cluster: &Cluster, listener: &str) -> Option<(String, String)> {
    listener_condition(cluster, "bookinfo-gateway", listener, "ResolvedRefs").map(|c| (c.0, c.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_get_their_secrets_granted_by_name_and_say_which_references_resolve() {
    let cluster = Cluster::start().await;
    let admin = cluster.admin.clone();
    create(
        &admin,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "certs"}}),
    )
    .await;
    create(&admin, tls_secret("shop", "bookinfo-cert")).await;
    create(&admin, tls_secret("certs", "shared-cert")).await;
    let mut gateway = ingress_gateway("bookinfo-gateway");
    gateway["spec"]["listeners"] = json!([
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "bookinfo.example.com",
         "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": "bookinfo-cert"}]}},
        {"name": "missing", "port": 443, "protocol": "HTTPS", "hostname": "missing.example.com",
         "tls": {"certificateRefs": [{"name": "nowhere"}]}},
        {"name": "shared", "port": 443, "protocol": "HTTPS", "hostname": "shared.example.com",
         "tls": {"certificateRefs": [{"name": "shared-cert", "namespace": "certs"}]}},
    ]);
    cluster.apply_gateway(gateway).await;
    let made = "bookinfo-gateway-istio";
    let role = "bookinfo-gateway-istio-secrets";
    let rbac_v1 = "rbac.authorization.k8s.io/v1";
    cluster
        .wait(
            "the gateway's objects, its Role and its listeners' status",
            |c| {
                c.made_for(made).len() == 3
                    && c.get(rbac_v1, "RoleBinding", role).is_some()
                    && programmed(c, "bookinfo-gateway")
                    && resolved(c, "shared").is_some()
            },
        )
        .await;
    // Its own namespace's Secrets, by name, get only — whether they exist yet or not.
    let own = cluster.get(rbac_v1, "Role", role).expect("Role");
    assert_eq!(
        own["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                "resourceNames": ["bookinfo-cert", "nowhere"]}])
    );
    let uid = cluster
        .get(GATEWAY_API, "Gateway", "bookinfo-gateway")
        .and_then(|g| g["metadata"]["uid"].as_str().map(str::to_string))
        .expect("uid");
    assert_eq!(own["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    let binding = cluster
        .get(rbac_v1, "RoleBinding", role)
        .expect("RoleBinding");
    assert_eq!(
        (&binding["roleRef"]["kind"], &binding["roleRef"]["name"]),
        (&json!("Role"), &json!(role))
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": made, "namespace": "shop"}])
    );
    let deployment = cluster
        .get("apps/v1", "Deployment", made)
        .expect("Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let read: Vec<&Value> = args
        .as_array()
        .expect("args")
        .windows(2)
        .filter(|w| w[0] == "--tls-secret")
        .map(|w| &w[1])
        .collect();
    assert_eq!(read, [&json!("shop/bookinfo-cert"), &json!("shop/nowhere")]);
    let ports: Vec<u64> = cluster.get("v1", "Service", made).expect("Service")["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, [15021, 80, 443]);
    // Status: each listener's references, by field and reason.
    assert_eq!(
        resolved(&cluster, "https"),
        Some(("True".into(), "ResolvedRefs".into()))
    );
    let missing = listener_condition(&cluster, "bookinfo-gateway", "missing", "ResolvedRefs")
        .expect("missing's ResolvedRefs");
    assert_eq!(
        (missing.0.as_str(), missing.1.as_str()),
        ("False", "InvalidCertificateRef")
    );
    assert_eq!(
        missing.2,
        "spec.listeners[2].tls.certificateRefs[0]: Secret shop/nowhere does not exist"
    );
    assert_eq!(
        resolved(&cluster, "shared"),
        Some(("False".into(), "RefNotPermitted".into()))
    );
    assert_eq!(
        listener_condition(&cluster, "bookinfo-gateway", "https", "Programmed").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        listener_condition(&cluster, "bookinfo-gateway", "missing", "Programmed").map(|c| c.1),
        Some("Invalid".into())
    );
    assert!(
        cluster
            .api
            .get(rbac_v1, "Role", "certs", &format!("shop.{role}"))
            .is_none(),
        "no grant, no Role in certs"
    );
    // A ReferenceGrant in certs: the Secret is granted there, by a Role the controller
    // deletes itself (an owner reference cannot cross namespaces).
    create(
        &admin,
        json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
               "metadata": {"name": "shop-gateways", "namespace": "certs"},
               "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop"}],
                        "to": [{"group": "", "kind": "Secret", "name": "shared-cert"}]}}),
    )
    .await;
    // The missing Secret, created: read again by name (Secrets are not watched).
    create(&admin, tls_secret("shop", "nowhere")).await;
    let foreign = format!("shop.{role}");
    cluster
        .wait("the grant and the new Secret followed", |c| {
            c.api
                .get(rbac_v1, "RoleBinding", "certs", &foreign)
                .is_some()
                && resolved(c, "shared") == Some(("True".into(), "ResolvedRefs".into()))
                && resolved(c, "missing") == Some(("True".into(), "ResolvedRefs".into()))
        })
        .await;
    let there = cluster
        .api
        .get(rbac_v1, "Role", "certs", &foreign)
        .expect("Role in certs");
    assert_eq!(there["rules"][0]["resourceNames"], json!(["shared-cert"]));
    assert!(there["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        there["metadata"]["labels"]["weft.io/gateway-uid"],
        uid.as_str()
    );
    cluster
        .gateways()
        .delete("bookinfo-gateway", &DeleteParams::default())
        .await
        .expect("kubectl delete of the Gateway");
    cluster
        .wait(
            "its Roles and RoleBindings, here and in certs, gone with it",
            |c| {
                c.get(rbac_v1, "Role", role).is_none()
                    && c.get(rbac_v1, "RoleBinding", role).is_none()
                    && c.api.get(rbac_v1, "Role", "certs", &foreign).is_none()
                    && c.api
                        .get(rbac_v1, "RoleBinding", "certs", &foreign)
                        .is_none()
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_gateway_changes_what_was_made() {
    let cluster = Cluster::start().await;
    let mut gateway = waypoint("wp", "service");
    gateway["metadata"]["labels"]["team"] = "blue".into();
    cluster.apply_gateway(gateway.clone()).await;
    cluster.wait("the waypoint", |c| programmed(c, "wp")).await;
    let created = cluster
        .get("apps/v1", "Deployment", "wp")
        .expect("Deployment");

    // kubectl apply of the Gateway with another waypoint-for and without the team label.
    gateway["metadata"]["labels"] = json!({"istio.io/waypoint-for": "all"});
    cluster.apply_gateway(gateway).await;
    cluster
        .wait("the new labels on every object", |c| {
            ["ServiceAccount", "Service"]
                .into_iter()
                .map(|k| c.get("v1", k, "wp"))
                .chain([c.get("apps/v1", "Deployment", "wp")])
                .all(|o| {
                    o.is_some_and(|o| {
                        o["metadata"]["labels"]["istio.io/waypoint-for"] == "all"
                            && o["metadata"]["labels"].get("team").is_none()
                    })
                })
        })
        .await;
    let patched = cluster
        .get("apps/v1", "Deployment", "wp")
        .expect("Deployment");
    assert_eq!(
        patched["metadata"]["uid"], created["metadata"]["uid"],
        "patched in place, not made again"
    );
    assert_eq!(
        patched["spec"]["template"]["metadata"]["labels"]["istio.io/waypoint-for"],
        "all"
    );
    assert!(
        cluster.api.count_requests("APPLY deployments shop/wp") >= 2,
        "{:?}",
        cluster.api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_deployment_is_restored_and_others_additions_stay() {
    let cluster = Cluster::start().await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster.wait("the waypoint", |c| programmed(c, "wp")).await;
    let deployment = cluster
        .get("apps/v1", "Deployment", "wp")
        .expect("Deployment");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone();

    // Someone edits it: another image, and an annotation of their own.
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        cluster.admin.clone(),
        "shop",
        &resource("apps/v1", "Deployment", "deployments"),
    );
    let edit = json!({
        "metadata": {"annotations": {"owner": "ops"}},
        "spec": {"template": {"spec": {"containers": [{"name": "weft-waypoint", "image": "evil/proxy:1"}]}}},
    });
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    deployments
        .patch("wp", &params, &Patch::Merge(&edit))
        .await
        .expect("kubectl edit");
    cluster
        .wait("the image restored", |c| {
            c.get("apps/v1", "Deployment", "wp")
                .is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == image)
        })
        .await;
    let restored = cluster
        .get("apps/v1", "Deployment", "wp")
        .expect("Deployment");
    assert_eq!(
        restored["metadata"]["annotations"]["owner"], "ops",
        "what weft does not set is not drift"
    );
    let container = &restored["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"].as_array().is_some_and(|a| !a.is_empty()),
        "the merge patch replaced the container list; the apply brought the container back whole: {container}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_gateway_deletes_what_was_made() {
    let cluster = Cluster::start().await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster
        .wait("the waypoint", |c| {
            programmed(c, "wp") && c.get("v1", "ConfigMap", "weft-trust-bundle").is_some()
        })
        .await;

    cluster
        .gateways()
        .delete("wp", &DeleteParams::default())
        .await
        .expect("kubectl delete of the Gateway");
    cluster
        .wait("the garbage collector and the controller", |c| {
            c.made_for("wp").is_empty()
                && c.get("v1", "ConfigMap", "weft-trust-bundle").is_none()
                && c.api
                    .get(
                        "rbac.authorization.k8s.io/v1",
                        "ClusterRoleBinding",
                        "",
                        "weft-waypoints",
                    )
                    .is_some_and(|b| b["subjects"] == json!([]))
        })
        .await;
    // Deleted by the garbage collector, as ownerReferences make it: not by the controller.
    assert_eq!(
        cluster.api.count_requests("DELETE deployments"),
        0,
        "{:?}",
        cluster.api.requests()
    );
}

/// `kubectl delete --cascade=foreground`: the Gateway stays (deletionTimestamp) until the
/// garbage collector has deleted what it owns, and the controller makes nothing again
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_deleted_in_the_foreground_goes_after_what_it_owns() {
    let cluster = Cluster::start().await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster.wait("the waypoint", |c| programmed(c, "wp")).await;
    cluster
        .gateways()
        .delete("wp", &DeleteParams::foreground())
        .await
        .expect("kubectl delete --cascade=foreground");
    cluster
        .wait("everything gone", |c| {
            c.made_for("wp").is_empty() && c.get(GATEWAY_API, "Gateway", "wp").is_none()
        })
        .await;
    // Give a controller that would make them again the time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.made_for("wp").is_empty());
    assert_eq!(
        cluster.api.count_requests("APPLY deployments shop/wp"),
        1,
        "{:?}",
        cluster.api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_leaves_weft_classes_loses_what_was_made() {
    let cluster = Cluster::start().await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster.wait("the waypoint", |c| programmed(c, "wp")).await;
    let mut ingress = waypoint("wp", "service");
    ingress["spec"]["gatewayClassName"] = "nginx".into();
    cluster.apply_gateway(ingress).await;
    cluster
        .wait("its objects deleted by the controller", |c| {
            c.made_for("wp").is_empty()
        })
        .await;
    // A reconcile woken (by a watch event of another kind) before the controller's cache
    // shows the deletion may ask again; the API server answers 404 and the controller takes
    // that as done, as any Kubernetes controller does. It must have asked at least once,
    // and only for what it made.
    let deletes = cluster.api.count_requests("DELETE deployments shop/wp");
    assert!((1..=2).contains(&deletes), "{:?}", cluster.api.requests());
    assert_eq!(
        cluster.api.count_requests("DELETE deployments"),
        deletes,
        "{:?}",
        cluster.api.requests()
    );
    assert!(cluster.get(GATEWAY_API, "Gateway", "wp").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_of_other_classes_are_left_alone() {
    let cluster = Cluster::start().await;
    let mut ingress = waypoint("ingress", "service");
    ingress["spec"] = json!({"gatewayClassName": "nginx",
        "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]});
    cluster.apply_gateway(ingress).await;
    // A waypoint applied after it: once it is programmed, the ingress Gateway was seen.
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster.wait("the waypoint", |c| programmed(c, "wp")).await;
    assert!(cluster.made_for("ingress").is_empty());
    assert_eq!(
        cluster.condition("ingress", "Accepted").map(|c| c.1),
        Some("Pending".to_string()),
        "its status is its own controller's"
    );
    assert_eq!(
        cluster
            .api
            .count_requests("MERGE status gateways shop/ingress"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_gateway_gets_nothing_and_says_why() {
    let cluster = Cluster::start().await;
    let mut gateway = waypoint("wp", "service");
    gateway["spec"]["listeners"] = json!([{"name": "http", "port": 80, "protocol": "HTTP"}]);
    cluster.apply_gateway(gateway).await;
    cluster
        .wait("Accepted False", |c| {
            c.condition("wp", "Accepted")
                .is_some_and(|c| c.0 == "False")
        })
        .await;
    let (_, reason, message) = cluster.condition("wp", "Accepted").expect("Accepted");
    assert_eq!(reason, "ListenersNotValid");
    assert!(message.contains("HBONE"), "{message}");
    assert!(cluster.made_for("wp").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_the_name_that_weft_did_not_make_is_left_alone() {
    let cluster = Cluster::start().await;
    create(
        &cluster.admin,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "wp", "namespace": "shop", "labels": {"app": "mine"}},
               "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]}}),
    )
    .await;
    cluster.apply_gateway(waypoint("wp", "service")).await;
    cluster
        .wait("Programmed False naming the Service", |c| {
            c.condition("wp", "Programmed").is_some_and(|(s, r, m)| {
                s == "False" && r == "Invalid" && m.contains("Service shop/wp")
            })
        })
        .await;
    let service = cluster
        .get("v1", "Service", "wp")
        .expect("the user's Service");
    assert_eq!(service["metadata"]["labels"], json!({"app": "mine"}));
    assert!(service["metadata"].get("ownerReferences").is_none());
    assert_eq!(cluster.api.count_requests("APPLY services shop/wp"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_retried_with_backoff_and_logged_with_the_object() {
    let cluster = Cluster::start_with(|api| {
        api.fail_next("PATCH", "deployments", 422, 2);
        api.fail_next("PATCH", "services", 409, 1);
    })
    .await;
    cluster.apply_gateway(waypoint("retried", "service")).await;
    cluster
        .wait("the waypoint in the end", |c| {
            c.made_for("retried").len() == 3 && programmed(c, "retried")
        })
        .await;

    let attempts = cluster
        .api
        .request_times("PATCH deployments shop/retried -> 422");
    let success = cluster.api.request_times("APPLY deployments shop/retried");
    assert_eq!(attempts.len(), 2, "{:?}", cluster.api.requests());
    let gaps = [attempts[1] - attempts[0], success[0] - attempts[1]];
    assert!(
        gaps[0] >= Duration::from_millis(280) && gaps[1] >= Duration::from_millis(580),
        "backoff of 0.3 s, then 0.6 s: {gaps:?}"
    );
    assert_eq!(
        cluster
            .api
            .count_requests("PATCH services shop/retried -> 409"),
        1
    );
    let logged = log_lines(&["Deployment shop/retried", "422", "retrying"]);
    assert_eq!(
        logged.len(),
        2,
        "each failure logged with its object: {logged:#?}"
    );
    assert!(
        !log_lines(&["Service shop/retried", "409", "retrying"]).is_empty(),
        "the conflict is logged too"
    );
}
