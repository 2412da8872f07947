//! Logs of weft's binaries: `RUST_LOG` filters (default `info`), colours only on a terminal.
//! Audit records ([`crate::audit::TARGET`]) are kept at INFO whatever `RUST_LOG` says,
//! unless it names their target itself.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let names_audit = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(crate::audit::TARGET));
    let filter = match format!("{}=info", crate::audit::TARGET).parse() {
        Ok(directive) if !names_audit => filter.add_directive(directive),
        _ => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}
