//! The `Date` header value of the proxy's own HTTP/2 responses (RFC 9110 §6.6.1; hyper
//! adds one to its HTTP/1 responses), formatted once a second per thread.

use std::{
    cell::RefCell,
    time::{SystemTime, UNIX_EPOCH},
};

use http::HeaderValue;

thread_local! {
    /// The second last formatted, and its value (cloning it shares the bytes).
    static CACHED: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// Now, as an HTTP date.
pub(crate) fn now() -> Option<HeaderValue> {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    CACHED.with_borrow_mut(|cached| match cached {
        Some((at, value)) if *at == second => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok()?;
            *cached = Some((second, value.clone()));
            Some(value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_an_http_date_of_now() {
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let value = now().expect("a date");
        let parsed = httpdate::parse_http_date(value.to_str().expect("ASCII")).expect("a date");
        assert!(parsed >= before - std::time::Duration::from_secs(1));
        assert!(parsed <= SystemTime::now());
        // A second call, from the cache or formatted anew, is of the same second or later,
        // never of a second long gone.
        let again = now().expect("a date");
        let again = httpdate::parse_http_date(again.to_str().expect("ASCII")).expect("a date");
        assert!(again >= parsed);
        assert!(again <= SystemTime::now());
    }
}
