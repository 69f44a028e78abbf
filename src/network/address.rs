//! IPv4 subnets and leases. netavark leaves address allocation to its caller (`static_ips`);
//! berth hands out the lowest free host address, skipping the gateway, as podman's IPAM does.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// An IPv4 subnet in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `10.90.0.0/24`; the address must be the subnet's own (no host bits), the prefix
    /// 8–30 (room for a gateway and a container).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not an IPv4 CIDR such as 10.90.0.0/24"))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| (8..=30).contains(prefix))
            .ok_or_else(|| format!("{text:?}: the prefix length must be 8 to 30"))?;
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            return Err(format!(
                "{text:?} has host bits set (did you mean {}?)",
                Subnet {
                    network: Ipv4Addr::from(u32::from(network) & subnet.mask()),
                    prefix
                }
            ));
        }
        Ok(subnet)
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The first host address: the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.network) | !self.mask()
    }

    /// Whether `address` is a usable host address of this subnet.
    pub fn is_host(&self, address: Ipv4Addr) -> bool {
        let value = u32::from(address);
        self.contains(address) && value != u32::from(self.network) && value != self.broadcast()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The lowest host address of `subnet` that is neither the gateway nor taken.
pub fn allocate(subnet: &Subnet, gateway: Ipv4Addr, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (u32::from(subnet.network) + 1..subnet.broadcast())
        .map(Ipv4Addr::from)
        .find(|address| *address != gateway && !taken.contains(address))
}

/// The subnets the host routes (`/proc/net/route`, the default route left out).
pub fn host_routes() -> Vec<Subnet> {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    parse_route_table(&table)
}

fn parse_route_table(table: &str) -> Vec<Subnet> {
    let hex = |text: &str| u32::from_str_radix(text, 16).ok().map(u32::from_be);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = hex(fields.get(1)?)?;
            let mask = hex(fields.get(7)?)?;
            (mask != 0).then(|| Subnet {
                network: Ipv4Addr::from(destination & mask),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// The /24s berth picks subnets from: 10.90.0.0/24 to 10.99.255.0/24, clear of podman's
/// defaults (10.88.0.0/16 and 10.89.x.0/24).
const CANDIDATES: usize = 10 * 256;

fn candidate(index: usize) -> Subnet {
    let index = index % CANDIDATES;
    Subnet {
        network: Ipv4Addr::new(10, 90 + (index / 256) as u8, (index % 256) as u8, 0),
        prefix: 24,
    }
}

/// The first candidate from `start` on that overlaps none of `used`.
pub fn free_subnet(start: usize, used: &[Subnet]) -> Option<Subnet> {
    (start..start + CANDIDATES)
        .map(candidate)
        .find(|subnet| !used.iter().any(|taken| taken.overlaps(subnet)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_what_netavark_cannot_use() {
        let subnet = Subnet::parse("10.90.3.0/24").unwrap();
        assert_eq!(subnet.to_string(), "10.90.3.0/24");
        assert_eq!(subnet.first_host(), Ipv4Addr::new(10, 90, 3, 1));
        assert!(Subnet::parse("10.90.3.1/24")
            .unwrap_err()
            .contains("host bits"));
        assert!(Subnet::parse("10.90.3.0/31").is_err());
        assert!(Subnet::parse("banana").is_err());
        assert!(Subnet::parse("10.90.3.0/x").is_err());
    }

    #[test]
    fn overlapping_subnets_are_detected_both_ways() {
        let wide = Subnet::parse("10.90.0.0/16").unwrap();
        let narrow = Subnet::parse("10.90.7.0/24").unwrap();
        let other = Subnet::parse("10.91.0.0/24").unwrap();
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!narrow.overlaps(&other));
    }

    #[test]
    fn leases_take_the_lowest_free_host_address_but_not_the_gateway() {
        let subnet = Subnet::parse("10.90.0.0/30").unwrap();
        let gateway = subnet.first_host();
        let mut taken = HashSet::new();
        let first = allocate(&subnet, gateway, &taken).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 90, 0, 2));
        taken.insert(first);
        assert_eq!(allocate(&subnet, gateway, &taken), None, "the /30 is full");
    }

    #[test]
    fn a_free_subnet_avoids_routes_and_other_networks() {
        let used = vec![
            Subnet::parse("10.90.0.0/24").unwrap(),
            Subnet::parse("10.90.1.0/24").unwrap(),
        ];
        assert_eq!(free_subnet(0, &used).unwrap().to_string(), "10.90.2.0/24");
        assert_eq!(free_subnet(300, &[]).unwrap().to_string(), "10.91.44.0/24");
    }

    #[test]
    fn the_route_table_is_read_as_the_kernel_writes_it() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_route_table(table),
            vec![Subnet::parse("192.0.2.0/24").unwrap()]
        );
    }
}
