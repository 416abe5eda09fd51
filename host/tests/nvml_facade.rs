//! The NVML facade end to end on this machine: a C program dlopens `libnvidia-ml.so.1` (the
//! facade) with the shim preloaded, against `vgpu-host` serving the fake driver
//! (fake_driver/libcuda.c + fake_driver/nvml_extras.c). The host gets a fake
//! `libnvidia-ml.so.1` of its own for the driver version (special call NVML_FACTS), or none.

mod support;

use std::path::Path;

use support::{built_nvml, c_program, run_client, ClientOutput, FakeDriver, Host};

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
