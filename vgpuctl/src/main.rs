//! `vgpuctl` binary: parses the command line and runs it against the live system, or against a
//! staged root (`--root`) with systemctl/journalctl recorded instead of run.

use clap::Parser;
use vgpuctl::cli::{run, Cli};
use vgpuctl::systemctl::{CommandRunner, LiveRunner, RecordingRunner};

fn main() {
    let cli = Cli::parse();
    let mut live = LiveRunner;
    let mut recorder = RecordingRunner::new();
    let runner: &mut dyn CommandRunner = if cli.root.is_some() {
        &mut recorder
    } else {
        &mut live
    };
    let code = run(cli, runner, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
