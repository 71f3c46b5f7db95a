//! Web playback links: each message's token, and the lookup by token.
//!
//! The token of message `id` is `<server>.<base64url(HMAC-SHA256(key, id))[..15 bytes]>`:
//! 120 bits nobody can guess without the server's key (`web.key` in its data directory,
//! 32 random bytes, owner-only). The store keeps only the token's SHA-256 (`web_hash`),
//! so neither the database nor a backup of it opens a message on the web; the notices'
//! texts hold the mark [`WEB_LINK`] and get the link when they are sent ([`Store::due`]).
//! A lookup hashes what it is given and finds the row by an index, the same work for a
//! right token, a wrong one and one whose message is gone.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use boxless_core::web::{BaseUrl, WebToken};
use ring::{digest, hmac};
use rusqlite::{OptionalExtension, params};

use crate::{Error, MessageInfo, Result, Store};

/// Where a notice's text carries its message's web link until it is sent.
pub const WEB_LINK: &str = "{web}";

/// Bytes of HMAC output in a token (120 bits: 20 base64url characters).
const SECRET_BYTES: usize = 15;

pub(crate) struct WebLinks {
    base: BaseUrl,
    key: hmac::Key,
}

impl std::fmt::Debug for WebLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebLinks")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl WebLinks {
    /// Reads `dir/web.key`, creating it (owner-only, synced) on first use.
    pub(crate) fn load(dir: &Path, base: BaseUrl) -> Result<WebLinks> {
        let path = dir.join("web.key");
        let key = match fs::read(&path) {
            Ok(k) if k.len() == 32 => k,
            Ok(_) => {
                return Err(Error::Io(std::io::Error::other(format!(
                    "{} is not 32 bytes: remove it to make a new key (links already sent stop working)",
                    path.display()
                ))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| Error::Io(std::io::Error::other(e)))?;
                let tmp = dir.join("web.key.tmp");
                let mut f = owner_only(&tmp)?;
                f.write_all(&k)?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(dir)?.sync_all()?;
                k
            }
            Err(e) => return Err(e.into()),
        };
        Ok(WebLinks {
            base,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    pub(crate) fn token(&self, server: &str, message_id: &str) -> WebToken {
        let tag = hmac::sign(&self.key, message_id.as_bytes());
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..SECRET_BYTES]);
        WebToken::parse(&format!("{server}.{secret}"))
            .expect("a server id and 20 base64url characters")
    }

    pub(crate) fn url(&self, server: &str, message_id: &str) -> String {
        self.base.link(&self.token(server, message_id))
    }
}

#[cfg(unix)]
fn owner_only(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn owner_only(path: &Path) -> std::io::Result<fs::File> {
    fs::File::create(path)
}

/// What the store keeps of a token.
pub(crate) fn hash(token: &WebToken) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_str().as_bytes())
        .as_ref()
        .to_vec()
}

impl Store {
    /// Gives every message deposited from now on a web link under `base`.
    pub fn enable_web(&self, base: BaseUrl) -> Result<()> {
        let links = WebLinks::load(&self.dir, base)?;
        // A second call keeps the first key and base: there is one per process run.
        let _ = self.web.set(links);
        Ok(())
    }

    /// The message a token opens: only while it exists and is not deleted.
    pub fn by_web_token(&self, token: &WebToken) -> Result<Option<MessageInfo>> {
        let h = hash(token);
        let db = self.read_db();
        let mut stmt = db.prepare_cached(crate::select_message!(
            "WHERE web_hash = ?1 AND state != 'deleted'"
        ))?;
        Ok(stmt.query_row(params![h], |r| self.row(r)).optional()?)
    }

    /// A notice's text with its message's web link in place of [`WEB_LINK`].
    pub(crate) fn with_web_link(&self, text: String, message_id: Option<&str>) -> String {
        if !text.contains(WEB_LINK) {
            return text;
        }
        match (self.web.get(), message_id) {
            (Some(w), Some(id)) => text.replace(WEB_LINK, &w.url(self.token_server(id), id)),
            // Written while web links were on, sent after they were turned off.
            _ => text.replace(WEB_LINK, "-"),
        }
    }

    /// The web link of message `id` (tests and the operator's tools; never logged).
    pub fn web_link(&self, id: &str) -> Option<String> {
        self.web.get().map(|w| w.url(self.token_server(id), id))
    }

    /// The server a message's web token names: the one that recorded it (a message taken
    /// over keeps its server's links, which routers send to whoever serves that server).
    fn token_server<'a>(&'a self, id: &'a str) -> &'a str {
        crate::server_of(id).unwrap_or(&self.server_id)
    }

    /// The hash of the token this store gives message `id` (a taken-over message whose
    /// notices it sends gets one too: `adopt`).
    pub(crate) fn own_web_hash(&self, id: &str) -> Option<Vec<u8>> {
        self.web
            .get()
            .map(|w| hash(&w.token(self.token_server(id), id)))
    }
}

/// Deposits and notices per minute over the last hour, for the operator's page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// The start of the first minute (ms since epoch, a whole minute).
    pub from_ms: u64,
    /// Messages stored, one count per minute, oldest first.
    pub deposits: Vec<u32>,
    /// Notices that left (accepted by the SMSC, the mail server or the webhook), per minute.
    pub notices: Vec<u32>,
}

impl Activity {
    /// No activity over the `minutes` whole minutes (1 to 1440) up to and including
    /// `now_ms`'s.
    pub fn empty(now_ms: u64, minutes: u32) -> Activity {
        let minutes = minutes.clamp(1, 24 * 60);
        Activity {
            from_ms: (now_ms / 60_000 + 1).saturating_sub(u64::from(minutes)) * 60_000,
            deposits: vec![0; minutes as usize],
            notices: vec![0; minutes as usize],
        }
    }
}

impl Store {
    /// [`Activity`] over the `minutes` whole minutes up to and including `now_ms`'s.
    pub fn activity(&self, now_ms: u64, minutes: u32) -> Result<Activity> {
        let empty = Activity::empty(now_ms, minutes);
        let from = empty.from_ms;
        let db = self.read_db();
        let per_minute = |sql: &str| -> Result<Vec<u32>> {
            let mut v = empty.deposits.clone();
            let mut stmt = db.prepare_cached(sql)?;
            let rows = stmt.query_map([from as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (m, n) = row?;
                if let Some(slot) =
                    v.get_mut((m.max(0) as u64).saturating_sub(from / 60_000) as usize)
                {
                    *slot = n.clamp(0, i64::from(u32::MAX)) as u32;
                }
            }
            Ok(v)
        };
        let deposits = per_minute(
            "SELECT received_at_ms / 60000, COUNT(*) FROM messages WHERE received_at_ms >= ?1 GROUP BY 1",
        )?;
        let notices = per_minute(
            "SELECT sent_at_ms / 60000, COUNT(*) FROM outbox WHERE sent_at_ms >= ?1 GROUP BY 1",
        )?;
        Ok(Activity {
            from_ms: from,
            deposits,
            notices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lane, MessageState, NewMessage};
    use boxless_core::{LinkPool, PhoneNumber};

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    fn open(dir: &Path) -> Store {
        let s = Store::open(
            dir,
            "ms1",
            LinkPool::parse(&["+18005550100-+18005550101"]).unwrap(),
        )
        .unwrap();
        s.enable_web(BaseUrl::parse("https://vm.example.net").unwrap())
            .unwrap();
        s
    }

    fn deposit(s: &Store) -> MessageInfo {
        let samples = vec![0i16; 8000];
        let msg = NewMessage {
            recipient: n("+15551230002"),
            caller: Some(n("+15551230001")),
            received_at_ms: boxless_core::now_ms(),
            samples: &samples,
            sample_rate: 8000,
            encoding: crate::Encoding::Pcm16,
        };
        s.deposit(&msg, |f| format!("Listen: {}", f.web_link.unwrap()))
            .unwrap()
    }

    #[test]
    fn a_token_opens_its_message_until_it_is_gone_and_only_its_hash_is_kept() {
        let dir = crate::tests::tempdir();
        let s = open(&dir);
        let m = deposit(&s);
        let url = s.web_link(&m.id).unwrap();
        let token = WebToken::parse(url.rsplit('/').next().unwrap()).unwrap();
        assert_eq!(token.server(), "ms1");
        assert_eq!(url, format!("https://vm.example.net/m/{}", token.as_str()));
        // The notice gets the link when it is sent; the row holds the mark.
        let jobs = s.due(u64::MAX, 10, Lane::Sms).unwrap();
        assert_eq!(jobs[0].text, format!("Listen: {url}"));
        let raw: String = s
            .db()
            .query_row("SELECT text FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(raw, format!("Listen: {WEB_LINK}"));
        let secret = &token.as_str()[4..];
        let dump = std::fs::read(dir.join("messages.sqlite")).unwrap();
        let wal = std::fs::read(dir.join("messages.sqlite-wal")).unwrap_or_default();
        for bytes in [&dump, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the token is not in the database"
            );
        }
        assert_eq!(s.by_web_token(&token).unwrap().unwrap().id, m.id);
        // A token with one character changed, and another server's: nothing.
        let mut other = token.as_str().to_string();
        let last = other.pop().unwrap();
        other.push(if last == 'A' { 'B' } else { 'A' });
        assert!(
            s.by_web_token(&WebToken::parse(&other).unwrap())
                .unwrap()
                .is_none()
        );
        // Reopened: the same key, the same token.
        drop(s);
        let s = open(&dir);
        assert_eq!(s.web_link(&m.id).unwrap(), url);
        s.set_state(&m.id, MessageState::Saved, 1).unwrap();
        assert_eq!(
            s.by_web_token(&token).unwrap().unwrap().state,
            MessageState::Saved
        );
        assert!(s.delete(&m.id).unwrap());
        assert!(s.by_web_token(&token).unwrap().is_none(), "deleted: gone");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("web.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is the owner's alone");
        }
    }

    #[test]
    fn activity_counts_deposits_and_notices_per_minute() {
        let dir = crate::tests::tempdir();
        let s = open(&dir);
        deposit(&s);
        deposit(&s);
        let jobs = s.due(u64::MAX, 10, Lane::Sms).unwrap();
        let now = boxless_core::now_ms();
        s.accepted(&jobs[0], 1, None, now).unwrap();
        let a = s.activity(now, 60).unwrap();
        assert_eq!((a.deposits.len(), a.notices.len()), (60, 60));
        assert_eq!(a.from_ms % 60_000, 0);
        assert_eq!((a.deposits[59], a.notices[59]), (2, 1));
        assert_eq!(a.deposits[..59].iter().sum::<u32>(), 0);
        let later = s.activity(now + 3_600_000, 60).unwrap();
        assert_eq!(
            later.deposits.iter().sum::<u32>(),
            0,
            "an hour later: out of the window"
        );
    }
}
