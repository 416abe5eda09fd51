fn main() {
    eprintln!("vgpu-host: not built yet (issue 4)");
    std::process::exit(2);
}
