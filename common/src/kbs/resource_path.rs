//! `ResourcePath`: a validated `repo/type/tag` triple, parsed from a path or a `kbs://` URI.

use std::fmt;
use std::str::FromStr;

use super::KbsError;

/// Longest accepted `repo/type/tag`, in bytes.
const MAX_PATH_LEN: usize = 256;

/// A KBS resource address, `repo/type/tag`, safe to put in a URL path or a file path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    repo: String,
    kind: String,
    tag: String,
}

impl ResourcePath {
    /// Parses `repo/type/tag`, or a `kbs:///repo/type/tag` / `kbs://host:port/repo/type/tag`
    /// URI whose authority is ignored (the configured KBS is always the one asked).
    pub fn parse(input: &str) -> Result<Self, KbsError> {
        let invalid = |reason: &str| KbsError::InvalidResourcePath {
            path: input.to_owned(),
            reason: reason.to_owned(),
        };

        let segments: Vec<String> = match input.strip_prefix("kbs://") {
            Some(rest) => {
                let path = rest
                    .find('/')
                    .map(|slash| &rest[slash + 1..])
                    .ok_or_else(|| invalid("kbs URI has no path"))?;
                path.split('/')
                    .map(|segment| percent_decode(segment).map_err(|reason| invalid(&reason)))
                    .collect::<Result<_, _>>()?
            }
            None if input.contains("://") => return Err(invalid("URI scheme is not kbs")),
            None => input.split('/').map(str::to_owned).collect(),
        };

        let [repo, kind, tag]: [String; 3] = segments
            .try_into()
            .map_err(|_| invalid("expected exactly three segments repo/type/tag"))?;
        for segment in [&repo, &kind, &tag] {
            check_segment(segment).map_err(|reason| invalid(&reason))?;
        }

        let path = Self { repo, kind, tag };
        if path.to_string().len() > MAX_PATH_LEN {
            return Err(invalid(&format!("longer than {MAX_PATH_LEN} bytes")));
        }
        Ok(path)
    }

    /// The repository segment.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The type segment.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The tag segment.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl FromStr for ResourcePath {
    type Err = KbsError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("empty segment".to_owned());
    }
    if segment == "." || segment == ".." {
        return Err(format!("segment {segment:?} is a relative path step"));
    }
    if let Some(bad) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character {bad:?} is not allowed"));
    }
    Ok(())
}

/// Decodes `%XX` escapes; the result is checked like any other segment afterwards, so an escape
/// can never smuggle in `/` or a dot segment.
fn percent_decode(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "malformed percent escape".to_owned())?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "percent escapes are not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(input: &str) -> String {
        match ResourcePath::parse(input) {
            Err(KbsError::InvalidResourcePath { path, reason }) => {
                assert_eq!(path, input);
                reason
            }
            other => panic!("{input:?} was not rejected: {other:?}"),
        }
    }

    #[test]
    fn parses_plain_paths_and_uris() {
        for input in [
            "default/key/one",
            "kbs:///default/key/one",
            "kbs://10.0.0.1:8080/default/key/one",
            "kbs:///default/%6Bey/one",
        ] {
            let path = ResourcePath::parse(input).expect(input);
            assert_eq!(path.repo(), "default");
            assert_eq!(path.kind(), "key");
            assert_eq!(path.tag(), "one");
            assert_eq!(path.to_string(), "default/key/one");
        }
        let dotted: ResourcePath = "my-repo/cosign.key/v1_2".parse().expect("valid");
        assert_eq!(dotted.to_string(), "my-repo/cosign.key/v1_2");
    }

    #[test]
    fn rejects_every_malformed_path() {
        assert!(rejected("a/b").contains("three segments"));
        assert!(rejected("a/b/c/d").contains("three segments"));
        assert!(rejected("/a/b/c").contains("three segments"));
        assert!(rejected("a//c").contains("empty"));
        assert!(rejected("a/b/").contains("empty"));
        assert!(rejected("a/../c").contains("relative"));
        assert!(rejected("a/./c").contains("relative"));
        assert!(rejected("a/b/c d").contains("not allowed"));
        assert!(rejected("a/b/c%2F").contains("not allowed"));
        assert!(rejected("a/b/ü").contains("not allowed"));
        assert!(rejected("a/b/c?x=1").contains("not allowed"));
        assert!(rejected("kbs:///a/b/c%2Fd").contains("not allowed"));
        assert!(rejected("kbs:///a/%2E%2E/c").contains("relative"));
        assert!(rejected("kbs:///a/%2e/c").contains("relative"));
        assert!(rejected("kbs:///a/b/%zz").contains("malformed"));
        assert!(rejected("kbs:///a/b/%2").contains("malformed"));
        assert!(rejected("kbs:///a/b/%FF").contains("UTF-8"));
        assert!(rejected("kbs://host").contains("no path"));
        assert!(rejected("kbs:///a/b").contains("three segments"));
        assert!(rejected("https://kbs/a/b/c").contains("scheme"));
        let long = format!("a/b/{}", "t".repeat(MAX_PATH_LEN));
        assert!(rejected(&long).contains("longer"));
    }

    #[test]
    fn longest_allowed_path_is_accepted() {
        let tag = "t".repeat(MAX_PATH_LEN - 4);
        let path = ResourcePath::parse(&format!("a/b/{tag}")).expect("at the limit");
        assert_eq!(path.to_string().len(), MAX_PATH_LEN);
    }
}
