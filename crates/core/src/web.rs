//! Web playback's token: `<server id>.<secret>`, the path segment of `base_url/m/<token>`.
//!
//! The server id in front lets a router send the request to the server that holds the
//! message without asking anyone; the secret (120 bits, 20 base64url characters) is what
//! makes the link unguessable. A `WebToken` exists only well-formed; whether it opens a
//! message is the store's question (it keeps only the token's SHA-256).

/// Characters of the secret part: 120 bits in base64url, no padding.
pub const SECRET_CHARS: usize = 20;

/// A well-formed web playback token.
#[derive(Clone, PartialEq, Eq)]
pub struct WebToken {
    text: String,
    dot: usize,
}

impl WebToken {
    /// Parses a path segment; None unless it is `<server id>.<20 base64url characters>`.
    pub fn parse(s: &str) -> Option<WebToken> {
        let (server, secret) = s.split_once('.')?;
        let id_ok =
            !server.is_empty() && server.len() <= 64 && server.bytes().all(crate::util::id_byte);
        let secret_ok = secret.len() == SECRET_CHARS && secret.bytes().all(crate::util::id_byte);
        (id_ok && secret_ok).then(|| WebToken {
            text: s.to_string(),
            dot: server.len(),
        })
    }

    /// The server that holds the message.
    pub fn server(&self) -> &str {
        &self.text[..self.dot]
    }

    /// The whole token, as it appears in the link.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

// The token is a bearer secret: never print it.
impl std::fmt::Debug for WebToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebToken({}.****)", self.server())
    }
}

/// `web.base_url`, checked: `http(s)://host[:port][/prefix]` without a trailing slash,
/// made only of characters that are safe in an SMS, a URL and an HTML attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// Parses `s`; the error says what is wrong. Plain `http://` is refused unless the
    /// host is loopback: the link is a bearer secret and must not cross a network in clear.
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let s = s.trim().trim_end_matches('/');
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with https:// (e.g. \"https://vm.example.net\")".into());
        };
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~/:[]%".contains(&b);
        if !s.bytes().all(safe) {
            return Err("only letters, digits and - . _ ~ / : [ ] % may appear (no query, fragment or user)".into());
        }
        let authority = rest.split('/').next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if host.is_empty() {
            return Err("names no host".into());
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !https && !loopback {
            return Err(format!(
                "http:// would send every message link in clear; use https:// (http:// is for a loopback host only, got `{host}`)"
            ));
        }
        Ok(BaseUrl(s.to_string()))
    }

    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The link for `token`: `base_url/m/<token>`.
    pub fn link(&self, token: &WebToken) -> String {
        format!("{}/m/{}", self.0, token.as_str())
    }

    /// `scheme://authority`, what a browser sends as `Origin`.
    pub fn origin(&self) -> &str {
        let after = self.0.find("://").map_or(0, |i| i + 3);
        match self.0[after..].find('/') {
            Some(i) => &self.0[..after + i],
            None => &self.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed_or_absent() {
        let t = WebToken::parse("s1.AbCdEfGhIjKlMnOpQr-_").unwrap();
        assert_eq!((t.server(), t.as_str()), ("s1", "s1.AbCdEfGhIjKlMnOpQr-_"));
        assert!(!format!("{t:?}").contains("AbCd"), "Debug hides the secret");
        for bad in [
            "",
            "s1",
            ".AbCdEfGhIjKlMnOpQr-_",
            "s1.AbCdEfGhIjKlMnOpQr-",
            "s1.AbCdEfGhIjKlMnOpQr-_x",
            "s1.AbCdEfGhIjKlMnOpQr+/",
            "s.1.AbCdEfGhIjKlMnOpQr",
            "s1.AbCdEfGhIjKlMnOpQ%2",
            "../etc.AbCdEfGhIjKlMnOpQr",
        ] {
            assert!(WebToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn base_urls_want_https_off_loopback() {
        let b = BaseUrl::parse("https://vm.example.net/voice/").unwrap();
        assert_eq!(b.as_str(), "https://vm.example.net/voice");
        assert_eq!(b.origin(), "https://vm.example.net");
        let t = WebToken::parse("s1.AbCdEfGhIjKlMnOpQr-_").unwrap();
        assert_eq!(
            b.link(&t),
            "https://vm.example.net/voice/m/s1.AbCdEfGhIjKlMnOpQr-_"
        );
        assert_eq!(
            BaseUrl::parse("http://127.0.0.1:8080").unwrap().origin(),
            "http://127.0.0.1:8080"
        );
        assert!(BaseUrl::parse("http://[::1]:8080").is_ok());
        assert!(BaseUrl::parse("http://localhost").is_ok());
        let e = BaseUrl::parse("http://vm.example.net").unwrap_err();
        assert!(e.contains("https://"), "{e}");
        assert!(BaseUrl::parse("vm.example.net").is_err());
        assert!(BaseUrl::parse("https://vm.example.net/?a=1").is_err());
        assert!(BaseUrl::parse("https://user@vm.example.net").is_err());
        assert!(BaseUrl::parse("https://vm.example.net/\"><script>").is_err());
        assert!(BaseUrl::parse("https://").is_err());
    }
}
