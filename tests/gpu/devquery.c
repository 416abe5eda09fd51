/* devquery: driver version, devices, names, UUIDs, memory, PCI ids and every attribute. */
#include "common.h"

int main(void) {
    int version = 0, count = 0;
    CK(cuInit(0));
    CK(cuDriverGetVersion(&version));
    printf("driver_version %d\n", version);
    CK(cuDeviceGetCount(&count));
    printf("device_count %d\n", count);
    EXPECT(count > 0);
    for (int d = 0; d < count; d++) {
        CUdevice dev;
        char name[256];
        CUuuid uuid;
        size_t total = 0;
        char bus[64];
        int major = 0, minor = 0, listed = 0, skipped = 0;
        CK(cuDeviceGet(&dev, d));
        CK(cuDeviceGetName(name, (int)sizeof name, dev));
        printf("device %d name %s\n", d, name);
        CK(cuDeviceGetUuid(&uuid, dev));
        printf("device %d uuid ", d);
        for (int i = 0; i < 16; i++) printf("%02x", (unsigned char)uuid.bytes[i]);
        printf("\n");
        CK(cuDeviceTotalMem(&total, dev));
        printf("device %d total_mem %zu\n", d, total);
        CK(cuDeviceGetPCIBusId(bus, (int)sizeof bus, dev));
        printf("device %d pci_bus_id %s\n", d, bus);
        CK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        CK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
        printf("device %d compute_capability %d.%d\n", d, major, minor);
        for (int a = 1; a < (int)CU_DEVICE_ATTRIBUTE_MAX; a++) {
            int value = 0;
            CUresult res = cuDeviceGetAttribute(&value, (CUdevice_attribute)a, dev);
            if (res != CUDA_SUCCESS) {
                printf("device %d attr %d error %s\n", d, a, err_name(res));
                skipped++;
                continue;
            }
            printf("device %d attr %d = %d\n", d, a, value);
            listed++;
        }
        printf("device %d attributes listed %d errored %d\n", d, listed, skipped);
        EXPECT(listed >= 30);
    }
    printf("PASS devquery\n");
    return 0;
}
