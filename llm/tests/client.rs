//! The chat-completions client against the loopback mock server: retries, Retry-After,
//! timeouts, giving up, endpoint checks, per-endpoint limits.

use distill_llm::{Client, RetryPolicy};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
        timeout: Duration::from_millis(500),
        stop: None,
    }
}

fn body(text: &str) -> serde_json::Value {
    serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

fn content(answer: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(answer).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn answers_and_retries_500s() {
    let server = MockLlm::start(Behaviour {
        fail_every: Some(2),
        ..Behaviour::default()
    });
    let client = Client::new(vec![server.base_url()], 4, None, fast()).unwrap();
    let first = client.chat(&body("hello")).unwrap();
    assert_eq!(
        (content(&first.body).as_str(), first.retries),
        ("echo: hello", 0)
    );
    let second = client.chat(&body("again")).unwrap();
    assert_eq!(
        second.retries, 1,
        "request 2 got a 500, request 3 succeeded"
    );
    let statuses: Vec<u16> = server.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 500, 200]);
}

#[test]
fn honours_retry_after() {
    let server = MockLlm::start(Behaviour {
        rate_limit_every: Some(1),
        retry_after_secs: 1,
        ..Behaviour::default()
    });
    let client = Client::new(vec![server.base_url()], 1, None, fast()).unwrap();
    let started = Instant::now();
    let err = client.chat(&body("x")).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.retries, 3);
    assert!(
        err.error.to_string().contains("429") && err.error.to_string().contains("gave up after 4"),
        "{}",
        err.error
    );
    assert!(
        waited >= Duration::from_secs(3),
        "3 retries after Retry-After: 1 each, waited {waited:?}"
    );
}

#[test]
fn a_hung_request_times_out_and_is_retried() {
    let server = MockLlm::start(Behaviour {
        hang_every: Some(2),
        ..Behaviour::default()
    });
    let client = Client::new(vec![server.base_url()], 2, None, fast()).unwrap();
    client.chat(&body("one")).unwrap();
    let started = Instant::now();
    let answer = client.chat(&body("two")).unwrap();
    assert_eq!(answer.retries, 1);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(content(&answer.body), "echo: two");
}

#[test]
fn client_errors_are_not_retried_and_never_show_the_key() {
    let server = MockLlm::start(Behaviour {
        api_key: Some("sk-right".into()),
        ..Behaviour::default()
    });
    let wrong = Client::new(
        vec![server.base_url()],
        1,
        Some("sk-wrong-secret".into()),
        fast(),
    )
    .unwrap();
    let err = wrong.chat(&body("x")).unwrap_err();
    assert_eq!(err.retries, 0);
    assert!(
        err.error.to_string().contains("401") && !err.error.to_string().contains("sk-wrong-secret"),
        "{}",
        err.error
    );
    let check = wrong.check().unwrap_err().to_string();
    assert!(
        check.contains("refused the API key") && !check.contains("sk-wrong-secret"),
        "{check}"
    );
    let right = Client::new(vec![server.base_url()], 1, Some("sk-right".into()), fast()).unwrap();
    right.check().unwrap();
    assert_eq!(content(&right.chat(&body("ok")).unwrap().body), "echo: ok");
}

#[test]
fn unreachable_endpoint_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let client = Client::new(vec![url.clone()], 1, None, fast()).unwrap();
    let err = client.check().unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains("unreachable"), "{err}");
    let err = client.chat(&body("x")).unwrap_err();
    assert_eq!(
        err.retries, 3,
        "connection refused is retried: {}",
        err.error
    );
}

#[test]
fn requests_spread_over_endpoints_within_their_limits() {
    let slow = || {
        MockLlm::start(Behaviour {
            latency: Duration::from_millis(30),
            ..Behaviour::default()
        })
    };
    let (a, b) = (slow(), slow());
    let client = Arc::new(Client::new(vec![a.base_url(), b.base_url()], 3, None, fast()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    client.chat(&body(&format!("{t}-{i}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.count() + b.count(), 80);
    assert!(
        a.count() >= 20 && b.count() >= 20,
        "spread: {} / {}",
        a.count(),
        b.count()
    );
    assert!(
        a.peak_in_flight() <= 3 && b.peak_in_flight() <= 3,
        "limits: {} / {}",
        a.peak_in_flight(),
        b.peak_in_flight()
    );
    assert_eq!(
        a.peak_in_flight().max(b.peak_in_flight()),
        3,
        "the limit is used"
    );
}
