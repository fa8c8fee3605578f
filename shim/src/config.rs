//! What the environment asks of the shim: `DSM_SOCKET` and `DSM_SHM`.

use std::sync::OnceLock;

/// Daemon socket used when `DSM_SOCKET` is unset (the same default as `dsmd --socket`).
pub const DEFAULT_SOCKET: &str = "/run/dsm/dsmd.sock";

/// The shim's settings, read once.
pub struct Config {
    /// Path of the daemon's socket, for messages.
    pub socket: String,
    /// The same, ready for `connect(2)`; `None` if the path is too long for a socket address.
    pub addr: Option<libc::sockaddr_un>,
    /// `DSM_SHM` patterns; `None` means every shared memory name is distributed.
    pub patterns: Option<Vec<String>>,
    /// `DSM_SPIN_US`: how long a faulting thread polls for its daemon's answer before it sleeps
    /// (ns; 0, the default, sleeps at once).
    pub spin_ns: u64,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The settings; read from the environment on first use (normally in the constructor, so the
/// signal handler only ever sees an initialized value).
pub fn get() -> &'static Config {
    CONFIG.get_or_init(|| {
        let socket = std::env::var("DSM_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        let patterns = std::env::var("DSM_SHM").ok().map(|list| {
            list.split(',')
                .map(|p| p.trim().trim_start_matches('/').to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        });
        let addr = sockaddr(&socket);
        if addr.is_none() {
            crate::say!("DSM_SOCKET={socket} is too long for a Unix socket path (max 107 bytes)");
        }
        let spin_ns = std::env::var("DSM_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1000);
        Config {
            socket,
            addr,
            patterns,
            spin_ns,
        }
    })
}

impl Config {
    /// Whether the shared memory object `name` is to be distributed.
    pub fn distributes(&self, name: &str) -> bool {
        let name = name.trim_start_matches('/');
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob(p.as_bytes(), name.as_bytes())),
        }
    }
}

fn sockaddr(path: &str) -> Option<libc::sockaddr_un> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return None;
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Some(addr)
}

/// Shell-style match: `*` is any run of characters, `?` any one character.
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob(b"data", b"data"));
        assert!(!glob(b"data", b"data2"));
        assert!(glob(b"data*", b"data2"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(!glob(b"a*c", b"abbbd"));
        assert!(glob(b"psm_?", b"psm_1"));
        assert!(glob(b"*mid*", b"xxmidyy"));
        assert!(!glob(b"?", b""));
    }
}
