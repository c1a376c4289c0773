//! Progress per step: bars on a terminal, plain lines otherwise.

use crate::output::errln;
use distill::{Observer, Pipeline, PlanMode, RunEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

/// Draws one line per step.
pub struct Bars {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
}

impl Bars {
    /// Bars for every step of `pipeline`, drawn only when stderr is a terminal.
    pub fn new(pipeline: &Pipeline) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self {
                multi: None,
                bars: HashMap::new(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>16} {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = pipeline
            .nodes()
            .iter()
            .map(|node| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(node.name().to_owned());
                bar.set_message("waiting");
                (node.name().to_owned(), bar)
            })
            .collect();
        Self {
            multi: Some(multi),
            bars,
        }
    }

    /// Leaves the bars on screen as they are.
    pub fn finish(&self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
    }
}

impl Observer for Bars {
    fn on_event(&self, event: &RunEvent) {
        match event {
            RunEvent::Planned(plan) if plan.mode == PlanMode::Changed && plan.drops() => {
                errln!("the pipeline changed: keeping what is still valid");
                for step in &plan.steps {
                    errln!("  {step}");
                }
            }
            RunEvent::Planned(plan) if plan.mode == PlanMode::Changed => {
                errln!("the pipeline changed only in settings that change no row");
            }
            RunEvent::Started { resumed: true } => errln!("resuming from the run database"),
            RunEvent::StageStarted { stage, steps } if self.multi.is_none() => {
                errln!("stage {stage}: {}", steps.join(", "));
            }
            RunEvent::StageStarted { steps, .. } => {
                for bar in steps.iter().filter_map(|s| self.bars.get(s)) {
                    bar.reset_elapsed();
                    bar.set_message("running");
                }
            }
            RunEvent::BatchCommitted {
                step,
                rows,
                batches,
                last,
            } => match self.bars.get(step) {
                Some(bar) => {
                    bar.set_position(*rows);
                    let secs = bar.elapsed().as_secs_f64().max(0.001);
                    let done = if *last { ", done" } else { "" };
                    bar.set_message(format!(
                        "{rows} rows, {batches} batches, {:.0} rows/s{done}",
                        *rows as f64 / secs
                    ));
                    if *last {
                        bar.finish();
                    }
                }
                None if *last => errln!("{step}: done, {rows} rows in {batches} batches"),
                None => {}
            },
            RunEvent::StepFailed { step, error } => errln!("{step}: failed: {error}"),
            _ => {}
        }
    }
}
