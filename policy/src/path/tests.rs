//! One case per row of docs/path-contract.md (the proxy's integration tests send the
//! same forms over HTTP/1 and HTTP/2: proxy/tests/path_contract.rs).

use super::*;

#[test]
fn canonical_forms() {
    for (input, want) in [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("//a///b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/admin/..", "/"),
        ("/%61dmin", "/admin"),
        ("/%41%5a%7e", "/AZ~"),
        ("/a%7Eb", "/a~b"),
        ("/a%20b", "/a%20b"),
        ("/a%2bb", "/a%2Bb"),
        ("/a+b", "/a+b"),
        ("/x:y", "/x:y"),
        ("/v1/projects/p:run", "/v1/projects/p:run"),
        ("/a%3Ab", "/a%3Ab"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/%E6%97%A5%E6%9C%AC", "/%E6%97%A5%E6%9C%AC"),
        ("/a/.hidden", "/a/.hidden"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a/..b", "/a/..b"),
        ("/v1.2/x", "/v1.2/x"),
        ("/a/.../..", "/a/"),
        ("//", "/"),
        ("/a/b//", "/a/b/"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn ambiguous_targets_are_refused() {
    let esc = |s: &str| PathError::AmbiguousEscape(s.into());
    let trailing = |s: &str| PathError::TrailingDotOrSpace(s.into());
    for (input, want) in [
        // Separators some servers accept.
        ("/a\\b", PathError::Backslash),
        ("/public\\..\\admin", PathError::Backslash),
        ("/a%2Fb", esc("%2F")),
        ("/a%2fb", esc("%2F")),
        ("/a%5Cb", esc("%5C")),
        ("/a%5cb", esc("%5C")),
        // Dot segments in disguise.
        ("/%2e%2e/admin", esc("%2E")),
        ("/public/.%2e/admin", esc("%2E")),
        ("/public/%c0%ae%c0%ae/admin", PathError::BadUtf8),
        ("/public/%e0%80%ae/x", PathError::BadUtf8),
        (
            "/public/%ef%bc%8e%ef%bc%8e/admin",
            PathError::Confusable('\u{FF0E}'),
        ),
        (
            "/public%ef%bc%8f..%ef%bc%8fadmin",
            PathError::Confusable('\u{FF0F}'),
        ),
        ("/a%E2%80%A4b", PathError::Confusable('\u{2024}')),
        ("/a%E2%88%95b", PathError::Confusable('\u{2215}')),
        ("/a%C2%A5b", PathError::Confusable('\u{00A5}')),
        ("/a%EF%BD%81", PathError::Confusable('\u{FF41}')),
        // Double encoding.
        ("/a%252Fb", esc("%25")),
        ("/%252e%252e/admin", esc("%25")),
        // Path parameters and matrix variables.
        ("/public/..;/admin", PathError::PathParameter),
        ("/admin;jsessionid=x", PathError::PathParameter),
        ("/public;x=1/y", PathError::PathParameter),
        ("/admin%3Bx", esc("%3B")),
        // Query and fragment delimiters, raw or encoded.
        ("/admin%3F.css", esc("%3F")),
        ("/admin%23.css", esc("%23")),
        ("/admin#x", PathError::BadChar),
        ("/admin?x", PathError::BadChar),
        // Control characters and truncation.
        ("/admin%00.css", PathError::EncodedControl("%00".into())),
        (
            "/a%0d%0aX-Injected:%201",
            PathError::EncodedControl("%0D".into()),
        ),
        ("/a%09", PathError::EncodedControl("%09".into())),
        ("/a%7f", PathError::EncodedControl("%7F".into())),
        // Malformed escapes (IIS %u too).
        ("/a%2", PathError::BadEscape),
        ("/a%", PathError::BadEscape),
        ("/a%zz", PathError::BadEscape),
        ("/%u002e%u002e/admin", PathError::BadEscape),
        ("/a%C3", PathError::BadUtf8),
        ("/a%C3x", PathError::BadUtf8),
        // Raw bytes.
        ("/a\tb", PathError::BadChar),
        ("/a b", PathError::BadChar),
        ("/a\0", PathError::BadChar),
        ("/é", PathError::BadChar),
        // Windows trailing dots and spaces.
        ("/admin.", trailing("admin.")),
        ("/admin./x", trailing("admin.")),
        ("/public/..%20/admin", trailing("..%20")),
        ("/public/...", trailing("...")),
        ("/admin%20", trailing("admin%20")),
        ("/admin.%20.", trailing("admin.%20.")),
        ("/a/x%20/b", trailing("x%20")),
        // NTFS streams.
        ("/web.config::$DATA", PathError::DataStream),
        ("/admin:$i30:$INDEX_ALLOCATION", PathError::DataStream),
        ("/admin%3A%3A%24DATA", PathError::DataStream),
        // Not origin-form.
        ("a/b", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
        ("http://x/admin", PathError::NotAbsolute),
    ] {
        assert_eq!(normalize(input), Err(want), "{input}");
    }
}

#[test]
fn the_canonical_fast_path_agrees_with_remove_dot_segments() {
    // Every path of up to four segments drawn from the forms that matter.
    let parts = ["", ".", "..", "a", "b.", ".c", "...", "%2e"];
    let mut paths = vec![String::from("/")];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for p in &frontier {
            for s in parts {
                next.push(format!("{p}/{s}"));
            }
        }
        paths.extend(next.iter().cloned());
        frontier = next;
    }
    let mut fast = 0;
    for p in &paths {
        if is_canonical(p) {
            fast += 1;
            assert_eq!(remove_dot_segments(p), *p, "{p} is not canonical");
        }
    }
    assert!(
        fast > 100,
        "the fast path is taken for ordinary paths ({fast})"
    );
}

#[test]
fn the_plain_path_shortcut_agrees_with_the_full_normalisation() {
    // Every string of up to six characters over an alphabet of the characters the
    // shortcut decides on (separators, dots, `:$`, escapes, refused characters), and the
    // same strings under a realistic prefix.
    let alphabet = ['/', '.', 'a', ':', '$', '%', '2', ' ', ';'];
    let mut strings = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..6 {
        let mut next = Vec::with_capacity(frontier.len() * alphabet.len());
        for s in &frontier {
            for c in alphabet {
                next.push(format!("{s}{c}"));
            }
        }
        strings.extend(next.iter().cloned());
        frontier = next;
    }
    let mut shortcut = 0;
    for s in &strings {
        for p in [s.clone(), format!("/api/v1{s}")] {
            if is_plain_canonical(&p) {
                shortcut += 1;
                assert_eq!(normalize_slow(&p).as_deref(), Ok(p.as_str()), "{p:?}");
                // ... and is the received path itself, not a copy.
                assert!(
                    matches!(normalize(&p), Ok(Cow::Borrowed(b)) if std::ptr::eq(b, p.as_str())),
                    "{p:?}"
                );
            }
            assert_eq!(
                normalize(&p).map(Cow::into_owned),
                normalize_slow(&p),
                "{p:?}"
            );
        }
    }
    assert!(shortcut > 10_000, "ordinary paths take it ({shortcut})");
    for plain in [
        "/",
        "/a/",
        "/api/v1/orders/42",
        "/a:b/$c",
        "/~user/a-b_c.d!e",
    ] {
        assert!(is_plain_canonical(plain), "{plain}");
    }
    for full in [
        "", "a", "//a", "/a//b", "/./a", "/a/..", "/a.", "/a:$b", "/%61", "/a?b",
    ] {
        assert!(!is_plain_canonical(full), "{full}");
    }
}
