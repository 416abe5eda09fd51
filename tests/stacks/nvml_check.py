"""NVML through vgpu: natively the real libnvidia-ml.so.1, under `vgpuctl run` the facade
(libvgpu-nvml.so, preloaded after the shim). Prints only values that do not change between runs,
so native and vgpu outputs are diffed."""
import ctypes
import sys


class Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class PciInfo(ctypes.Structure):
    _fields_ = [("busIdLegacy", ctypes.c_char * 16), ("domain", ctypes.c_uint), ("bus", ctypes.c_uint),
                ("device", ctypes.c_uint), ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32)]


def main() -> int:
    nvml = ctypes.CDLL("libnvidia-ml.so.1")

    def ck(name, *args):
        rc = getattr(nvml, name)(*args)
        if rc != 0:
            print("FAIL", name, "->", rc)
            sys.exit(1)

    ck("nvmlInit_v2")
    text = ctypes.create_string_buffer(96)
    ck("nvmlSystemGetDriverVersion", text, 96)
    print("driver", text.value.decode())
    cuda = ctypes.c_int()
    ck("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(cuda))
    print("cuda_driver", cuda.value)
    count = ctypes.c_uint()
    ck("nvmlDeviceGetCount_v2", ctypes.byref(count))
    print("count", count.value)
    for i in range(count.value):
        handle = ctypes.c_void_p()
        ck("nvmlDeviceGetHandleByIndex_v2", i, ctypes.byref(handle))
        ck("nvmlDeviceGetName", handle, text, 96)
        print(i, "name", text.value.decode())
        ck("nvmlDeviceGetUUID", handle, text, 96)
        print(i, "uuid", text.value.decode())
        by_uuid = ctypes.c_void_p()
        ck("nvmlDeviceGetHandleByUUID", text, ctypes.byref(by_uuid))
        print(i, "handle_by_uuid_same", by_uuid.value == handle.value)
        memory = Memory()
        ck("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
        print(i, "memory_total", memory.total, "free<=total", memory.free <= memory.total)
        pci = PciInfo()
        ck("nvmlDeviceGetPciInfo_v3", handle, ctypes.byref(pci))
        print(i, "pci", pci.busId.decode(), hex(pci.pciDeviceId), hex(pci.pciSubSystemId))
        major, minor = ctypes.c_int(), ctypes.c_int()
        ck("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor))
        print(i, "capability", major.value, minor.value)
    ck("nvmlShutdown")
    print("PASS nvml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
