//! weft-cni: the binary the container runtime runs, as the CNI specification says: the
//! command and the container in the environment, the network configuration on stdin, the
//! result (or an error) as JSON on stdout. See the crate's documentation (`lib.rs`).
use std::io::Read;
use std::process::ExitCode;

use weft_cni::client::SocketAgent;
use weft_cni::plugin::{run, socket_of};
use weft_cni::spec::{self, Command, DEFAULT_VERSION, Invocation};

fn main() -> ExitCode {
    let invocation = match Invocation::from_vars(|name| std::env::var(name).ok()) {
        Ok(invocation) => invocation,
        Err(error) => return fail(DEFAULT_VERSION, &error),
    };
    let mut stdin = Vec::new();
    if invocation.command != Command::Version
        && let Err(e) = std::io::stdin().read_to_end(&mut stdin)
    {
        let error = spec::CniError::new(spec::codes::IO_FAILURE, "reading stdin failed")
            .with_details(e.to_string());
        return fail(DEFAULT_VERSION, &error);
    }
    let socket = socket_of(spec::net_conf(&stdin).ok().as_ref());
    let (version, outcome) = run(&invocation, &stdin, &SocketAgent { socket });
    match outcome {
        Ok(Some(printed)) => {
            println!("{printed}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => fail(&version, &error),
    }
}

fn fail(version: &str, error: &spec::CniError) -> ExitCode {
    // stdout is the runtime's (it shows `msg` in the pod's events); stderr its log.
    eprintln!("weft-cni: {error}");
    println!("{}", error.to_json(version));
    ExitCode::FAILURE
}
