//! Where a request comes from, and whether a key may be used from there. IPv4-mapped IPv6
//! addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports for an IPv4 peer) are
//! taken as the IPv4 address they carry (`IpAddr::to_canonical`).

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::HttpRequest;
pub use ipnet::IpNet;

/// At most this many entries in one allowlist.
pub const MAX_ALLOWED_IPS: usize = 50;

/// An address or a CIDR block, as written in settings and config.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = IpNet::from_str(s) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(s)
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))
}

/// The networks a key may be used from; empty means anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    /// Parses user input: every entry must be an IPv4/IPv6 address or CIDR block.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        if entries.len() > MAX_ALLOWED_IPS {
            return Err(format!("at most {MAX_ALLOWED_IPS} entries are allowed"));
        }
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let net = parse_net(e.as_ref())?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(AllowList(nets))
    }

    /// Reads the stored form (comma-separated). Entries that no longer parse are skipped:
    /// they were validated on the way in.
    pub fn from_stored(s: &str) -> AllowList {
        AllowList(
            s.split(',')
                .filter(|e| !e.trim().is_empty())
                .filter_map(|e| parse_net(e).ok())
                .collect(),
        )
    }

    /// The stored form; single addresses are written without a prefix length.
    pub fn to_stored(&self) -> String {
        self.entries().join(",")
    }

    /// Entries as shown in the API.
    pub fn entries(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.is_empty() || self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries to its left
/// were written by the client and prove nothing).
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if trusted_proxies.is_empty() || !trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in req.headers().get_all("x-forwarded-for").rev() {
        let Ok(value) = value.to_str() else {
            return Some(client);
        };
        for hop in value.rsplit(',') {
            let Ok(ip) = IpAddr::from_str(hop.trim()) else {
                return Some(client);
            };
            client = ip.to_canonical();
            if !trusted(&client) {
                return Some(client);
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allowlists_match_addresses_and_blocks_of_both_families() {
        let l = AllowList::parse(&["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"]).unwrap();
        assert!(l.allows(ip("203.0.113.7")));
        assert!(!l.allows(ip("203.0.113.8")));
        assert!(l.allows(ip("10.200.3.4")));
        assert!(!l.allows(ip("11.0.0.1")));
        assert!(l.allows(ip("2001:db8:1::5")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(l.allows(ip("::1")));
        assert!(
            l.allows(ip("::ffff:10.1.2.3")),
            "v4-mapped peers match v4 rules"
        );
        assert!(AllowList::default().allows(ip("198.51.100.1")));
    }

    #[test]
    fn allowlists_round_trip_in_canonical_form() {
        let l = AllowList::parse(&[" 10.1.2.3/8 ", "::ffff:192.0.2.1", "192.0.2.1"]).unwrap();
        assert_eq!(l.entries(), vec!["10.0.0.0/8", "192.0.2.1"]);
        assert_eq!(AllowList::from_stored(&l.to_stored()), l);
        assert!(AllowList::parse(&["10.0.0.0/33"]).is_err());
        assert!(AllowList::parse(&["example.com"]).is_err());
        assert!(AllowList::parse(&vec!["10.0.0.1"; MAX_ALLOWED_IPS + 1]).is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![
            parse_net("127.0.0.1").unwrap(),
            parse_net("10.0.0.0/8").unwrap(),
        ];
        let req = |xff: &str| {
            TestRequest::default()
                .peer_addr("127.0.0.1:5000".parse().unwrap())
                .insert_header(("x-forwarded-for", xff))
                .to_http_request()
        };
        assert_eq!(
            client_ip(&req("1.1.1.1, 203.0.113.9"), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(&req("203.0.113.9, 10.0.0.2"), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(&req("2001:db8::7"), &trusted),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(client_ip(&req("garbage"), &trusted), Some(ip("127.0.0.1")));
        assert_eq!(client_ip(&req("1.1.1.1"), &[]), Some(ip("127.0.0.1")));
        let direct = TestRequest::default()
            .peer_addr("198.51.100.4:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.1.1.1"))
            .to_http_request();
        assert_eq!(client_ip(&direct, &trusted), Some(ip("198.51.100.4")));
    }
}
