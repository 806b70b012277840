//! `kokoa-wireguard NAME [--foreground]`: the built-in userspace WireGuard interface as a
//! program of its own, used like `wireguard-go`: it creates interface NAME and its control
//! socket, goes to the background (unless `--foreground` or `WG_PROCESS_FOREGROUND=1`), and
//! is then configured with `wg` and `ip`. It exits when the interface is deleted.
//!
//! ```text
//! kokoa-wireguard wg0
//! wg setconf wg0 wg0.conf
//! ip address add 10.0.1.1/24 dev wg0 && ip link set wg0 up
//! ```

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "usage: kokoa-wireguard INTERFACE [--foreground]\n\n\
             Creates INTERFACE, a userspace WireGuard interface configured with wg and ip,\n\
             and serves it until it is deleted.\n\n\
             example:\n  kokoa-wireguard wg0 && wg setconf wg0 wg0.conf && ip link set wg0 up"
        );
        std::process::exit(if args.is_empty() { 2 } else { 0 });
    }
    kokoa_wg::userspace::run_daemon(&args)
}
