//! `weftctl graph`: the service graph — who calls whom, how often, how many fail, whether
//! over mutual TLS — drawn from Istio's standard metrics, read from Prometheus or straight
//! from the agents' and waypoints' metrics ports. Reading ([`sample`], [`fetch`]), the graph
//! ([`model`]), its layout ([`layout`]) and drawing ([`render`]) are separate steps; only
//! reading touches the network.
mod fetch;
mod layout;
mod model;
mod render;
mod sample;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use self::model::Unit;
use self::sample::{Metric, Sample};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An SVG drawing, laid out by weftctl (no Graphviz needed).
    #[default]
    Svg,
    /// Graphviz's DOT language.
    Dot,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Prometheus' URL (`http://prometheus.istio-system:9090`): rates are its instant
    /// queries of `rate(istio_requests_total[WINDOW])` and of the TCP byte counters.
    #[arg(long, conflicts_with = "scrape", required_unless_present = "scrape")]
    pub prometheus: Option<String>,
    /// The window of Prometheus' `rate()`.
    #[arg(long, default_value = "1m")]
    pub window: String,
    /// Metrics URLs of agents and waypoints (`http://NODE_IP:15020`, path
    /// `/stats/prometheus` unless given), read twice --interval apart for rates.
    #[arg(long, num_args = 1.., value_name = "URL")]
    pub scrape: Vec<String>,
    /// Seconds between the two readings of --scrape.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// With --scrape: one reading, and the graph shows totals since the counters started
    /// instead of rates.
    #[arg(long, requires = "scrape")]
    pub totals: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Where to write it (standard output if not given).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

fn from_prometheus(url: &str, window: &str) -> anyhow::Result<Vec<Sample>> {
    let (authority, base) = fetch::split_url(url, "")?;
    let base = base.trim_end_matches('/');
    let mut samples = Vec::new();
    for metric in Metric::ALL {
        let query = sample::rate_query(metric, window);
        let body = fetch::get(
            authority,
            &format!("{base}/api/v1/query?query={}", fetch::encode(&query)),
        )?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered {query} with something not JSON"))?;
        samples.extend(
            sample::from_prometheus(metric, &answer).with_context(|| format!("{url}: {query}"))?,
        );
    }
    Ok(samples)
}

fn scrape_all(urls: &[String]) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for url in urls {
        let (authority, path) = fetch::split_url(url, fetch::METRICS_PATH)?;
        let page = fetch::get(authority, path)?;
        samples.extend(sample::from_exposition(&page).with_context(|| format!("reading {url}"))?);
    }
    Ok(samples)
}

/// The samples and what their values are.
fn read(args: &GraphArgs) -> anyhow::Result<(Vec<Sample>, Unit)> {
    if let Some(url) = &args.prometheus {
        return Ok((from_prometheus(url, &args.window)?, Unit::PerSecond));
    }
    if args.totals {
        return Ok((scrape_all(&args.scrape)?, Unit::Total));
    }
    if !(args.interval.is_finite() && (0.1..=3600.0).contains(&args.interval)) {
        bail!(
            "--interval {} is not between 0.1 and 3600 seconds",
            args.interval
        );
    }
    let first = scrape_all(&args.scrape)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.interval));
    let second = scrape_all(&args.scrape)?;
    // The time between the readings as it was, not as asked (reading takes time too).
    let seconds = started.elapsed().as_secs_f64();
    Ok((sample::rates(&first, &second, seconds), Unit::PerSecond))
}

pub fn run(args: &GraphArgs) -> anyhow::Result<()> {
    let (samples, unit) = read(args)?;
    let graph = model::build(&samples, unit);
    let text = match args.format {
        Format::Svg => render::svg(&graph),
        Format::Dot => render::dot(&graph),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} ({} nodes, {} edges)",
                path.display(),
                graph.nodes.len(),
                graph.edges.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
