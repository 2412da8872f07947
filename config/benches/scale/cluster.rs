//! A large cluster, generated as the API server would send it: each object a JSON document
//! as `kubectl get -o json` shows it (managedFields, status, a Deployment's pod template),
//! decoded into weft's types the way the Kubernetes source decodes a watch event (serde into
//! the typed `Pod`, `Service`, ...; Istio kinds through `Object::from_json_checked`).
//!
//! The shape: `pods` pods on `nodes` nodes (pod CIDR /24 per node), `services` Services of
//! ~15 pods each (the remaining pods back no Service, like Jobs), 33 Services per
//! namespace, every namespace enrolled in ambient; one waypoint bound to the Services of
//! `ns-0`, a mesh-wide STRICT PeerAuthentication and DENY policy, an ALLOW policy in every
//! 20th namespace, ten ServiceEntries.
use std::net::Ipv4Addr;

use weft_config::api::Object;
use weft_config::api::kubernetes::{EndpointSlice, Namespace, Node, Pod, Service};
use weft_config::registry::Candidate;

pub const PODS_PER_SERVICE: usize = 15;
pub const SERVICES_PER_NAMESPACE: usize = 33;

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub pods: usize,
    pub services: usize,
    pub nodes: usize,
}

impl Shape {
    /// Pods of a Service, then the rest, each in its Service's namespace.
    pub fn namespaces(&self) -> usize {
        self.services.div_ceil(SERVICES_PER_NAMESPACE).max(1)
    }

    /// The Service pod `i` belongs to, if any.
    pub fn service_of(&self, i: usize) -> Option<usize> {
        let s = i / PODS_PER_SERVICE;
        (s < self.services).then_some(s)
    }

    pub fn namespace_of_pod(&self, i: usize) -> usize {
        match self.service_of(i) {
            Some(s) => s / SERVICES_PER_NAMESPACE,
            None => i % self.namespaces(),
        }
    }

    pub fn node_of(&self, i: usize) -> usize {
        i % self.nodes
    }

    /// 10.<node / 256>.<node % 256>.<k + 1>: the node's /24, the pod's rank on it.
    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        let node = self.node_of(i);
        let k = i / self.nodes;
        assert!(k < 254, "more than 254 pods on a node's /24");
        Ipv4Addr::new(10, (node / 256) as u8, (node % 256) as u8, k as u8 + 1)
    }

    /// From 10.96.0.0/12, as kube-apiserver's default service CIDR.
    pub fn service_vip(&self, s: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + s as u32 + 1)
    }

    /// The pods backing Service `s`.
    pub fn service_pods(&self, s: usize) -> std::ops::Range<usize> {
        s * PODS_PER_SERVICE..((s + 1) * PODS_PER_SERVICE).min(self.pods)
    }
}

/// The ReplicaSet hash in a pod's name and its `pod-template-hash` label.
fn template_hash(s: usize) -> String {
    format!(
        "{:09x}",
        (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 28
    )[..9]
        .to_string()
}

fn uid(kind: u8, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

/// The name of pod `i`: `<deployment>-<template hash>-<5 characters>`.
pub fn pod_name(shape: &Shape, i: usize) -> String {
    let owner = match shape.service_of(i) {
        Some(s) => format!("app-{s}-{}", template_hash(s)),
        None => format!("job-{i}"),
    };
    format!("{owner}-{:05x}", i & 0xfffff)
}

/// Pod `i` as JSON. `generation` changes its labels (a relabel), `ready` its Ready condition.
pub fn pod_json(shape: &Shape, i: usize, generation: u64) -> String {
    let ns = shape.namespace_of_pod(i);
    let node = shape.node_of(i);
    let ip = shape.pod_ip(i);
    let host_ip = Ipv4Addr::new(172, 16, (node / 256) as u8, (node % 256) as u8);
    let (app, hash) = match shape.service_of(i) {
        Some(s) => (format!("app-{s}"), template_hash(s)),
        None => (format!("job-{i}"), template_hash(i)),
    };
    let name = pod_name(shape, i);
    let uid = uid(1, i);
    let owner_uid = uid_of_owner(i);
    let version = i % 3;
    let rv = 1_000_000 + i as u64 * 7 + generation;
    let container_id = format!(
        "{:064x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","generateName":"{app}-{hash}-","namespace":"ns-{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-12-01T10:00:00Z","labels":{{"app":"{app}","version":"v{version}","pod-template-hash":"{hash}","app.kubernetes.io/part-of":"shop","generation":"{generation}"}},"annotations":{{"kubectl.kubernetes.io/restartedAt":"2026-11-30T08:00:00Z","prometheus.io/scrape":"true","prometheus.io/port":"9090"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-{hash}","uid":"{owner_uid}","controller":true,"blockOwnerDeletion":true}}],"managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2026-12-01T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:annotations":{{".":{{}},"f:kubectl.kubernetes.io/restartedAt":{{}},"f:prometheus.io/port":{{}},"f:prometheus.io/scrape":{{}}}},"f:generateName":{{}},"f:labels":{{".":{{}},"f:app":{{}},"f:app.kubernetes.io/part-of":{{}},"f:pod-template-hash":{{}},"f:version":{{}}}},"f:ownerReferences":{{".":{{}},"k:{{\"uid\":\"{owner_uid}\"}}":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"app\"}}":{{".":{{}},"f:image":{{}},"f:imagePullPolicy":{{}},"f:livenessProbe":{{".":{{}},"f:httpGet":{{".":{{}},"f:path":{{}},"f:port":{{}},"f:scheme":{{}}}}}},"f:name":{{}},"f:ports":{{".":{{}},"k:{{\"containerPort\":8080,\"protocol\":\"TCP\"}}":{{".":{{}},"f:containerPort":{{}},"f:name":{{}},"f:protocol":{{}}}}}},"f:readinessProbe":{{".":{{}},"f:httpGet":{{".":{{}},"f:path":{{}},"f:port":{{}},"f:scheme":{{}}}}}},"f:resources":{{".":{{}},"f:limits":{{".":{{}},"f:memory":{{}}}},"f:requests":{{".":{{}},"f:cpu":{{}},"f:memory":{{}}}}}}}}}},"f:dnsPolicy":{{}},"f:restartPolicy":{{}},"f:schedulerName":{{}},"f:serviceAccount":{{}},"f:serviceAccountName":{{}},"f:terminationGracePeriodSeconds":{{}}}}}}}},{{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"2026-12-01T10:00:09Z","fieldsType":"FieldsV1","fieldsV1":{{"f:status":{{"f:conditions":{{"k:{{\"type\":\"ContainersReady\"}}":{{".":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}},"k:{{\"type\":\"Initialized\"}}":{{".":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}},"k:{{\"type\":\"Ready\"}}":{{".":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}}}},"f:containerStatuses":{{}},"f:hostIP":{{}},"f:hostIPs":{{}},"f:phase":{{}},"f:podIP":{{}},"f:podIPs":{{".":{{}},"k:{{\"ip\":\"{ip}\"}}":{{".":{{}},"f:ip":{{}}}}}},"f:startTime":{{}}}}}},"subresource":"status"}}]}},"spec":{{"volumes":[{{"name":"kube-api-access-{hash5}","projected":{{"sources":[{{"serviceAccountToken":{{"expirationSeconds":3607,"path":"token"}}}},{{"configMap":{{"name":"kube-root-ca.crt","items":[{{"key":"ca.crt","path":"ca.crt"}}]}}}},{{"downwardAPI":{{"items":[{{"path":"namespace","fieldRef":{{"apiVersion":"v1","fieldPath":"metadata.namespace"}}}}]}}}}],"defaultMode":420}}}}],"containers":[{{"name":"app","image":"registry.example.com/shop/{app}:1.4.2","ports":[{{"name":"http","containerPort":8080,"protocol":"TCP"}}],"resources":{{"limits":{{"memory":"256Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"volumeMounts":[{{"name":"kube-api-access-{hash5}","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}}],"livenessProbe":{{"httpGet":{{"path":"/healthz","port":"http","scheme":"HTTP"}},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3}},"readinessProbe":{{"httpGet":{{"path":"/ready","port":"http","scheme":"HTTP"}},"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"{app}","serviceAccount":"{app}","nodeName":"node-{node}","securityContext":{{}},"schedulerName":"default-scheduler","tolerations":[{{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}},{{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"}},"status":{{"phase":"Running","conditions":[{{"type":"PodReadyToStartContainers","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-12-01T10:00:03Z"}},{{"type":"Initialized","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-12-01T10:00:00Z"}},{{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-12-01T10:00:09Z"}},{{"type":"ContainersReady","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-12-01T10:00:09Z"}},{{"type":"PodScheduled","status":"True","lastProbeTime":null,"lastTransitionTime":"2026-12-01T10:00:00Z"}}],"hostIP":"{host_ip}","hostIPs":[{{"ip":"{host_ip}"}}],"podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"startTime":"2026-12-01T10:00:00Z","containerStatuses":[{{"name":"app","state":{{"running":{{"startedAt":"2026-12-01T10:00:02Z"}}}},"lastState":{{}},"ready":true,"restartCount":0,"image":"registry.example.com/shop/{app}:1.4.2","imageID":"registry.example.com/shop/{app}@sha256:{container_id}","containerID":"containerd://{container_id}","started":true}}],"qosClass":"Burstable"}}}}"#,
        hash5 = &container_id[..5],
    )
}

fn uid_of_owner(i: usize) -> String {
    uid(2, i / PODS_PER_SERVICE)
}

pub fn service_json(shape: &Shape, s: usize, bound: bool) -> String {
    let ns = s / SERVICES_PER_NAMESPACE;
    let vip = shape.service_vip(s);
    let uid = uid(3, s);
    let waypoint = if bound {
        r#","istio.io/use-waypoint":"waypoint""#
    } else {
        ""
    };
    format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"app-{s}","namespace":"ns-{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-12-01T09:00:00Z","labels":{{"app":"app-{s}","app.kubernetes.io/part-of":"shop"{waypoint}}},"managedFields":[{{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1","time":"2026-12-01T09:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app":{{}},"f:app.kubernetes.io/part-of":{{}}}}}},"f:spec":{{"f:internalTrafficPolicy":{{}},"f:ports":{{".":{{}},"k:{{\"port\":80,\"protocol\":\"TCP\"}}":{{".":{{}},"f:name":{{}},"f:port":{{}},"f:protocol":{{}},"f:targetPort":{{}}}},"k:{{\"port\":9090,\"protocol\":\"TCP\"}}":{{".":{{}},"f:name":{{}},"f:port":{{}},"f:protocol":{{}},"f:targetPort":{{}}}}}},"f:selector":{{}},"f:sessionAffinity":{{}},"f:type":{{}}}}}}}}]}},"spec":{{"ports":[{{"name":"http","protocol":"TCP","appProtocol":"http","port":80,"targetPort":"http"}},{{"name":"grpc","protocol":"TCP","port":9090,"targetPort":9090}}],"selector":{{"app":"app-{s}"}},"clusterIP":"{vip}","clusterIPs":["{vip}"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"}},"status":{{"loadBalancer":{{}}}}}}"#,
        rv = 500_000 + s,
    )
}

/// The EndpointSlice of Service `s`; `not_ready` marks one of its pods not ready (a
/// restart in progress), `missing` leaves one out.
pub fn slice_json(
    shape: &Shape,
    s: usize,
    not_ready: Option<usize>,
    missing: Option<usize>,
) -> String {
    let ns = s / SERVICES_PER_NAMESPACE;
    let endpoints: Vec<String> = shape
        .service_pods(s)
        .filter(|i| Some(*i) != missing)
        .map(|i| {
            let ready = Some(i) != not_ready;
            format!(
                r#"{{"addresses":["{ip}"],"conditions":{{"ready":{ready},"serving":{ready},"terminating":false}},"targetRef":{{"kind":"Pod","namespace":"ns-{ns}","name":"{name}","uid":"{uid}"}},"nodeName":"node-{node}","zone":"zone-{zone}"}}"#,
                ip = shape.pod_ip(i),
                name = pod_name(shape, i),
                uid = uid(1, i),
                node = shape.node_of(i),
                zone = shape.node_of(i) % 3,
            )
        })
        .collect();
    format!(
        r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"app-{s}-x7k2p","generateName":"app-{s}-","namespace":"ns-{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-12-01T09:00:00Z","generation":3,"labels":{{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"app-{s}","app":"app-{s}"}},"annotations":{{"endpoints.kubernetes.io/last-change-trigger-time":"2026-12-01T10:00:09Z"}},"ownerReferences":[{{"apiVersion":"v1","kind":"Service","name":"app-{s}","uid":"{owner}","controller":true,"blockOwnerDeletion":true}}],"managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"discovery.k8s.io/v1","time":"2026-12-01T10:00:09Z","fieldsType":"FieldsV1","fieldsV1":{{"f:addressType":{{}},"f:endpoints":{{}},"f:metadata":{{"f:annotations":{{".":{{}},"f:endpoints.kubernetes.io/last-change-trigger-time":{{}}}},"f:generateName":{{}},"f:labels":{{".":{{}},"f:app":{{}},"f:endpointslice.kubernetes.io/managed-by":{{}},"f:kubernetes.io/service-name":{{}}}},"f:ownerReferences":{{".":{{}},"k:{{\"uid\":\"{owner}\"}}":{{}}}}}},"f:ports":{{}}}}}}]}},"addressType":"IPv4","endpoints":[{endpoints}],"ports":[{{"name":"http","protocol":"TCP","port":8080}},{{"name":"grpc","protocol":"TCP","port":9090}}]}}"#,
        uid = uid(4, s),
        owner = uid(3, s),
        rv = 600_000 + s,
        endpoints = endpoints.join(","),
    )
}

pub fn namespace_json(n: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"ns-{n}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-12-01T08:00:00Z","labels":{{"istio.io/dataplane-mode":"ambient","kubernetes.io/metadata.name":"ns-{n}","team":"team-{team}"}},"managedFields":[{{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-01T08:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:istio.io/dataplane-mode":{{}},"f:kubernetes.io/metadata.name":{{}},"f:team":{{}}}}}}}}}}]}},"spec":{{"finalizers":["kubernetes"]}},"status":{{"phase":"Active"}}}}"#,
        uid = uid(5, n),
        rv = 100_000 + n,
        team = n % 40,
    )
}

/// A Node as the kubelet reports it (status with capacity, conditions, addresses and the
/// images it holds, which dominate its size).
pub fn node_json(n: usize) -> String {
    let images: Vec<String> = (0..25)
        .map(|k| {
            format!(
                r#"{{"names":["registry.example.com/shop/app-{k}@sha256:{d:064x}","registry.example.com/shop/app-{k}:1.4.2"],"sizeBytes":{size}}}"#,
                d = (k as u128 + 1) * 0x1234_5678_9abc_def1,
                size = 20_000_000 + k * 1_000_003,
            )
        })
        .collect();
    let conditions: Vec<String> = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ]
    .iter()
    .map(|(t, s, r)| {
        format!(
            r#"{{"type":"{t}","status":"{s}","lastHeartbeatTime":"2026-12-07T10:00:00Z","lastTransitionTime":"2026-12-01T08:00:00Z","reason":"{r}","message":"kubelet is posting ready status"}}"#
        )
    })
    .collect();
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"node-{n}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-12-01T08:00:00Z","labels":{{"beta.kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","kubernetes.io/hostname":"node-{n}","kubernetes.io/os":"linux","node.kubernetes.io/instance-type":"m6i.4xlarge","topology.kubernetes.io/region":"eu-west-1","topology.kubernetes.io/zone":"zone-{zone}"}},"annotations":{{"node.alpha.kubernetes.io/ttl":"0","volumes.kubernetes.io/controller-managed-attach-detach":"true"}}}},"spec":{{"podCIDR":"10.{a}.{b}.0/24","podCIDRs":["10.{a}.{b}.0/24"],"providerID":"aws:///eu-west-1a/i-{n:017x}"}},"status":{{"capacity":{{"cpu":"16","ephemeral-storage":"104845292Ki","hugepages-1Gi":"0","hugepages-2Mi":"0","memory":"65021876Ki","pods":"250"}},"allocatable":{{"cpu":"15890m","ephemeral-storage":"95551679124","hugepages-1Gi":"0","hugepages-2Mi":"0","memory":"64004020Ki","pods":"250"}},"conditions":[{conditions}],"addresses":[{{"type":"InternalIP","address":"172.16.{a}.{b}"}},{{"type":"Hostname","address":"node-{n}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":10250}}}},"nodeInfo":{{"machineID":"{d:032x}","systemUUID":"{d:032x}","bootID":"{d:032x}","kernelVersion":"6.1.0","osImage":"Debian GNU/Linux 12","containerRuntimeVersion":"containerd://1.7.22","kubeletVersion":"v1.31.2","kubeProxyVersion":"v1.31.2","operatingSystem":"linux","architecture":"amd64"}},"images":[{images}]}}}}"#,
        uid = uid(6, n),
        rv = 200_000 + n,
        zone = n % 3,
        a = n / 256,
        b = n % 256,
        d = n as u128 * 0x9e37_79b9,
        conditions = conditions.join(","),
        images = images.join(","),
    )
}

/// The Istio objects: a waypoint for `ns-0`, mesh-wide STRICT mTLS and a DENY of
/// plaintext, an ALLOW policy in every 20th namespace, ten ServiceEntries.
pub fn istio_json(shape: &Shape) -> Vec<String> {
    let mut out = vec![
        r#"{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"waypoint","namespace":"ns-0","labels":{"istio.io/waypoint-for":"service"}},"spec":{"gatewayClassName":"istio-waypoint","listeners":[{"name":"mesh","port":15008,"protocol":"HBONE"}]}}"#.to_string(),
        r#"{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"default","namespace":"istio-system"},"spec":{"mtls":{"mode":"STRICT"}}}"#.to_string(),
        r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"deny-plaintext","namespace":"istio-system"},"spec":{"action":"DENY","rules":[{"from":[{"source":{"notPrincipals":["*"]}}]}]}}"#.to_string(),
    ];
    for n in (0..shape.namespaces()).step_by(20) {
        let s = n * SERVICES_PER_NAMESPACE;
        out.push(format!(
            r#"{{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{{"name":"app-{s}","namespace":"ns-{n}"}},"spec":{{"selector":{{"matchLabels":{{"app":"app-{s}"}}}},"action":"ALLOW","rules":[{{"from":[{{"source":{{"namespaces":["ns-{n}","ns-{m}"]}}}}]}}]}}}}"#,
            m = (n + 1) % shape.namespaces(),
        ));
    }
    for e in 0..10 {
        out.push(format!(
            r#"{{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{{"name":"external-{e}","namespace":"istio-system"}},"spec":{{"hosts":["api-{e}.example.com"],"location":"MESH_EXTERNAL","resolution":"DNS","ports":[{{"number":443,"name":"https","protocol":"TLS"}}]}}}}"#
        ));
    }
    out
}

/// Decodes a document the way the Kubernetes source does: a Kubernetes kind into its weft
/// type by serde (as kube-runtime's watcher does), an Istio kind through
/// `Object::from_json_checked`.
pub fn decode(json: &str) -> Candidate {
    fn typed<T: serde::de::DeserializeOwned + Into<Object>>(json: &str) -> Candidate {
        match serde_json::from_str::<T>(json) {
            Ok(object) => Candidate::from(object.into()),
            Err(e) => panic!("generated object does not decode: {e}: {json}"),
        }
    }
    let kind = json
        .split_once(r#""kind":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(kind, _)| kind)
        .unwrap_or_default();
    match kind {
        "Pod" => typed::<Pod>(json),
        "Service" => typed::<Service>(json),
        "EndpointSlice" => typed::<EndpointSlice>(json),
        "Namespace" => typed::<Namespace>(json),
        "Node" => typed::<Node>(json),
        _ => {
            let value: serde_json::Value = serde_json::from_str(json).expect("generated JSON");
            match Object::from_json_checked(value) {
                Ok(Some((object, warnings))) => {
                    assert!(warnings.is_empty(), "{warnings:?}");
                    Candidate::from(object)
                }
                other => panic!("generated object refused: {other:?}: {json}"),
            }
        }
    }
}
