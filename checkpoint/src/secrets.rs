//! Credentials stay out of every message: the object store's errors may quote a request URL
//! (with a signed query) or, in principle, a value it was configured with, and those messages
//! reach the log and the terminal.

/// Environment variables whose values are credentials for the targets a checkpoint reaches.
pub const CREDENTIAL_VARIABLES: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "HF_TOKEN",
];

/// `message` with every URL's query removed and every credential variable's value (of 4
/// characters or more) replaced by `<hidden>`.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    // A query starts at a `?` inside a URL and runs to the next blank or quote.
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>'))
            .unwrap_or(after.len());
        let url = &after[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?<query hidden>");
            }
            None => out.push_str(url),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    for name in CREDENTIAL_VARIABLES {
        if let Ok(value) = std::env::var(name)
            && value.len() >= 4
        {
            out = out.replace(&value, "<hidden>");
        }
    }
    out
}

/// `url` with a user and password in its authority, and its query, hidden: the form of a
/// URL a message may quote.
pub fn redact_url(url: &str) -> String {
    let url = match url.find(['?', '#']) {
        Some(q) => format!("{}?<query hidden>", &url[..q]),
        None => url.to_owned(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<hidden>@{}", &rest[at + 1..]),
        None => url.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_hidden() {
        assert_eq!(redact_url("s3://K:S@b/p"), "s3://<hidden>@b/p");
        assert_eq!(redact_url("az://c/p?sig=1"), "az://c/p?<query hidden>");
        assert_eq!(redact_url("file:///tmp/a@b"), "file:///tmp/a@b");
    }

    #[test]
    fn queries_are_cut_from_urls() {
        let m = scrub(
            "error sending request for url (https://acct.blob.core.windows.net/c/x?sig=SECRET&se=1): timed out",
        );
        assert_eq!(
            m,
            "error sending request for url (https://acct.blob.core.windows.net/c/x?<query hidden>): timed out"
        );
        assert_eq!(scrub("no url here"), "no url here");
        assert_eq!(scrub("s3://b/p failed"), "s3://b/p failed");
    }
}
