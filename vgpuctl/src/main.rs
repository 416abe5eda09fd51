fn main() {
    eprintln!("vgpuctl: not built yet (issue 6)");
    std::process::exit(2);
}
