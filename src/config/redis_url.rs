//! The forms of `REDIS_URL`: one Redis server, a Redis Cluster or a master watched by
//! Sentinel. Parsed here so that a wrong one is refused with the configuration, before
//! anything connects.

/// Where the shared rate limits live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis://[user:password@]host[:port][/db]`: one server.
    Server(String),
    /// `redis+cluster://[user:password@]host:port,host:port,…`: the nodes to learn the
    /// cluster from, each as a `redis://` URL (with the credentials, which every node takes).
    Cluster(Vec<String>),
    /// `redis+sentinel://[user:password@]host:port,host:port,…/master_name`: the sentinels,
    /// asked without credentials, and the master's name; `credentials` are the master's.
    Sentinel { sentinels: Vec<String>, master: String, credentials: String },
}

/// The URL form each kind is written in, for error messages.
const FORMS: &str = "redis://host:6379, redis+cluster://host1:6379,host2:6379,… or redis+sentinel://host1:26379,host2:26379,…/master_name";

impl RedisTopology {
    pub fn parse(url: &str) -> Result<RedisTopology, String> {
        let bad = |why: &str| Err(format!("REDIS_URL must be a URL of one of the forms {FORMS}: {why}"));
        let Some((scheme, rest)) = url.split_once("://") else { return bad("not a URL") };
        match scheme {
            "redis" => {
                let single = reqwest::Url::parse(url).is_ok_and(|parsed| parsed.host_str().is_some_and(|h| !h.is_empty()));
                if !single {
                    return bad("not a URL with a host");
                }
                if rest.split('/').next().unwrap_or_default().contains(',') {
                    return bad("several hosts need redis+cluster:// or redis+sentinel://");
                }
                Ok(RedisTopology::Server(url.to_string()))
            }
            "redis+cluster" | "redis+sentinel" => {
                if rest.contains(['?', '#']) {
                    return bad("no query or fragment is read here");
                }
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let (credentials, hosts) = authority.rsplit_once('@').map_or(("", authority), |(c, h)| (c, h));
                let nodes: Vec<&str> = hosts.split(',').map(str::trim).collect();
                for node in &nodes {
                    let parsed = reqwest::Url::parse(&format!("redis://{node}"));
                    if node.is_empty() || !parsed.is_ok_and(|p| p.host_str().is_some_and(|h| !h.is_empty()) && matches!(p.path(), "" | "/"))
                    {
                        return bad(&format!("{node:?} is not host:port"));
                    }
                }
                let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
                if scheme == "redis+cluster" {
                    if !path.is_empty() {
                        return bad("a Redis Cluster has only database 0: no path after the nodes");
                    }
                    return Ok(RedisTopology::Cluster(nodes.iter().map(|node| format!("redis://{at}{node}")).collect()));
                }
                let master = path.trim_end_matches('/');
                if master.is_empty() || master.contains('/') {
                    return bad("redis+sentinel:// needs the master's name as the path, e.g. /mymaster");
                }
                Ok(RedisTopology::Sentinel {
                    sentinels: nodes.iter().map(|node| format!("redis://{node}")).collect(),
                    master: master.to_string(),
                    credentials: credentials.to_string(),
                })
            }
            // The redis crate is built without TLS: a rediss:// URL would fail at the first connection.
            "rediss" | "rediss+cluster" | "rediss+sentinel" => {
                bad("TLS to Redis is not supported by this build; reach Redis over a private network or a TLS tunnel")
            }
            _ => bad(&format!("unknown scheme {scheme}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_names_its_nodes() {
        assert_eq!(RedisTopology::parse("redis://127.0.0.1:6379/2"), Ok(RedisTopology::Server("redis://127.0.0.1:6379/2".into())));
        assert_eq!(
            RedisTopology::parse("redis+cluster://:pw@10.0.0.1:7000, 10.0.0.2:7001,cache3:7002"),
            Ok(RedisTopology::Cluster(vec![
                "redis://:pw@10.0.0.1:7000".into(),
                "redis://:pw@10.0.0.2:7001".into(),
                "redis://:pw@cache3:7002".into()
            ]))
        );
        assert_eq!(
            RedisTopology::parse("redis+sentinel://u:pw@s1:26379,s2:26379/mymaster"),
            Ok(RedisTopology::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master: "mymaster".into(),
                credentials: "u:pw".into()
            })
        );
    }

    #[test]
    fn a_wrong_form_is_refused_with_the_forms_that_work() {
        for url in [
            "127.0.0.1:6379",
            "http://127.0.0.1",
            "redis://h1:6379,h2:6379",
            "redis+cluster://",
            "redis+cluster://h1:7000,,h2:7000",
            "redis+cluster://h1:7000/1",
            "redis+cluster://h1:7000?timeout=1",
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/a/b",
            "rediss+cluster://h1:7000",
            "rediss://127.0.0.1:6380",
        ] {
            let error = RedisTopology::parse(url).expect_err(url);
            assert!(error.contains("redis+cluster://"), "{url}: {error}");
        }
    }
}
