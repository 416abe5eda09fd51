//! The terminal side of `vgpuctl top`: ratatui over crossterm (raw mode, the alternate
//! screen), restored however the view ends (ratatui's panic hook covers a panic).

use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Row, Table};
use ratatui::Frame;

use crate::top::{cells, rows, summary, Sample, TITLES};
use crate::Error;

/// Puts the terminal back when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Whether a key ends the view: `q`, Esc, or Ctrl-C (raw mode keeps it from signalling).
fn quits(code: KeyCode, modifiers: KeyModifiers) -> bool {
    matches!(code, KeyCode::Char('q') | KeyCode::Esc)
        || (code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL))
}

/// Draws `first`, then a new sample from `next` every `interval`, until a quitting key.
///
/// # Errors
/// When the terminal cannot be set up, drawn on or read.
pub fn run(
    first: Sample,
    interval: Duration,
    mut next: impl FnMut() -> Result<Sample, Error>,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut previous: Option<Sample> = None;
    let mut current = first;
    let mut trouble: Option<String> = None;
    let mut due = Instant::now() + interval;
    loop {
        terminal.draw(|f| draw(f, previous.as_ref(), &current, trouble.as_deref()))?;
        let wait = due.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(key) = event::read()? {
                if key.kind == KeyEventKind::Press && quits(key.code, key.modifiers) {
                    return Ok(());
                }
            }
            continue;
        }
        due += interval;
        match next() {
            Ok(sample) => {
                previous = Some(std::mem::replace(&mut current, sample));
                trouble = None;
            }
            Err(e) => trouble = Some(format!("{e} (showing the last report)")),
        }
    }
}

fn draw(frame: &mut Frame, previous: Option<&Sample>, current: &Sample, trouble: Option<&str>) {
    let [head, note, body] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(frame.area());
    frame.render_widget(Line::from(summary(&current.report)), head);
    frame.render_widget(
        Line::from(trouble.unwrap_or("q quits · rates and latency over the last interval")),
        note,
    );
    let lines: Vec<[String; 14]> = rows(previous, current).iter().map(cells).collect();
    let widths: Vec<Constraint> = (0..TITLES.len())
        .map(|i| {
            let widest = lines
                .iter()
                .map(|l| l[i].chars().count())
                .chain([TITLES[i].len()])
                .max()
                .unwrap_or(0);
            if i + 1 == TITLES.len() {
                Constraint::Min(widest as u16)
            } else {
                Constraint::Length(widest as u16)
            }
        })
        .collect();
    let table = Table::new(lines.into_iter().map(Row::new), widths)
        .header(Row::new(TITLES).style(Style::default().add_modifier(Modifier::REVERSED)))
        .column_spacing(2);
    frame.render_widget(table, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_escape_and_ctrl_c_quit() {
        assert!(quits(KeyCode::Char('q'), KeyModifiers::NONE));
        assert!(quits(KeyCode::Esc, KeyModifiers::NONE));
        assert!(quits(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(!quits(KeyCode::Char('c'), KeyModifiers::NONE));
    }
}
