//! What a task asks of its LLM for some rows, so that batch mode can ask it ahead of
//! `process`: each task gives its requests through [`Planner`], and batch mode is the same for
//! every task.

use crate::error::Result;
use crate::response::Completion;
use crate::runner::{Request, cache_key};
use distill_storage::Row;

/// What the manager knows of one request.
pub enum Known {
    /// Its answer is in the request cache (the body as cached).
    Answer(Vec<u8>),
    /// It will not be asked in a job: a job failed it and the failure is settled (marked, or
    /// left to `process` to ask online).
    Settled,
    /// Nothing yet: it goes into a job.
    Missing,
}

/// A task's requests, as `process` makes them (a task implements it beside `Task`).
pub trait Planner: Send + Sync + 'static {
    /// The requests `process` sends first for `rows`, in any order. An error here (a row that
    /// cannot become a request) is left for `process` to report.
    fn requests(&self, rows: &[Row]) -> Result<Vec<Request>>;

    /// The request `process` sends after `request` was answered `answer`, if it asks again
    /// (`structured_generation` asks again when an answer does not match the schema).
    fn again(&self, request: &Request, answer: &[u8]) -> Option<Request> {
        let _ = (request, answer);
        None
    }

    /// The endpoint the requests go to, under the base URL (`chat/completions`).
    fn endpoint(&self) -> &'static str {
        "chat/completions"
    }

    /// Requests per row in the first round (`num_generations`), to size jobs in rows.
    fn lines_per_row(&self) -> u64 {
        1
    }

    /// Checks an answer from a job's output before it is cached, as online answers are: the
    /// record to cache (what `process` looks up under the request's key: the answer as
    /// received, unless the task caches another form), its input and output tokens, or why
    /// it cannot be used.
    fn accept(&self, body: Vec<u8>) -> Result<(Vec<u8>, u64, u64)> {
        let completion = Completion::parse("a batch job's output", &body)?;
        Ok((body, completion.input_tokens, completion.output_tokens))
    }
}

/// The requests still without an answer for `rows`: the first requests, followed through
/// the answers `known` has to the ones `process` would send next.
pub fn missing(
    planner: &dyn Planner,
    rows: &[Row],
    known: &mut dyn FnMut(&[u8; 32]) -> Result<Known>,
) -> Result<Vec<([u8; 32], Request)>> {
    let mut out = Vec::new();
    for mut request in planner.requests(rows)? {
        loop {
            let key = cache_key(&request.body, request.generation);
            match known(&key)? {
                Known::Missing => {
                    out.push((key, request));
                    break;
                }
                Known::Settled => break,
                Known::Answer(body) => match planner.again(&request, &body) {
                    Some(next) => request = next,
                    None => break,
                },
            }
        }
    }
    Ok(out)
}
