//! CORS as docs/api.md sets it: credentials allowed, so the request's `Origin` is reflected
//! (browsers refuse `*` with credentials); origins can be narrowed with `cors_origins`.

/// Answer headers a page's script may read besides the safelisted ones: what to do after a 405
/// or a 401, and when to come back.
pub const EXPOSE_HEADERS: &str = "Allow, WWW-Authenticate, Retry-After";
/// Browsers may cache a preflight this long (24 hours, as the spec says).
pub const MAX_AGE_SECS: u32 = 86400;

pub struct Cors {
    any: bool,
    origins: Vec<String>,
    /// Every method some route answers.
    methods: String,
}

impl Cors {
    /// `*` in the list allows every origin; `methods` is what preflights advertise.
    pub fn new(origins: &[String], methods: String) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect(),
            methods,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }

    /// Headers for an answer to a request from `origin`: none if there is no Origin or it is not
    /// allowed (the browser then keeps the answer from the page).
    pub fn headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        match origin {
            Some(o) if self.allows(o) => vec![
                ("Access-Control-Allow-Origin", o.to_string()),
                ("Access-Control-Allow-Credentials", "true".into()),
                ("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()),
            ],
            _ => Vec::new(),
        }
    }

    /// Extra headers for a preflight (`OPTIONS` with `Access-Control-Request-Method`): the
    /// methods the routes answer, the headers the browser asked for, cached for a day.
    pub fn preflight(&self, origin: Option<&str>, requested_headers: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = self.headers(origin);
        if h.is_empty() {
            return h;
        }
        h.push(("Access-Control-Allow-Methods", self.methods.clone()));
        if let Some(r) = requested_headers.filter(|r| !r.trim().is_empty()) {
            h.push(("Access-Control-Allow-Headers", r.to_string()));
        }
        h.push(("Access-Control-Max-Age", MAX_AGE_SECS.to_string()));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &[(&'static str, String)]) -> Vec<&'static str> {
        h.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn reflects_any_origin_by_default() {
        let c = Cors::new(&["*".into()], "GET, OPTIONS".into());
        let h = c.headers(Some("https://app.example"));
        assert_eq!(
            h,
            [
                ("Access-Control-Allow-Origin", "https://app.example".into()),
                ("Access-Control-Allow-Credentials", "true".into()),
                ("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()),
            ]
        );
        assert!(c.headers(None).is_empty(), "no Origin, no CORS headers");
        let p = c.preflight(Some("https://app.example"), Some("authorization, content-type"));
        assert!(p.contains(&("Access-Control-Allow-Headers", "authorization, content-type".into())));
        assert!(p.contains(&("Access-Control-Max-Age", "86400".into())));
        assert!(p.contains(&("Access-Control-Allow-Methods", "GET, OPTIONS".into())));
    }

    #[test]
    fn a_list_narrows_the_origins() {
        let c = Cors::new(&["https://good.example/".into()], String::new());
        assert_eq!(
            names(&c.headers(Some("https://good.example"))),
            ["Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"]
        );
        assert!(c.headers(Some("https://evil.example")).is_empty());
        assert!(c.preflight(Some("https://evil.example"), Some("x")).is_empty());
        assert!(Cors::new(&[], String::new()).headers(Some("https://good.example")).is_empty());
    }
}
