//! Outbound HTTP to addresses users gave (a catalog service's `base_url`): only public
//! internet addresses are reachable, so a registered URL cannot make aibank call its own
//! loopback, the private network it runs in or a cloud metadata endpoint (SSRF).
//!
//! A target is checked twice. At registration [`check_url`] resolves the host and refuses
//! the URL when any address is not public. A name can resolve elsewhere later (DNS
//! rebinding), so at call time the [`client`]'s own resolver drops non-public addresses and
//! refuses when none is left; the connection goes to an address that was checked, not one
//! looked up again. An IP literal never reaches a resolver, so [`check_literal`] checks it
//! before sending. `allow_private` (`AIBANK_CATALOG_ALLOW_PRIVATE=true`) turns all of this
//! off, for a private deployment and for tests against a local mock.
//!
//! A refusal at call time surfaces as a `reqwest::Error`; [`refusal`] finds the
//! [`TargetRefused`] inside it so the caller can answer it as a refusal rather than as an
//! unreachable upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target was refused. Messages name the host, never a path or query (which may
/// carry a key), so they are safe in an error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    #[error("the URL must use https")]
    NotHttps,
    #[error("the URL is not valid: {0}")]
    BadUrl(String),
    #[error("{host} is not a public internet address")]
    NotPublic { host: String },
    #[error("{host} does not resolve")]
    Unresolvable { host: String },
}

/// IPv4 ranges that are not the public internet (IANA special-purpose registry).
const V4_BLOCKED: [Ipv4Net; 15] = [
    Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 8), // "this network", unspecified
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8), // private
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12), // private
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24), // 6to4 relay anycast
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16), // private
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, broadcast
];

/// The only IPv6 addresses allocated for the public internet (global unicast); all else —
/// unique-local, link-local, site-local, multicast, reserved — is outside it.
const V6_GLOBAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Parts of global unicast that are not the public internet. Ranges that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address, in [`is_public`].
const V6_BLOCKED: [Ipv6Net; 3] = [
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF, Teredo
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
];

const V6_COMPATIBLE: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 96);
const V6_NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
const V6_6TO4: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

/// Whether `ip` is a public internet address: not loopback, private, link-local, CGNAT,
/// unspecified, broadcast, multicast, documentation, benchmarking or reserved, and for
/// IPv6 also not unique-local, nor an IPv6 form (mapped, compatible, NAT64, 6to4) of an
/// IPv4 address that is not public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_BLOCKED.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => {
            if v6.is_unspecified() || v6.is_loopback() {
                return false;
            }
            if let Some(v4) = embedded_v4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            V6_GLOBAL.contains(&v6) && !V6_BLOCKED.iter().any(|net| net.contains(&v6))
        }
    }
}

/// The IPv4 address an IPv6 address stands for, where it stands for one.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = v6.octets();
    if V6_COMPATIBLE.contains(&v6) || V6_NAT64.contains(&v6) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if V6_6TO4.contains(&v6) {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// At registration: the URL parses, is `https` (`http` too when `allow_private`), has a
/// host and no credentials, and every address the host resolves to is public unless
/// `allow_private`. The host must resolve either way, so a typo is caught now.
pub async fn check_url(url: &str, allow_private: bool) -> Result<url::Url, TargetRefused> {
    let parsed = url::Url::parse(url).map_err(|e| TargetRefused::BadUrl(e.to_string()))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(TargetRefused::NotHttps),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Sent as Basic auth on every call and shown to anyone who reads the URL.
        return Err(TargetRefused::BadUrl(
            "credentials in the URL are not allowed".into(),
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            check_literal(&parsed, allow_private)?;
            return Ok(parsed);
        }
        None => return Err(TargetRefused::BadUrl("the URL has no host".into())),
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| TargetRefused::Unresolvable { host: host.clone() })?
        .collect();
    if addrs.is_empty() {
        return Err(TargetRefused::Unresolvable { host });
    }
    if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(TargetRefused::NotPublic { host });
    }
    Ok(parsed)
}

/// Before sending: a URL whose host is an IP literal never goes through the resolver, so
/// it is checked here. A domain passes; the [`client`]'s resolver checks it.
pub fn check_literal(url: &url::Url, allow_private: bool) -> Result<(), TargetRefused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(TargetRefused::BadUrl("the URL has no host".into())),
    };
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(TargetRefused::NotPublic {
            host: ip.to_string(),
        })
    }
}

/// At call time: a client for user-given targets. Unless `allow_private`, it speaks only
/// https and its resolver keeps only public addresses, refusing a name that has none left.
/// It never follows a redirect (one could point anywhere, and would carry the provider key
/// along) and ignores proxy settings from the environment (a proxy would resolve the name
/// itself, past the check).
pub fn client(allow_private: bool, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    if !allow_private {
        builder = builder
            .https_only(true)
            .dns_resolver(Arc::new(PublicResolver));
    }
    builder.build()
}

/// The [`TargetRefused`] a request failed with, found in the error's source chain.
pub fn refusal(err: &reqwest::Error) -> Option<&TargetRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<TargetRefused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

/// The system resolver, keeping only public addresses.
struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| TargetRefused::Unresolvable { host: host.clone() })?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(TargetRefused::NotPublic { host }.into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn non_public_ipv4_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public(ip), "{ip} is not public");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass_including_range_neighbours() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn non_public_ipv6_ranges_are_refused() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
            "fec0::1",
            "fe00::1",
            "4000::1",
            // IPv4-mapped and -compatible forms of non-public IPv4 addresses.
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            // NAT64 and 6to4 forms of non-public IPv4 addresses.
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!public(ip), "{ip} is not public");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn check_url_refuses_non_public_targets() {
        for url in [
            "https://127.0.0.1/",
            "https://10.1.2.3/api",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]:8443/",
            "https://[::ffff:127.0.0.1]/",
            // The WHATWG parser reads this as 127.0.0.1.
            "https://2130706433/",
        ] {
            assert!(
                matches!(
                    check_url(url, false).await,
                    Err(TargetRefused::NotPublic { .. })
                ),
                "{url} is refused"
            );
        }
        // A name that resolves to a loopback address.
        assert_eq!(
            check_url("https://localhost:8443/v1", false).await,
            Err(TargetRefused::NotPublic {
                host: "localhost".into()
            })
        );
    }

    #[tokio::test]
    async fn check_url_refuses_other_schemes_and_malformed_urls() {
        for url in ["http://8.8.8.8/", "ftp://8.8.8.8/", "file:///etc/passwd"] {
            assert_eq!(check_url(url, false).await, Err(TargetRefused::NotHttps));
        }
        assert_eq!(
            check_url("ftp://127.0.0.1/", true).await,
            Err(TargetRefused::NotHttps)
        );
        for url in ["not a url", "https://", "https://user:pw@8.8.8.8/"] {
            assert!(
                matches!(check_url(url, false).await, Err(TargetRefused::BadUrl(_))),
                "{url} is malformed"
            );
        }
        assert!(matches!(
            check_url("https://no-such-host.invalid/", false).await,
            Err(TargetRefused::Unresolvable { .. })
        ));
    }

    #[tokio::test]
    async fn check_url_passes_public_literals_and_everything_when_private_is_allowed() {
        let ok = check_url("https://8.8.8.8:8443/v1?x=1", false)
            .await
            .unwrap();
        assert_eq!(ok.as_str(), "https://8.8.8.8:8443/v1?x=1");
        for url in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/",
            "https://localhost/",
            "http://localhost:4000/",
            "http://127.0.0.1:4000/",
        ] {
            assert!(check_url(url, true).await.is_ok(), "{url} is allowed");
        }
    }

    #[test]
    fn check_literal_checks_ip_hosts_only() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            check_literal(&url("https://127.0.0.1/x"), false),
            Err(TargetRefused::NotPublic {
                host: "127.0.0.1".into()
            })
        );
        assert!(check_literal(&url("https://[fd00::1]/"), false).is_err());
        assert!(check_literal(&url("https://127.0.0.1/x"), true).is_ok());
        assert!(check_literal(&url("https://8.8.8.8/"), false).is_ok());
        // Names are the resolver's to check.
        assert!(check_literal(&url("https://localhost/"), false).is_ok());
    }

    /// A one-request HTTP server on 127.0.0.1 that answers `200 hello`.
    fn local_listener() -> (u16, std::thread::JoinHandle<bool>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let served = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0_u8; 4096];
                        let _ = s.read(&mut buf);
                        s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                        )
                        .unwrap();
                        return true;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            false
        });
        (port, served)
    }

    #[tokio::test]
    async fn client_refuses_a_local_listener_at_call_time_unless_allowed() {
        let timeout = Duration::from_secs(5);
        let strict = client(false, timeout).unwrap();
        let (port, served) = local_listener();

        // The name resolves only to loopback addresses, so the resolver leaves nothing.
        let err = strict
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            refusal(&err),
            Some(&TargetRefused::NotPublic {
                host: "localhost".into()
            }),
            "{err:?}"
        );
        // Plain http is refused before any connection.
        let err = strict
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_builder(), "{err:?}");

        // Allowed, the same listener answers, and it is the first connection it saw.
        let open = client(true, timeout).unwrap();
        let res = open
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "hello");
        assert!(served.join().unwrap());
    }

    #[tokio::test]
    async fn client_does_not_follow_redirects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0_u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(
                b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        });
        let res = client(true, Duration::from_secs(5))
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
    }

    #[test]
    fn refusal_messages_name_the_host_only() {
        assert_eq!(
            TargetRefused::NotPublic {
                host: "localhost".into()
            }
            .to_string(),
            "localhost is not a public internet address"
        );
        assert_eq!(
            TargetRefused::NotHttps.to_string(),
            "the URL must use https"
        );
    }
}
