//! The default executor against real servers, sockets and processes, on loopback and in
//! network namespaces the tests create.

mod command;
mod http;
mod network;
mod support;
mod tls;
