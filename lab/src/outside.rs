//! The world outside the cluster, as a cloud provides it around one: a router in the fabric
//! namespace between the node network and an "internet" network, a host on that network
//! (`outside`, not part of the cluster), and the cloud's load balancer, which routes each
//! LoadBalancer Service's address to the nodes (spread over them per flow), where the lab's
//! kube-proxy rules take it to an endpoint (`Plan::kube_proxy_ruleset`).
//!
//! From `outside`, LoadBalancer addresses and NodePorts on the nodes' addresses are
//! reachable; pod and ClusterIP addresses are not (the router has no route to them).
use std::net::Ipv4Addr;

use weft_host::netns::{named_netns_path, run_in_netns};

use crate::LabError;
use crate::cmd::run_with_input;
use crate::plan::{OUTSIDE_NETWORK, OUTSIDE_ROUTER_IP, Plan, ROUTER_IP};

/// The commands (`ip -batch`) that give the fabric namespace its router: an address on
/// the node network's bridge, a link to the outside host, routes to each LoadBalancer
/// address through the nodes.
pub(crate) fn router_commands(plan: &Plan) -> Vec<String> {
    let Some(outside) = &plan.outside else {
        return Vec::new();
    };
    let mut commands = vec![
        format!("addr add {ROUTER_IP}/24 dev br0"),
        format!(
            "link add {} type veth peer name eth0 netns {}",
            outside.router_if, outside.netns
        ),
        format!("addr add {OUTSIDE_ROUTER_IP}/24 dev {}", outside.router_if),
        format!("link set {} up", outside.router_if),
    ];
    for service in &plan.services {
        let Some(address) = service.load_balancer_ip else {
            continue;
        };
        commands.push(load_balancer_route(address, plan));
    }
    commands
}

/// The cloud's load balancer: the address goes to every node (ECMP, per flow), whose
/// kube-proxy rules forward it to an endpoint (with externalTrafficPolicy Cluster, any
/// node can).
fn load_balancer_route(address: Ipv4Addr, plan: &Plan) -> String {
    let hops: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| format!("nexthop via {}", n.ip))
        .collect();
    format!("route add {address}/32 {}", hops.join(" "))
}

/// The outside host's network: its address and a default route through the router.
pub(crate) fn host_commands(plan: &Plan) -> Vec<String> {
    let Some(outside) = &plan.outside else {
        return Vec::new();
    };
    vec![
        "link set lo up".to_string(),
        format!("addr add {}/24 dev eth0", outside.ip),
        "link set eth0 up".to_string(),
        format!("route add default via {OUTSIDE_ROUTER_IP}"),
    ]
}

/// The way back from a node to the outside world.
pub(crate) fn node_route(plan: &Plan) -> Option<String> {
    plan.outside
        .as_ref()
        .map(|_| format!("route add {OUTSIDE_NETWORK}/24 via {ROUTER_IP}"))
}

/// Lets the fabric namespace forward between its links.
pub(crate) fn enable_forwarding(plan: &Plan) -> Result<(), LabError> {
    if plan.outside.is_none() {
        return Ok(());
    }
    run_in_netns(&named_netns_path(&plan.fabric_netns), || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(LabError::io("enabling IPv4 forwarding on the lab's router"))
    })?
}

/// Runs `ip -batch` in `netns`.
pub(crate) fn batch(netns: &str, commands: &[String]) -> Result<(), LabError> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut input = commands.join("\n");
    input.push('\n');
    run_with_input("ip", &["-n", netns, "-batch", "-"], Some(&input)).map(drop)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::Manifests;
    use crate::plan::LabOptions;

    #[test]
    fn load_balancers_are_routed_through_every_node() {
        let mut m = Manifests::default();
        m.add_yaml(
            "kind: Service\nmetadata: {name: ingress, namespace: istio-system}\nspec:\n  type: LoadBalancer\n  ports: [{name: http2, port: 80, targetPort: 8080}]\n",
            Path::new("s.yaml"),
        )
        .expect("yaml");
        let plan = Plan::build(&LabOptions::new("t").nodes(2), &m).expect("plan");
        let router = router_commands(&plan).join("\n");
        assert!(
            router.contains(
                "route add 198.51.100.10/32 nexthop via 10.240.0.10 nexthop via 10.240.0.11"
            ),
            "{router}"
        );
        assert!(
            router.contains("addr add 10.240.0.1/24 dev br0"),
            "{router}"
        );
        assert_eq!(
            node_route(&plan).as_deref(),
            Some("route add 203.0.113.0/24 via 10.240.0.1")
        );
        assert!(host_commands(&plan).contains(&"route add default via 203.0.113.1".to_string()));
    }
}
