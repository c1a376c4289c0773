//! Writes fixtures/runs/v2-stopped.redb: a run database of format version 2, stopped half way
//! (a stage of an inline generator, format_text, text_generation against the mock LLM and
//! keep_columns). Run once, on the commit before format version 3, then removed.

use distill::RunOptions;
use distill_engine::{Observer, RunEvent};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct StopAfter {
    stop: Arc<AtomicBool>,
}

impl Observer for StopAfter {
    fn on_event(&self, event: &RunEvent) {
        if let RunEvent::BatchCommitted { step, batches, .. } = event
            && step == "keep"
            && *batches >= 3
        {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn main() {
    let out = std::env::args().nth(1).expect("output directory");
    let server = MockLlm::start(Behaviour::default());
    let dir = std::path::Path::new(&out);
    let template = std::fs::read_to_string(dir.join("v2-stopped.yaml")).expect("pipeline");
    let yaml = template.replace("BASE_URL", &server.base_url());
    let tmp = tempfile::tempdir().expect("temp");
    let pipeline_file = tmp.path().join("p.yaml");
    std::fs::write(&pipeline_file, yaml).expect("pipeline");
    let pipeline = distill::load_pipeline(&pipeline_file).expect("pipeline");
    let db = dir.join("v2-stopped.redb");
    let _ = std::fs::remove_file(&db);
    let mut options = RunOptions::new(&db);
    options.workers = 1;
    options.observer = Some(Arc::new(StopAfter {
        stop: options.stop.clone(),
    }));
    let result = distill::run(&pipeline, &options);
    println!("run: {:?}", result.map(|s| s.leaves));
    println!("requests: {}", server.received().len());
}
