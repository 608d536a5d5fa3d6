//! An application exposing manna's metrics to Prometheus.
//!
//! Installs `metrics-exporter-prometheus` on `--addr` (default
//! `127.0.0.1:9898`), encrypts and decrypts a few values, takes and releases
//! a lock, computes the key status (which sets the key gauges), then prints
//! what Prometheus scrapes from `/metrics`. With `--serve` it keeps serving
//! until Ctrl-C.
//!
//! ```sh
//! cargo run --example prometheus --features lock -- --once
//! cargo run --example prometheus --features lock -- --serve --addr 0.0.0.0:9898
//! ```

// An example program: it prints to stdout on purpose.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

mod wiring;

fn main() -> Result<(), Box<dyn Error>> {
    let mut addr: SocketAddr = "127.0.0.1:9898".parse()?;
    let mut serve = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => serve = false,
            "--serve" => serve = true,
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            other => {
                return Err(format!("unknown argument {other:?} (--once, --serve, --addr)").into())
            }
        }
    }

    // The exporter runs its HTTP listener on a thread of its own.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let status = wiring::exercise()?;
    eprintln!(
        "primary key {}, {} warning(s)",
        status
            .primary_key_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string()),
        status.warnings.len()
    );

    print!("{}", scrape(addr)?);
    if serve {
        eprintln!("serving http://{addr}/metrics until Ctrl-C");
        loop {
            std::thread::park();
        }
    }
    Ok(())
}

/// `GET /metrics`, as Prometheus does (HTTP/1.0: the body is not chunked).
fn scrape(addr: SocketAddr) -> Result<String, Box<dyn Error>> {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                let (head, body) = response
                    .split_once("\r\n\r\n")
                    .ok_or("malformed HTTP response")?;
                if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
                    return Err(
                        format!("scrape failed: {}", head.lines().next().unwrap_or("")).into(),
                    );
                }
                return Ok(body.to_owned());
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err(format!("cannot reach the exporter on {addr}: {last:?}").into())
}
