//! Which hosts a traffic file's requests were sent to: a streaming pass that finds the main one (a browser's
//! HAR holds the site's API beside fonts and CDNs), and the match of `--host` against a recorded host.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::Path;

use http::uri::Authority;

use super::{Record, TrafficError, TrafficFormat};

/// Distinct hosts counted at most; a file naming more is counted on those first seen.
const MAX_HOSTS: usize = 10_000;
/// The longest host name counted (DNS allows 253 characters): with `MAX_HOSTS`, the count holds at most
/// about 2.5 MB of names, whatever the file says.
const MAX_HOST_LEN: usize = 255;

/// The host most requests of a file went to.
#[derive(Debug, PartialEq, Eq)]
pub struct MainHost {
    pub host: String,
    /// Requests to it.
    pub requests: u64,
    /// Requests with a known host, to any.
    pub of: u64,
    /// Distinct hosts seen.
    pub hosts: usize,
}

/// Reads the whole file once, record by record, counting requests per host (case folded, port dropped): the
/// most frequent wins, the first seen among equals. `None` when no request names a host.
pub fn main_host(path: &Path, format: TrafficFormat) -> Result<Option<MainHost>, TrafficError> {
    let file = File::open(path).map_err(|source| TrafficError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut counts: HashMap<String, (u64, usize)> = HashMap::new();
    let mut of = 0;
    let mut sink = |record: Record| {
        if let Record::Request(request) = record
            && let Some(authority) = &request.authority
        {
            of += 1;
            if authority.host().len() > MAX_HOST_LEN {
                return ControlFlow::Continue(());
            }
            let host = authority.host().to_ascii_lowercase();
            let seen = counts.len();
            if let Some(count) = counts.get_mut(&host) {
                count.0 += 1;
            } else if seen < MAX_HOSTS {
                counts.insert(host, (1, seen));
            }
        }
        ControlFlow::Continue(())
    };
    // A sealed recording is JSON lines, whose hosts are never counted: only a HAR file's are.
    let read = super::read_records(
        BufReader::with_capacity(256 << 10, file),
        format,
        &mut sink,
        None,
    );
    if let Err(reason) = read
        && of == 0
    {
        return Err(TrafficError::Malformed {
            path: path.to_path_buf(),
            reason,
        });
    }
    let hosts = counts.len();
    Ok(counts
        .into_iter()
        .max_by(|(_, (a, a_seen)), (_, (b, b_seen))| a.cmp(b).then(b_seen.cmp(a_seen)))
        .map(|(host, (requests, _))| MainHost {
            host,
            requests,
            of,
            hosts,
        }))
}

/// Whether a request recorded for `recorded` matches `--host wanted`: host names compared without case, ports
/// only when `wanted` has one. A request whose host is not known matches.
pub fn host_matches(wanted: &Authority, recorded: Option<&Authority>) -> bool {
    let Some(recorded) = recorded else {
        return true;
    };
    wanted.host().eq_ignore_ascii_case(recorded.host())
        && wanted
            .port_u16()
            .is_none_or(|port| recorded.port_u16() == Some(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(text: &str) -> Authority {
        text.parse().unwrap()
    }

    #[test]
    fn hosts_match_without_case_and_ports_only_when_asked() {
        let api = authority("API.example.com");
        assert!(host_matches(&api, Some(&authority("api.example.com:8443"))));
        assert!(!host_matches(&api, Some(&authority("cdn.example.com"))));
        let with_port = authority("api.example.com:8443");
        assert!(host_matches(
            &with_port,
            Some(&authority("api.example.com:8443"))
        ));
        assert!(!host_matches(
            &with_port,
            Some(&authority("api.example.com"))
        ));
        assert!(host_matches(&api, None), "an unknown host is not another");
        assert!(host_matches(
            &authority("[::1]"),
            Some(&authority("[::1]:80"))
        ));
    }

    #[test]
    fn the_main_host_is_the_one_most_requests_went_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let lines = [
            r#"{"method":"GET","uri":"https://cdn.example.net/a.css"}"#,
            r#"{"method":"GET","uri":"/b","headers":[["host","API.example.com:8080"]]}"#,
            r#"{"method":"GET","uri":"https://api.example.com/c"}"#,
            r#"{"method":"GET","uri":"/no-host"}"#,
            "not json",
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let main = main_host(&path, TrafficFormat::Jsonl).unwrap().unwrap();
        assert_eq!(
            main,
            MainHost {
                host: "api.example.com".into(),
                requests: 2,
                of: 3,
                hosts: 2
            }
        );
        std::fs::write(&path, r#"{"method":"GET","uri":"/x"}"#).unwrap();
        assert_eq!(main_host(&path, TrafficFormat::Jsonl).unwrap(), None);
    }
}
