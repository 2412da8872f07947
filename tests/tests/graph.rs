//! `weftctl graph` on the lab: curl → productpage, which calls details (L4 only) and reviews
//! (through the namespace's waypoint), which calls ratings (through it too). While pages are
//! being asked for, weftctl reads the agents' and the waypoint's metrics twice, 4 s apart,
//! from node-1's network namespace, and draws the graph: the DOT has each hop with a rate
//! above zero, the waypoint between the callers and reviews and ratings, no 5xx, mTLS; the
//! SVG is one well-formed document naming every workload. (The lab names a Deployment's
//! workload after its pod, `productpage-v1-0`; the waypoint's pod is `waypoint-0`.) The SVG is also written to
//! `target/e2e-graph.svg` (what `docs/images/graph.svg` is made from).
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft_e2e::graph::{DotEdge, dot_edges, weftctl_graph, well_formed_svg};
use weft_e2e::{lab_up, pod_ip, testapp_json};

const PAGE: &str = "http://productpage.bookinfo.svc.cluster.local:9080/productpage";

fn edge<'a>(edges: &'a [DotEdge], from: &str, to: &str) -> &'a DotEdge {
    edges
        .iter()
        .find(|e| e.from == from && e.to == to)
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in {edges:#?}"))
}

#[test]
fn weftctl_graph_draws_productpage_to_reviews_through_the_waypoint_to_ratings() {
    let lab = lab_up("graph", "graph", 2, true);
    let mut urls: Vec<String> = lab
        .summary()
        .nodes
        .iter()
        .map(|n| format!("http://{}:15020", n.1))
        .collect();
    urls.push(format!(
        "http://{}:15020",
        pod_ip(&lab, "bookinfo/waypoint-0")
    ));
    // Every hop works before anything is measured.
    let first = testapp_json(
        &lab,
        "bookinfo/curl",
        &["get", PAGE, "--expect-status", "200"],
    );
    assert_eq!(first[0]["status"], 200, "{first:?}");

    // Pages keep coming while weftctl reads: bounded in count and time.
    let stop = AtomicBool::new(false);
    let traffic = {
        let (lab, stop) = (&lab, &stop);
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                let started = Instant::now();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed)
                    && sent < 2_000
                    && started.elapsed() < Duration::from_secs(60)
                {
                    testapp_json(lab, "bookinfo/curl", &["get", PAGE, "--count", "10"]);
                    sent += 10;
                }
                sent
            });
            let mut args = vec!["--scrape"];
            args.extend(urls.iter().map(String::as_str));
            args.extend(["--interval", "4", "--format", "dot"]);
            let dot = weftctl_graph(lab, "node-1", &args);
            let mut args = vec!["--scrape"];
            args.extend(urls.iter().map(String::as_str));
            args.extend(["--interval", "2"]);
            let svg = weftctl_graph(lab, "node-1", &args);
            stop.store(true, Ordering::Relaxed);
            let sent = sender.join().expect("the traffic thread");
            (dot, svg, sent)
        })
    };
    let (dot, svg, sent) = traffic;
    assert!(sent >= 10, "pages sent while reading: {sent}");
    let edges = dot_edges(&dot);

    let productpage = "workload/bookinfo/productpage-v1-0";
    let waypoint = "waypoint/bookinfo/waypoint-0";
    // productpage → reviews, through the waypoint; reviews → ratings, through it too.
    for (from, service, workload) in [
        (
            productpage,
            "service/bookinfo/reviews",
            "workload/bookinfo/reviews-v1-0",
        ),
        (
            "workload/bookinfo/reviews-v1-0",
            "service/bookinfo/ratings",
            "workload/bookinfo/ratings-v1-0",
        ),
    ] {
        let into = edges
            .iter()
            .find(|e| {
                e.from == from
                    && e.to == waypoint
                    && e.label.ends_with(&format!(
                        "(to {})",
                        service.rsplit('/').next().unwrap_or_default()
                    ))
            })
            .unwrap_or_else(|| panic!("no {from} -> {waypoint} for {service} in\n{dot}"));
        let out = edge(&edges, waypoint, service);
        let served = edge(&edges, service, workload);
        for hop in [into, out, served] {
            assert!(hop.rate() > 0.0, "{hop:?}");
            assert!(hop.label.contains(" req/s"), "{hop:?}");
            assert!(hop.label.contains("0.0% 5xx"), "{hop:?}");
            assert!(hop.label.contains("mTLS"), "{hop:?}");
        }
    }
    // details is L4 only: a TCP edge with bytes, counted by the agents.
    for (from, to) in [
        (productpage, "service/bookinfo/details"),
        ("service/bookinfo/details", "workload/bookinfo/details-v1-0"),
        ("workload/bookinfo/curl", "service/bookinfo/productpage"),
    ] {
        let tcp = edge(&edges, from, to);
        assert!(tcp.rate() > 0.0 && tcp.label.contains("B/s"), "{tcp:?}");
        assert!(tcp.label.contains("mTLS"), "{tcp:?}");
    }
    // The connections carrying the waypoint's requests are not drawn as the waypoint's
    // workload.
    assert!(!dot.contains("workload/bookinfo/waypoint-0"), "{dot}");

    well_formed_svg(&svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
    for name in [
        "curl",
        "productpage-v1-0",
        "details-v1-0",
        "reviews-v1-0",
        "ratings-v1-0",
        "waypoint-0",
        "reviews",
        "ratings",
    ] {
        assert!(svg.contains(&format!(">{name}</text>")), "{name} in\n{svg}");
    }
    assert!(svg.contains(" req/s · 0.0% 5xx</tspan>"), "{svg}");
    assert!(svg.contains(">mTLS</tspan>"), "{svg}");
    let keep = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-graph.svg");
    let _ = std::fs::write(&keep, &svg);
}
