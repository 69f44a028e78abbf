//! Host ports berthd holds open while a container runs (podman's port reservation, which
//! conmon does there): another program cannot take a published port, a port already taken
//! fails the start naming it, and host port 0 picks a free port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use super::PortMapping;

/// An open socket holding one published port.
#[derive(Debug)]
pub enum Reservation {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds every mapping's host port (all or none); returns the mappings with the ports
/// actually taken, and the sockets that hold them.
pub fn reserve(mappings: &[PortMapping]) -> Result<(Vec<PortMapping>, Vec<Reservation>), String> {
    let mut taken = Vec::new();
    let mut reservations = Vec::new();
    for mapping in mappings {
        let ip: IpAddr = if mapping.host_ip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            mapping
                .host_ip
                .parse()
                .map_err(|_| format!("host ip {:?} is not an address", mapping.host_ip))?
        };
        let address = SocketAddr::new(ip, mapping.host_port);
        let in_use = |e: std::io::Error| {
            format!("host port {} cannot be published: {e}", mapping.host_side())
        };
        let (port, reservation) = match mapping.protocol.as_str() {
            "udp" => {
                let socket = UdpSocket::bind(address).map_err(in_use)?;
                let port = socket.local_addr().map_err(in_use)?.port();
                (port, Reservation::Udp(socket))
            }
            _ => {
                let listener = TcpListener::bind(address).map_err(in_use)?;
                let port = listener.local_addr().map_err(in_use)?.port();
                (port, Reservation::Tcp(listener))
            }
        };
        let mut mapping = mapping.clone();
        mapping.host_port = port;
        taken.push(mapping);
        reservations.push(reservation);
    }
    Ok((taken, reservations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(port: u16) -> PortMapping {
        PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 80,
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn port_zero_picks_a_free_port_and_a_taken_port_is_named() {
        let (taken, held) = reserve(&[mapping(0)]).unwrap();
        assert_ne!(taken[0].host_port, 0);
        let error = reserve(&[mapping(taken[0].host_port)]).unwrap_err();
        assert!(
            error.contains(&format!("127.0.0.1:{}/tcp", taken[0].host_port)),
            "{error}"
        );
        drop(held);
        assert!(reserve(&[mapping(taken[0].host_port)]).is_ok());
    }
}
