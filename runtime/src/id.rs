//! Container IDs (64 hex digits, like Docker's) and names.

use std::fmt;

/// A container's full ID: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// A new random ID.
    pub fn generate() -> ContainerId {
        ContainerId(hex(&random_bytes::<32>()))
    }

    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<ContainerId> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| ContainerId(s.to_string()))
    }

    /// The full ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-digit short form.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Random bytes from the kernel (getrandom(2), falling back to the clock
/// and pid if it fails, which only matters for uniqueness, not secrecy).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let filled = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    if filled.ok() != Some(N) {
        let seed = crate::time::now_nanos() as u128 ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 * 7) as u8) ^ (i as u8);
        }
    }
    buf
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a valid container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() >= 2
        && name.len() <= 128
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const MOODS: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious", "daring",
    "eager", "fancy", "fierce", "gentle", "glad", "golden", "happy", "humble", "jolly", "keen",
    "kind", "lively", "lucid", "merry", "mellow", "nimble", "noble", "patient", "placid", "proud",
    "quick", "quiet", "rapid", "serene", "sharp", "shiny", "silent", "steady", "sunny", "swift",
    "tender", "tidy", "upbeat", "vivid", "warm", "wise", "witty", "zealous",
];

const PEOPLE: &[&str] = &[
    "babbage",
    "bardeen",
    "bohr",
    "boole",
    "cantor",
    "carson",
    "curie",
    "darwin",
    "dijkstra",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galois",
    "gauss",
    "germain",
    "goodall",
    "hamilton",
    "hawking",
    "hopper",
    "hypatia",
    "jackson",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "noether",
    "pascal",
    "planck",
    "ramanujan",
    "ritchie",
    "sagan",
    "shannon",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volta",
    "wilson",
    "wozniak",
    "yalow",
];

/// A random `mood_person` name (the caller retries on a clash).
pub fn random_name() -> String {
    let r = random_bytes::<4>();
    let a = usize::from(u16::from_le_bytes([r[0], r[1]])) % MOODS.len();
    let b = usize::from(u16::from_le_bytes([r[2], r[3]])) % PEOPLE.len();
    format!("{}_{}", MOODS[a], PEOPLE[b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_unique() {
        let a = ContainerId::generate();
        let b = ContainerId::generate();
        assert_ne!(a, b);
        assert!(ContainerId::parse(a.as_str()).is_some());
        assert_eq!(a.short().len(), 12);
        assert!(ContainerId::parse("abc").is_none());
        assert!(ContainerId::parse(&"G".repeat(64)).is_none());
    }

    #[test]
    fn names() {
        for ok in ["web", "a1", "my_app.v2-x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-x", "_x", "a b", "a/b", "é1"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let n = random_name();
        assert!(valid_name(&n) && n.contains('_'), "{n}");
    }
}
