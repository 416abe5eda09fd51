//! `vgpuctl host vm-xml`: the libvirt `<shmem>` device parses as XML, has the element names,
//! model and size libvirt expects, names the region file the host unit serves for the same
//! instance, and is what docs/vm.md shows.

mod common;

use clap::Parser;
use common::*;
use vgpuctl::cli::Cli;

/// The one `<shmem>` element of `xml`: (name, model type, size in bytes), after checking that
/// it has exactly the children `model` and `size`.
fn parse_shmem(xml: &str) -> (String, String, u64) {
    let doc = roxmltree::Document::parse(xml).expect("vm-xml prints well-formed XML");
    let shmem = doc.root_element();
    assert_eq!(shmem.tag_name().name(), "shmem");
    let names: Vec<&str> = shmem.attributes().map(|a| a.name()).collect();
    assert_eq!(names, ["name"], "{xml}");
    let children: Vec<roxmltree::Node> = shmem.children().filter(|n| n.is_element()).collect();
    let tags: Vec<&str> = children.iter().map(|n| n.tag_name().name()).collect();
    assert_eq!(tags, ["model", "size"], "{xml}");
    let model = children[0]
        .attribute("type")
        .expect("model type")
        .to_owned();
    let unit = children[1].attribute("unit").expect("size unit");
    let shift = match unit {
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => panic!("unexpected size unit {other}"),
    };
    let value: u64 = children[1]
        .text()
        .expect("size value")
        .trim()
        .parse()
        .unwrap();
    (
        shmem.attribute("name").unwrap().to_owned(),
        model,
        value << shift,
    )
}

/// The host unit that `host install` writes into a staged root: (region template of ExecStart,
/// REGION_SIZE), both read back from the unit's text.
fn host_unit(args: &[&str]) -> (String, u64) {
    let t = TempDir::new("vmxml-host");
    let r = root_arg(&t);
    let mut all = vec!["--root", r.as_str(), "host", "install"];
    all.extend_from_slice(args);
    let ran = vgpuctl(&all);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let unit = read(t.path(), "/etc/systemd/system/vgpu-host@.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = |flag: &str| words[words.iter().position(|w| *w == flag).expect(flag) + 1];
    assert_eq!(at("--region-size"), "${REGION_SIZE}", "{unit}");
    assert_eq!(
        at("--doorbell"),
        "poll",
        "a VM region needs Poll doorbells: {unit}"
    );
    assert!(words.contains(&"--keep-region"), "{unit}");
    assert_eq!(at("--peer-timeout-ms"), "${PEER_TIMEOUT_MS}", "{unit}");
    assert!(
        unit.contains("\nEnvironment=PEER_TIMEOUT_MS=5000\n"),
        "{unit}"
    );
    let size = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=REGION_SIZE="))
        .expect("REGION_SIZE")
        .parse()
        .unwrap();
    (at("--region").to_owned(), size)
}

#[test]
fn default_device_is_the_region_the_host_unit_serves() {
    let (template, unit_size) = host_unit(&[]);
    let ran = vgpuctl(&["host", "vm-xml", "--instance", "vm1"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stderr, "", "no note at the host's default size");
    let (name, model, size) = parse_shmem(&ran.stdout);
    assert_eq!(model, "ivshmem-plain");
    assert_eq!(size, 64 << 20);
    assert_eq!(size, unit_size, "the unit serves the device's size");
    // libvirt backs <shmem name='N'> with /dev/shm/N; the unit serves the template for vm1.
    assert_eq!(format!("/dev/shm/{name}"), template.replace("%i", "vm1"));
}

#[test]
fn other_template_and_size_follow_the_unit() {
    let (template, _) = host_unit(&["--region-template", "/dev/shm/gpu-%i-region"]);
    let ran = vgpuctl(&[
        "host",
        "vm-xml",
        "--instance",
        "db-2",
        "--region-template",
        "/dev/shm/gpu-%i-region",
        "--size",
        "1G",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let (name, model, size) = parse_shmem(&ran.stdout);
    assert_eq!(model, "ivshmem-plain");
    assert_eq!(size, 1 << 30);
    assert_eq!(format!("/dev/shm/{name}"), template.replace("%i", "db-2"));
    assert!(
        ran.stderr
            .contains("vgpu-host@db-2.service must serve 1073741824 bytes")
            && ran.stderr.contains("Environment=REGION_SIZE=1073741824"),
        "{}",
        ran.stderr
    );
}

#[test]
fn refusals() {
    for (args, why) in [
        (&["--instance", "vm1", "--size", "100M"][..], "power of two"),
        (&["--instance", "vm1", "--size", "32M"][..], "power of two"),
        (&["--instance", "vm/1"][..], "instance name"),
        (
            &["--instance", "vm1", "--region-template", "/dev/shm/one"][..],
            "has no %i",
        ),
        (
            &["--instance", "vm1", "--region-template", "/run/vgpu-%i"][..],
            "not directly in /dev/shm",
        ),
    ] {
        let mut all = vec!["host", "vm-xml"];
        all.extend_from_slice(args);
        let ran = vgpuctl(&all);
        assert_eq!(ran.code, 1, "{args:?}");
        assert_eq!(ran.stdout, "", "{args:?}");
        assert!(ran.stderr.contains(why), "{args:?}: {}", ran.stderr);
    }
    assert!(Cli::try_parse_from([
        "vgpuctl",
        "host",
        "vm-xml",
        "--instance",
        "a",
        "--size",
        "big"
    ])
    .is_err());
}

#[test]
fn docs_show_exactly_what_the_command_prints() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vm.md")).unwrap();
    let command = "$ vgpuctl host vm-xml --instance vm1\n";
    let at = docs
        .find(command)
        .expect("docs/vm.md shows `$ vgpuctl host vm-xml --instance vm1`");
    let block = &docs[at + command.len()..];
    let end = block.find("```").expect("the output ends its code block");
    let ran = vgpuctl(&["host", "vm-xml", "--instance", "vm1"]);
    assert_eq!(&block[..end], ran.stdout);
    parse_shmem(&block[..end]);
}
