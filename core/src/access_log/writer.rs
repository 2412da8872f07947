//! The writing end of access logs: the sinks in force ([`AccessLogSink`]), each line
//! rendered once per sink and handed off without waiting.
//!
//! [`AccessLog::active_for`] answers, for the registry snapshot in force, where lines go;
//! it caches what it built, so a request costs a comparison of the snapshot's version. A
//! change of sinks is a new generation: the file writer reopens its files (so a rotated
//! file is picked up by touching the config), OTLP exporters are started anew, and nothing
//! is written when no sink is left (off, Istio's default). File lines go through a bounded
//! queue to one writer thread per process, OTLP records through each exporter's bounded
//! queue ([`super::otlp`]); a line that does not fit is dropped and counted
//! (`istio_weft_access_log_lines_dropped_total`).
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;

use super::connection::ConnectionEntry;
use super::encoding::Encoding;
use super::format::{Format, HttpEntry};
use super::otlp::{AttributeValue, LogExporter, LogExporterConfig, Record};
use super::sink::{AccessLogSink, OtlpSink};

/// Lines queued for the file writer before new ones are dropped.
pub const QUEUE_LINES: usize = 4096;

struct Line {
    generation: u64,
    path: Arc<Path>,
    text: String,
}

enum Output {
    File {
        generation: u64,
        path: Arc<Path>,
        encoding: Encoding,
        format: Format,
    },
    Otlp {
        exporter: LogExporter,
        body: Format,
        labels: Format,
    },
}

/// Access logging as the configuration has it now: the sinks, ready to write to.
pub struct ActiveLog {
    sinks: Vec<AccessLogSink>,
    /// Where each OTLP sink's collector was found (or why not), in order.
    endpoints: Vec<Result<String, String>>,
    outputs: Vec<Output>,
    sender: SyncSender<Line>,
    dropped: Counter,
}

impl ActiveLog {
    /// Whether lines are written anywhere.
    pub fn is_on(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The sinks this was built from.
    pub fn sinks(&self) -> &[AccessLogSink] {
        &self.sinks
    }

    fn queue(&self, generation: u64, path: &Arc<Path>, text: String) {
        let line = Line {
            generation,
            path: path.clone(),
            text,
        };
        // Full, or the writer is gone: either way the line is lost, and counted.
        if self.sender.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// One request's (or TCP stream's) line, to every sink in its format.
    pub fn write_http(&self, entry: &HttpEntry) {
        for output in &self.outputs {
            match output {
                Output::File {
                    generation,
                    path,
                    format,
                    ..
                } => self.queue(*generation, path, format.render(entry)),
                Output::Otlp {
                    exporter,
                    body,
                    labels,
                } => exporter.send(Record {
                    time: Some(entry.start),
                    body: body.render(entry),
                    attributes: labels
                        .render_fields(entry)
                        .into_iter()
                        .map(|(k, v)| (k, AttributeValue::Text(v)))
                        .collect(),
                    trace_id: entry.trace_id.clone(),
                }),
            }
        }
    }

    /// A node agent's line for one connection (ztunnel's fields): in each file's encoding;
    /// as an OTLP record, the text line as body and its fields as attributes.
    pub fn write_connection(&self, entry: &ConnectionEntry) {
        for output in &self.outputs {
            match output {
                Output::File {
                    generation,
                    path,
                    encoding,
                    ..
                } => self.queue(*generation, path, entry.render(*encoding)),
                Output::Otlp { exporter, .. } => exporter.send(Record {
                    time: SystemTime::now().checked_sub(entry.duration),
                    body: entry.render(Encoding::Text),
                    attributes: entry.attributes(),
                    trace_id: None,
                }),
            }
        }
    }
}

struct State {
    version: u64,
    log: Arc<ActiveLog>,
}

/// The sinks of one Telemetry provider set, as last built.
struct Built {
    version: u64,
    log: Arc<ActiveLog>,
}

/// A process's access log.
pub struct AccessLog {
    state: ArcSwapOption<State>,
    /// Sink sets other than the mesh default's (Telemetry resources naming providers),
    /// each built once and kept while its sinks and collectors stay the same.
    named: Mutex<HashMap<Vec<AccessLogSink>, Built>>,
    /// Serializes rebuilds; the last generation given out.
    rebuild: Mutex<u64>,
    sender: OnceLock<SyncSender<Line>>,
    capacity: usize,
    dropped: Counter,
    /// OTLP resource attributes (`service.name`, `k8s.node.name`, …).
    resource: Mutex<Vec<(String, String)>>,
}

impl AccessLog {
    /// An access log counting dropped lines in `dropped`.
    pub fn new(dropped: Counter) -> Arc<Self> {
        Self::with_capacity(dropped, QUEUE_LINES)
    }

    pub fn with_capacity(dropped: Counter, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: ArcSwapOption::empty(),
            named: Mutex::new(HashMap::new()),
            rebuild: Mutex::new(0),
            sender: OnceLock::new(),
            capacity,
            dropped,
            resource: Mutex::new(Vec::new()),
        })
    }

    /// The resource attributes OTLP records carry (as the span exporter's: `service.name`
    /// first); taken by exporters started after this.
    pub fn set_resource(&self, attributes: Vec<(String, String)>) {
        *crate::sync::lock(&self.resource) = attributes;
    }

    /// Where lines go for configuration `version` (a registry snapshot's): the cached
    /// answer while the version is the same, else `sinks()` with each OTLP collector
    /// found by `resolve` (its `http://address:port`), rebuilt only when that differs
    /// from what is in force. `None` when no sink is on.
    pub fn active_for(
        &self,
        version: u64,
        sinks: impl FnOnce() -> Vec<AccessLogSink>,
        resolve: impl Fn(&OtlpSink) -> Result<String, String>,
    ) -> Option<Arc<ActiveLog>> {
        if let Some(state) = &*self.state.load()
            && state.version == version
        {
            return state.log.is_on().then(|| state.log.clone());
        }
        let log = self.configure(sinks(), resolve);
        self.state.store(Some(Arc::new(State {
            version,
            log: log.clone(),
        })));
        log.is_on().then_some(log)
    }

    /// Where lines go for a set of sinks other than the mesh default's (a Telemetry
    /// resource's providers) under configuration `version`: built once per set and kept
    /// while the version is the same, or while its OTLP collectors (found by `resolve`)
    /// stay where they were. `None` when none of them can be written to.
    pub fn active_sinks(
        &self,
        version: u64,
        sinks: &[AccessLogSink],
        resolve: impl Fn(&OtlpSink) -> Result<String, String>,
    ) -> Option<Arc<ActiveLog>> {
        let mut named = crate::sync::lock(&self.named);
        if let Some(built) = named.get_mut(sinks) {
            if built.version != version {
                let endpoints = endpoints(sinks, &resolve);
                if built.log.endpoints != endpoints {
                    built.log = self.build(sinks.to_vec(), endpoints);
                }
                built.version = version;
            }
            return built.log.is_on().then(|| built.log.clone());
        }
        let log = self.build(sinks.to_vec(), endpoints(sinks, &resolve));
        named.insert(
            sinks.to_vec(),
            Built {
                version,
                log: log.clone(),
            },
        );
        log.is_on().then_some(log)
    }

    /// Puts `sinks` in force (a live reconfiguration), unless they are those in force.
    pub fn configure(
        &self,
        sinks: Vec<AccessLogSink>,
        resolve: impl Fn(&OtlpSink) -> Result<String, String>,
    ) -> Arc<ActiveLog> {
        let endpoints = endpoints(&sinks, &resolve);
        if let Some(state) = &*self.state.load()
            && state.log.sinks == sinks
            && state.log.endpoints == endpoints
        {
            return state.log.clone();
        }
        let log = self.build(sinks, endpoints);
        let version = self.state.load().as_ref().map_or(u64::MAX, |s| s.version);
        self.state.store(Some(Arc::new(State {
            version,
            log: log.clone(),
        })));
        log
    }

    /// Writers for `sinks`, each OTLP sink's collector at its entry of `endpoints`: a new
    /// generation (files reopened by the writer thread).
    fn build(
        &self,
        sinks: Vec<AccessLogSink>,
        endpoints: Vec<Result<String, String>>,
    ) -> Arc<ActiveLog> {
        let mut generation = crate::sync::lock(&self.rebuild);
        *generation += 1;
        let resource = crate::sync::lock(&self.resource).clone();
        let mut outputs = Vec::with_capacity(sinks.len());
        let mut found = endpoints.iter();
        for sink in &sinks {
            match sink {
                AccessLogSink::File {
                    path,
                    encoding,
                    format,
                } => {
                    if path.is_empty() {
                        continue;
                    }
                    outputs.push(Output::File {
                        generation: *generation,
                        path: Arc::<Path>::from(PathBuf::from(path)),
                        encoding: *encoding,
                        format: parse_or_default(*encoding, format),
                    });
                }
                AccessLogSink::Otlp(otlp) => {
                    let endpoint = match found.next() {
                        Some(Ok(endpoint)) => endpoint,
                        Some(Err(reason)) => {
                            tracing::warn!(service = %otlp.service, %reason, "the OTLP access log collector cannot be reached; its records are not sent");
                            continue;
                        }
                        None => continue,
                    };
                    let mut config = LogExporterConfig::new(endpoint.clone(), &otlp.log_name);
                    config.resource = resource.clone();
                    match LogExporter::start(config, self.dropped.clone()) {
                        Ok(exporter) => outputs.push(Output::Otlp {
                            exporter,
                            body: parse_or_default(Encoding::Text, &otlp.format),
                            labels: Format::labels(&otlp.labels),
                        }),
                        Err(error) => {
                            tracing::warn!(%error, "cannot export access logs over OTLP");
                        }
                    }
                }
            }
        }
        Arc::new(ActiveLog {
            sinks,
            endpoints,
            outputs,
            sender: self.sender().clone(),
            dropped: self.dropped.clone(),
        })
    }

    fn sender(&self) -> &SyncSender<Line> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = sync_channel(self.capacity);
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(&receiver));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the access log writer; lines are dropped");
            }
            sender
        })
    }
}

/// Where each OTLP sink's collector is (or why it cannot be reached), in order.
fn endpoints(
    sinks: &[AccessLogSink],
    resolve: &impl Fn(&OtlpSink) -> Result<String, String>,
) -> Vec<Result<String, String>> {
    sinks
        .iter()
        .filter_map(|sink| match sink {
            AccessLogSink::Otlp(otlp) => Some(resolve(otlp)),
            AccessLogSink::File { .. } => None,
        })
        .collect()
}

/// `format` for `encoding`, or Istio's default when it does not parse (as Istio does;
/// validation warns about it).
fn parse_or_default(encoding: Encoding, format: &str) -> Format {
    Format::parse(encoding, format).unwrap_or_else(|error| {
        tracing::warn!(%error, "access log format not usable; Istio's default is used");
        Format::default_for(encoding)
    })
}

/// The writer thread: the files of the newest generation open, reopened when lines come
/// from a newer one; flushed whenever the queue is empty. Ends when every sender is gone.
fn write_lines(receiver: &Receiver<Line>) {
    let mut generation = 0;
    let mut open: HashMap<Arc<Path>, Option<BufWriter<File>>> = HashMap::new();
    while let Ok(line) = receiver.recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            // Lines of an older generation (requests that began before a change) go to
            // the files already open; only a newer generation reopens them.
            if line.generation > generation {
                for file in open.values_mut().flatten() {
                    let _ = file.flush();
                }
                open.clear();
                generation = line.generation;
            }
            let file = open.entry(line.path.clone()).or_insert_with(|| {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&line.path)
                    .map(BufWriter::new);
                match file {
                    Ok(file) => Some(file),
                    Err(error) => {
                        tracing::warn!(path = %line.path.display(), %error, "cannot open the access log file");
                        None
                    }
                }
            });
            if let Some(file) = file {
                let written = file
                    .write_all(line.text.as_bytes())
                    .and_then(|()| file.write_all(b"\n"));
                if let Err(error) = written {
                    tracing::warn!(%error, "cannot write the access log");
                }
            }
            next = receiver.try_recv().ok();
        }
        for file in open.values_mut().flatten() {
            let _ = file.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_for_lines(path: &Path, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= count || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn file(path: &Path, encoding: Encoding, format: &str) -> AccessLogSink {
        AccessLogSink::File {
            path: path.to_str().expect("path").to_string(),
            encoding,
            format: format.to_string(),
        }
    }

    fn no_collector(_: &OtlpSink) -> Result<String, String> {
        Err("none".into())
    }

    fn entry(code: u16) -> HttpEntry {
        let mut entry = HttpEntry::started("GET", "/a", "web", http::Version::HTTP_11);
        entry.response_code = code;
        entry
    }

    #[test]
    fn lines_go_to_every_sink_and_follow_a_change_of_sinks() {
        let dir = tempfile::tempdir().expect("dir");
        let first = dir.path().join("a.log");
        let second = dir.path().join("b.log");
        let log = AccessLog::new(Counter::default());
        assert!(
            log.active_for(1, Vec::new, no_collector).is_none(),
            "off by default"
        );
        let active = log
            .active_for(
                2,
                || {
                    vec![
                        file(&first, Encoding::Text, "%RESPONSE_CODE%"),
                        file(&second, Encoding::Json, r#"{"code": "%RESPONSE_CODE%"}"#),
                    ]
                },
                no_collector,
            )
            .expect("on");
        active.write_http(&entry(200));
        assert_eq!(wait_for_lines(&first, 1), "200\n");
        assert_eq!(wait_for_lines(&second, 1), "{\"code\":200}\n");
        let same = log
            .active_for(3, || active.sinks().to_vec(), no_collector)
            .expect("on");
        assert!(Arc::ptr_eq(&same, &active), "same sinks, same writers");
        let moved = log
            .active_for(4, || vec![file(&second, Encoding::Text, "")], no_collector)
            .expect("on");
        moved.write_http(&entry(404));
        let text = wait_for_lines(&second, 2);
        assert!(text.ends_with("\"GET /a HTTP/1.1\" 404 - - - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"web\" \"-\" - - - - - -\n"), "{text}");
        assert!(
            log.active_for(5, Vec::new, no_collector).is_none(),
            "turned off"
        );
        assert_eq!(std::fs::read_to_string(&first).expect("read"), "200\n");
    }

    #[test]
    fn an_unreachable_collector_leaves_the_other_sinks_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.log");
        let log = AccessLog::new(Counter::default());
        let otlp = AccessLogSink::Otlp(OtlpSink {
            service: "otel.obs.svc.cluster.local".into(),
            port: 4317,
            log_name: "otel".into(),
            format: String::new(),
            labels: Vec::new(),
        });
        let active = log
            .active_for(
                1,
                || vec![otlp, file(&path, Encoding::Text, "%RESPONSE_CODE%")],
                no_collector,
            )
            .expect("on");
        active.write_http(&entry(503));
        assert_eq!(wait_for_lines(&path, 1), "503\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
        let dropped = Counter::default();
        let log = AccessLog::with_capacity(dropped.clone(), 0);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.log");
        let active = log
            .active_for(1, || vec![file(&path, Encoding::Text, "x")], no_collector)
            .expect("on");
        // A zero-capacity queue takes a line only while the writer waits on it: most of a
        // burst is dropped, and every line is either written or counted.
        for _ in 0..200 {
            active.write_http(&entry(200));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let written = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count() as u64;
            if written + dropped.get() == 200 || Instant::now() > deadline {
                assert_eq!(written + dropped.get(), 200);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dropped.get() > 0, "a burst past the queue is dropped");
    }
}
