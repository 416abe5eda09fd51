//! The NVML facade end to end on this machine: a C program dlopens `libnvidia-ml.so.1` (the
//! facade) with the shim preloaded, against `vgpu-host` serving the fake driver
//! (fake_driver/libcuda.c + fake_driver/nvml_extras.c). The host gets a fake
//! `libnvidia-ml.so.1` of its own for the driver version (special call NVML_FACTS), or none.

mod support;

use std::path::Path;

use support::{
    built_nvml, built_shim, built_vgpuctl, c_program, run_client, ClientOutput, FakeDriver, Host,
};

/// A stand-in for the host's real NVML: only what vgpu-host asks.
const HOST_NVML: &str = r#"
#include <string.h>
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned len) {
    const char *text = "580.159.04";
    if (len < strlen(text) + 1) return 7;
    strcpy(v, text);
    return 0;
}
"#;

/// Calls NVML the way nvidia-smi and Ollama do.
const CLIENT: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } mem2_t;
typedef struct { char legacy[16]; unsigned domain, bus, device, id, subsys; char bus_id[32]; } pci_t;
int main(void) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 2; }
#define F(name, ...) int (*name)(__VA_ARGS__) = (int (*)(__VA_ARGS__))dlsym(h, #name); \
    if (!name) { printf("missing %s\n", #name); return 3; }
    F(nvmlInit_v2, void) F(nvmlShutdown, void) F(nvmlDeviceGetCount_v2, unsigned *)
    F(nvmlDeviceGetHandleByIndex_v2, unsigned, void **) F(nvmlDeviceGetName, void *, char *, unsigned)
    F(nvmlDeviceGetUUID, void *, char *, unsigned) F(nvmlDeviceGetMemoryInfo, void *, mem_t *)
    F(nvmlDeviceGetMemoryInfo_v2, void *, mem2_t *) F(nvmlSystemGetDriverVersion, char *, unsigned)
    F(nvmlDeviceGetHandleByUUID, const char *, void **) F(nvmlDeviceGetPciInfo_v3, void *, pci_t *)
    F(nvmlDeviceGetCudaComputeCapability, void *, int *, int *) F(nvmlDeviceGetTemperature, void *, int, unsigned *)
    F(nvmlSystemGetCudaDriverVersion, int *)
    F(nvmlDeviceGetP2PStatus, void *, void *, int, unsigned *)
    /* Each call runs before its results are printed (argument order is unspecified in C). */
    int rc = nvmlDeviceGetCount_v2(&(unsigned){0});
    printf("before_init count_rc=%d\n", rc);
    printf("init rc=%d\n", nvmlInit_v2());
    unsigned n = 0;
    rc = nvmlDeviceGetCount_v2(&n);
    printf("count rc=%d n=%u\n", rc, n);
    char version[80] = "";
    rc = nvmlSystemGetDriverVersion(version, sizeof version);
    printf("driver rc=%d version=%s\n", rc, version);
    int cuda = 0;
    rc = nvmlSystemGetCudaDriverVersion(&cuda);
    printf("cuda rc=%d version=%d\n", rc, cuda);
    for (unsigned i = 0; i < n; i++) {
        void *dev = 0, *again = 0;
        char name[96] = "", uuid[96] = "";
        mem_t m = {0};
        mem2_t m2 = {0};
        pci_t pci = {0};
        int major = 0, minor = 0;
        unsigned temp = 0;
        m2.version = sizeof(mem2_t) | (2u << 24);
        rc = nvmlDeviceGetHandleByIndex_v2(i, &dev);
        printf("dev%u handle rc=%d\n", i, rc);
        rc = nvmlDeviceGetName(dev, name, sizeof name);
        printf("dev%u name rc=%d %s\n", i, rc, name);
        rc = nvmlDeviceGetUUID(dev, uuid, sizeof uuid);
        printf("dev%u uuid rc=%d %s\n", i, rc, uuid);
        rc = nvmlDeviceGetHandleByUUID(uuid, &again);
        printf("dev%u byuuid rc=%d same=%d\n", i, rc, again == dev);
        rc = nvmlDeviceGetMemoryInfo(dev, &m);
        printf("dev%u mem rc=%d total=%llu free=%llu used=%llu\n", i, rc, m.total, m.free, m.used);
        rc = nvmlDeviceGetMemoryInfo_v2(dev, &m2);
        printf("dev%u mem2 rc=%d total=%llu free=%llu\n", i, rc, m2.total, m2.free);
        rc = nvmlDeviceGetPciInfo_v3(dev, &pci);
        printf("dev%u pci rc=%d %s bus=%u\n", i, rc, pci.bus_id, pci.bus);
        rc = nvmlDeviceGetCudaComputeCapability(dev, &major, &minor);
        printf("dev%u cc rc=%d %d.%d\n", i, rc, major, minor);
        rc = nvmlDeviceGetTemperature(dev, 0, &temp);
        printf("dev%u temp rc=%d\n", i, rc);
        /* As NCCL asks while it initialises: every pair, read (0) and write (1). */
        for (unsigned j = 0; j < n; j++) {
            void *other = 0;
            unsigned read = 99, write = 99;
            nvmlDeviceGetHandleByIndex_v2(j, &other);
            int r1 = nvmlDeviceGetP2PStatus(dev, other, 0, &read);
            int r2 = nvmlDeviceGetP2PStatus(dev, other, 1, &write);
            printf("dev%u p2p dev%u rc=%d,%d read=%u write=%u\n", i, j, r1, r2, read, write);
        }
        rc = nvmlDeviceGetP2PStatus(dev, dev, 5, &(unsigned){0});
        printf("dev%u p2p unknown index rc=%d\n", i, rc);
    }
    rc = nvmlDeviceGetName((void *)16, (char[8]){0}, 8);
    printf("bad_handle rc=%d\n", rc);
    printf("shutdown rc=%d\n", nvmlShutdown());
    rc = nvmlDeviceGetCount_v2(&n);
    printf("after rc=%d\n", rc);
    return 0;
}
"#;

type Run = ClientOutput;

fn run(host_nvml: bool, devices: &str, visible: Option<&str>) -> Run {
    let host_lib = c_program(
        "host-nvml/libnvidia-ml.so.1",
        HOST_NVML,
        &["-shared", "-fPIC"],
    );
    let client = c_program("nvml_client", CLIENT, &["-ldl"]);
    let facade = built_nvml();
    let mut host = Host::on_region("nvml").driver(FakeDriver::NvmlExtras);
    host = host.env("FAKE_CUDA_DEVICES", devices);
    if host_nvml {
        host = host.env("LD_LIBRARY_PATH", host_lib.parent().expect("dir"));
    }
    let mut host = host.start();
    let mut cmd = host.client(&client);
    cmd.env("LD_LIBRARY_PATH", facade.parent().expect("dir"));
    if let Some(v) = visible {
        cmd.env("CUDA_VISIBLE_DEVICES", v);
    }
    let run = run_client(&mut cmd);
    host.stop();
    // The facade asks the host through the shim's own channel (its private export table), so
    // the guest process has one worker, not a second one for the facade's questions.
    assert_eq!(host.count_lines(&["new client"]), 1, "{}", host.log_text());
    run
}

fn expect(run: &Run, line: &str) {
    assert!(
        run.stdout.lines().any(|l| l == line),
        "missing {line:?} in\n{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn nvml_answers_with_the_hosts_values() {
    let run = run(true, "2", None);
    expect(&run, "before_init count_rc=1");
    expect(&run, "init rc=0");
    expect(&run, "count rc=0 n=2");
    expect(&run, "driver rc=0 version=580.159.04");
    expect(&run, "cuda rc=0 version=12080");
    expect(&run, "dev0 name rc=0 Fake GPU");
    expect(
        &run,
        "dev0 uuid rc=0 GPU-10111213-1415-1617-1819-1a1b1c1d1e1f",
    );
    expect(
        &run,
        "dev1 uuid rc=0 GPU-20212223-2425-2627-2829-2a2b2c2d2e2f",
    );
    expect(&run, "dev1 byuuid rc=0 same=1");
    let (total, free) = (80u64 << 30, 60u64 << 30);
    expect(
        &run,
        &format!(
            "dev0 mem rc=0 total={total} free={free} used={}",
            total - free
        ),
    );
    expect(&run, &format!("dev1 mem2 rc=0 total={total} free={free}"));
    expect(&run, "dev1 pci rc=0 00000000:18:00.0 bus=24");
    expect(&run, "dev0 cc rc=0 9.0");
    expect(&run, "dev0 temp rc=3");
    expect(&run, "dev0 p2p dev0 rc=0,0 read=0 write=0");
    expect(&run, "dev0 p2p dev1 rc=0,0 read=5 write=5");
    expect(&run, "dev1 p2p dev1 rc=0,0 read=0 write=0");
    expect(&run, "dev1 p2p unknown index rc=2");
    expect(&run, "bad_handle rc=2");
    expect(&run, "shutdown rc=0");
    expect(&run, "after rc=1");
}

#[test]
fn visible_devices_and_a_host_without_nvml() {
    let run = run(false, "2", Some("1"));
    expect(&run, "count rc=0 n=1");
    expect(
        &run,
        "dev0 uuid rc=0 GPU-20212223-2425-2627-2829-2a2b2c2d2e2f",
    );
    expect(&run, "dev0 pci rc=0 00000000:18:00.0 bus=24");
    // No host NVML and no /proc/driver/nvidia/version here: not a made-up version.
    if !Path::new("/proc/driver/nvidia/version").exists() {
        expect(&run, "driver rc=3 version=");
    }
}

/// Holds `argv[1]` MiB of device memory until its stdin closes.
const HOLDER: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(cuda, "cuInit");
    int (*alloc)(unsigned long long *, size_t) =
        (int (*)(unsigned long long *, size_t))dlsym(cuda, "cuMemAlloc_v2");
    unsigned long long d = 0;
    if (argc < 2 || init(0) || alloc(&d, (size_t)atoi(argv[1]) << 20)) return 2;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
"#;

/// Lists the compute processes of device 0 the way nvidia-smi asks (size first, then fill).
const PROCESSES: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
typedef struct { unsigned pid; unsigned long long used; unsigned gi, ci; } info_t;
typedef struct { unsigned pid; unsigned long long used; } info_v1_t;
int main(void) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!h) return 2;
    int (*init)(void) = (int (*)(void))dlsym(h, "nvmlInit_v2");
    int (*get)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    int (*procs)(void *, unsigned *, info_t *) =
        (int (*)(void *, unsigned *, info_t *))dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v3");
    int (*procs_v1)(void *, unsigned *, info_v1_t *) =
        (int (*)(void *, unsigned *, info_v1_t *))dlsym(h, "nvmlDeviceGetComputeRunningProcesses");
    void *dev = 0;
    if (init() || get(0, &dev)) return 3;
    unsigned n = 0;
    int rc = procs(dev, &n, NULL);
    printf("sizing rc=%d n=%u\n", rc, n);
    info_t list[16];
    n = 16;
    rc = procs(dev, &n, list);
    printf("list rc=%d n=%u\n", rc, n);
    for (unsigned i = 0; i < n; i++)
        printf("process pid=%u used=%llu gi=%x\n", list[i].pid, list[i].used, list[i].gi);
    info_v1_t v1[16];
    n = 16;
    rc = procs_v1(dev, &n, v1);
    printf("v1 rc=%d n=%u first_used=%llu\n", rc, n, n ? v1[0].used : 0ull);
    return 0;
}
"#;

#[test]
fn compute_processes_list_the_regions_clients_with_their_memory() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let holder = c_program("nvml_holder", HOLDER, &["-ldl"]);
    let lister = c_program("nvml_processes", PROCESSES, &["-ldl"]);
    let facade = built_nvml();
    let host = Host::on_region("nvml-procs")
        .driver(FakeDriver::NvmlExtras)
        .start();
    let mut holders = Vec::new();
    for mib in ["3", "5"] {
        let mut child = host
            .client(&holder)
            .arg(mib)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "ready");
        holders.push(child);
    }
    let want: Vec<String> = holders
        .iter()
        .zip([3u64, 5])
        .map(|(c, mib)| format!("process pid={} used={} gi=ffffffff", c.id(), mib << 20))
        .collect();
    // The supervisor publishes the list after each turn of its loop (≤ 50 ms) from gauges the
    // workers publish every 100 ms: ask until both holders are listed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let out = loop {
        let mut cmd = host.client(&lister);
        cmd.env("LD_LIBRARY_PATH", facade.parent().expect("dir"));
        let out = run_client(&mut cmd);
        if want.iter().all(|w| out.stdout.lines().any(|l| l == w)) {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed {want:?}:\n{}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Both holders and the lister itself (no memory).
    expect(&out, "sizing rc=7 n=3");
    expect(&out, "list rc=0 n=3");
    assert!(out.stdout.contains("used=0 gi=ffffffff"), "{}", out.stdout);
    assert!(out.stdout.contains("v1 rc=0 n=3"), "{}", out.stdout);
    // `vgpuctl smi` on the same region lists them below its device table.
    let smi = std::process::Command::new(built_vgpuctl())
        .args(["smi", "--region"])
        .arg(host.region())
        .arg("--shim")
        .arg(built_shim())
        .arg("--nvml")
        .arg(facade)
        .output()
        .expect("vgpuctl smi");
    let text = String::from_utf8_lossy(&smi.stdout);
    assert!(
        smi.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&smi.stderr)
    );
    for (h, mib) in holders.iter().zip([3, 5]) {
        let row = format!("0    {:<8}  {:>6} MiB", h.id(), mib);
        assert!(text.lines().any(|l| l == row), "no {row:?} in\n{text}");
    }
    for mut h in holders {
        drop(h.stdin.take());
        h.wait().expect("holder exits");
    }
}
