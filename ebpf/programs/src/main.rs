//! weft's kernel programs. Each is attached per pod by weft-agent, never node-wide:
//! cgroup programs on the pod's cgroup, `sk_lookup` on the pod's network namespace.
#![no_std]
#![no_main]

mod capture;
mod maps;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach a panic; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
