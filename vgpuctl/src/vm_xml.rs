//! `vgpuctl host vm-xml`: the libvirt `<shmem>` device that gives one VM the region its
//! `vgpu-host@<instance>.service` serves.
//!
//! libvirt backs an `ivshmem-plain` device named NAME with the file `/dev/shm/NAME` (QEMU's
//! `memory-backend-file,share=on`), and the guest sees that file as BAR2 of a PCI device
//! 1af4:1110. The host unit serves the region template with `%i` replaced by the instance name
//! ([`crate::host_install`]), so the device's name is the file name of that path, and the
//! template must put it directly in `/dev/shm`.

use crate::run::MIN_REGION_SIZE;

/// The folder libvirt creates `ivshmem-plain` backing files in.
pub const SHMEM_DIR: &str = "/dev/shm/";
/// One MiB: the unit of the printed size.
const MIB: u64 = 1 << 20;

/// Options of `vgpuctl host vm-xml`.
#[derive(Debug, Clone)]
pub struct VmXmlOptions {
    /// The host unit's instance name (`vgpu-host@<instance>.service`), usually the VM's name.
    pub instance: String,
    /// The host unit's region template, with `%i` for the instance name.
    pub region_template: String,
    /// Region size in bytes: a power of two (a PCI BAR) of at least [`MIN_REGION_SIZE`].
    pub size: u64,
}

/// Why no `<shmem>` device can be printed for these options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmXmlError {
    /// The instance name is empty or has characters outside `[A-Za-z0-9_.-]`.
    #[error("instance name {0:?} must be non-empty and use only A-Z a-z 0-9 _ . -")]
    BadInstance(String),
    /// The template has no `%i`, so every VM would share one region.
    #[error("--region-template {0:?} has no %i: every instance would share one region")]
    NoInstanceInTemplate(String),
    /// The region is not a file directly in `/dev/shm`, where libvirt puts `<shmem>` files.
    #[error("region {0} is not directly in /dev/shm, where libvirt puts <shmem> backing files")]
    NotInDevShm(String),
    /// The size is not a power of two of at least the minimum.
    #[error("size {0} bytes is not a power of two of at least {min} MiB (a PCI BAR the host can lay channels out in)", min = MIN_REGION_SIZE >> 20)]
    BadSize(u64),
}

/// The region path the host unit serves for `instance`.
pub fn region_path(region_template: &str, instance: &str) -> String {
    region_template.replace("%i", instance)
}

/// The `<shmem>` element for the options, ending with a newline.
///
/// # Errors
/// A [`VmXmlError`] naming the option that cannot work.
pub fn render(opts: &VmXmlOptions) -> Result<String, VmXmlError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if opts.instance.is_empty()
        || !opts.instance.chars().all(valid_char)
        || opts.instance.starts_with('.')
    {
        return Err(VmXmlError::BadInstance(opts.instance.clone()));
    }
    if !opts.region_template.contains("%i") {
        return Err(VmXmlError::NoInstanceInTemplate(
            opts.region_template.clone(),
        ));
    }
    let path = region_path(&opts.region_template, &opts.instance);
    let name = path
        .strip_prefix(SHMEM_DIR)
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| VmXmlError::NotInDevShm(path.clone()))?;
    if !opts.size.is_power_of_two() || opts.size < MIN_REGION_SIZE {
        return Err(VmXmlError::BadSize(opts.size));
    }
    Ok(format!(
        "<shmem name='{name}'>\n  <model type='ivshmem-plain'/>\n  <size unit='M'>{mib}</size>\n</shmem>\n",
        mib = opts.size / MIB
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(instance: &str, template: &str, size: u64) -> VmXmlOptions {
        VmXmlOptions {
            instance: instance.into(),
            region_template: template.into(),
            size,
        }
    }

    #[test]
    fn renders_the_default_region() {
        assert_eq!(
            render(&opts("vm1", "/dev/shm/vgpu-%i", 64 << 20)).unwrap(),
            "<shmem name='vgpu-vm1'>\n  <model type='ivshmem-plain'/>\n  <size unit='M'>64</size>\n</shmem>\n"
        );
        assert!(render(&opts("vm1", "/dev/shm/vgpu-%i", 1 << 30))
            .unwrap()
            .contains("<size unit='M'>1024</size>"));
    }

    #[test]
    fn refuses_what_libvirt_or_the_host_cannot_use() {
        assert_eq!(
            render(&opts("vm 1", "/dev/shm/vgpu-%i", 64 << 20)),
            Err(VmXmlError::BadInstance("vm 1".into()))
        );
        assert_eq!(
            render(&opts("vm1'/>", "/dev/shm/vgpu-%i", 64 << 20)),
            Err(VmXmlError::BadInstance("vm1'/>".into()))
        );
        assert_eq!(
            render(&opts("..", "/dev/shm/vgpu-%i", 64 << 20)),
            Err(VmXmlError::BadInstance("..".into()))
        );
        assert_eq!(
            render(&opts("vm1", "/dev/shm/vgpu", 64 << 20)),
            Err(VmXmlError::NoInstanceInTemplate("/dev/shm/vgpu".into()))
        );
        assert_eq!(
            render(&opts("vm1", "/run/vgpu/%i", 64 << 20)),
            Err(VmXmlError::NotInDevShm("/run/vgpu/vm1".into()))
        );
        assert_eq!(
            render(&opts("vm1", "/dev/shm/vgpu/%i", 64 << 20)),
            Err(VmXmlError::NotInDevShm("/dev/shm/vgpu/vm1".into()))
        );
        assert_eq!(
            render(&opts("vm1", "/dev/shm/vgpu-%i", 96 << 20)),
            Err(VmXmlError::BadSize(96 << 20))
        );
        assert_eq!(
            render(&opts("vm1", "/dev/shm/vgpu-%i", 32 << 20)),
            Err(VmXmlError::BadSize(32 << 20))
        );
    }
}
