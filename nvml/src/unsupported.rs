//! Common NVML queries the facade cannot answer truthfully yet (the host's sensors, clocks,
//! graphics processes): each is exported and answers `NVML_ERROR_NOT_SUPPORTED` (3), which tools handle
//! as "this GPU does not report it", instead of the process failing to resolve the symbol.
//!
//! The functions are declared without parameters: with the C calling convention the caller
//! passes and cleans up its arguments, and these bodies read none and write through no pointer.

use crate::types::{NvmlReturn, ERROR_NOT_SUPPORTED};

macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: answers `NVML_ERROR_NOT_SUPPORTED`.")]
            #[no_mangle]
            #[allow(non_snake_case)]
            pub extern "C" fn $name() -> NvmlReturn {
                ERROR_NOT_SUPPORTED
            }
        )*

        /// Every name exported by this module, in the order listed.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

not_supported! {
    nvmlDeviceGetUtilizationRates,
    nvmlDeviceGetEncoderUtilization,
    nvmlDeviceGetDecoderUtilization,
    nvmlDeviceGetTemperature,
    nvmlDeviceGetTemperatureV,
    nvmlDeviceGetTemperatureThreshold,
    nvmlDeviceGetFanSpeed,
    nvmlDeviceGetFanSpeed_v2,
    nvmlDeviceGetPowerUsage,
    nvmlDeviceGetPowerState,
    nvmlDeviceGetPowerManagementLimit,
    nvmlDeviceGetPowerManagementDefaultLimit,
    nvmlDeviceGetEnforcedPowerLimit,
    nvmlDeviceGetTotalEnergyConsumption,
    nvmlDeviceGetPerformanceState,
    nvmlDeviceGetClockInfo,
    nvmlDeviceGetMaxClockInfo,
    nvmlDeviceGetClock,
    nvmlDeviceGetCurrentClocksThrottleReasons,
    nvmlDeviceGetCurrentClocksEventReasons,
    nvmlDeviceGetGraphicsRunningProcesses,
    nvmlDeviceGetGraphicsRunningProcesses_v2,
    nvmlDeviceGetGraphicsRunningProcesses_v3,
    nvmlDeviceGetProcessUtilization,
    nvmlDeviceGetComputeMode,
    nvmlDeviceGetPersistenceMode,
    nvmlDeviceGetDisplayMode,
    nvmlDeviceGetDisplayActive,
    nvmlDeviceGetEccMode,
    nvmlDeviceGetTotalEccErrors,
    nvmlDeviceGetMigMode,
    nvmlDeviceGetSerial,
    nvmlDeviceGetVbiosVersion,
    nvmlDeviceGetBoardPartNumber,
    nvmlDeviceGetBrand,
    nvmlDeviceGetBAR1MemoryInfo,
    nvmlDeviceGetPcieThroughput,
    nvmlDeviceGetCurrPcieLinkGeneration,
    nvmlDeviceGetCurrPcieLinkWidth,
    nvmlDeviceGetMaxPcieLinkGeneration,
    nvmlDeviceGetMaxPcieLinkWidth,
    nvmlDeviceGetNvLinkState,
    nvmlDeviceGetTopologyCommonAncestor,
    nvmlDeviceGetCpuAffinity,
    nvmlDeviceGetMemoryAffinity,
    nvmlSystemGetProcessName,
    nvmlSystemGetHicVersion,
    nvmlUnitGetCount,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_function_answers_not_supported() {
        assert_eq!(nvmlDeviceGetTemperature(), ERROR_NOT_SUPPORTED);
        assert_eq!(
            nvmlDeviceGetGraphicsRunningProcesses_v3(),
            ERROR_NOT_SUPPORTED
        );
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len(), "a name is listed twice");
    }
}
