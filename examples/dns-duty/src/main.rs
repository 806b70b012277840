//! Keeps `app.hoge.test`'s A records on the healthy ones of two edges, with
//! kokoa-runtime's DNS duty alone and a PowerDNS server:
//!
//! ```text
//! cargo run -p dns-duty
//! ```
//!
//! starts a PowerDNS server of its own on loopback (Debian's `pdns-server` and
//! `pdns-backend-sqlite3`), creates the zone `hoge.test` there, publishes the name through
//! edges at 192.0.2.10 and 192.0.2.11, then marks the second unhealthy and reconciles
//! again. With `POWERDNS_URL` and `POWERDNS_API_KEY` set it uses that server instead, and
//! its zone `hoge.test`, which must exist.
#![allow(clippy::print_stdout)] // a command-line example reports what it did

use std::net::IpAddr;

use dns_duty::{BoxError, Published};
use kokoa_dns::local::LocalPowerDns;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut local = None;
    let (url, key) = match (
        std::env::var("POWERDNS_URL"),
        std::env::var("POWERDNS_API_KEY"),
    ) {
        (Ok(url), Ok(key)) => (url, key),
        _ => {
            let server = LocalPowerDns::start().await?;
            server.create_zone("hoge.test").await?;
            println!(
                "PowerDNS started: API {}, DNS {}",
                server.api_url(),
                server.dns_address()
            );
            let pair = (server.api_url().to_owned(), server.api_key().to_owned());
            local = Some(server);
            pair
        }
    };
    let edges: [IpAddr; 2] = ["192.0.2.10".parse()?, "192.0.2.11".parse()?];
    let mut published = Published::new(&url, &key, "hoge.test", "app.hoge.test", &edges).await?;

    println!("both edges healthy:");
    for change in published.reconcile().await? {
        println!("  {change}");
    }
    published.set_healthy(1, false).await?;
    println!("edge-2 unhealthy:");
    for change in published.reconcile().await? {
        println!("  {change}");
    }
    drop(local);
    Ok(())
}
