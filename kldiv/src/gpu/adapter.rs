//! Which GPU kldiv runs on, and the device it opens there.

use crate::error::{Error, Result};

/// Which adapter the engine runs on.
#[derive(Debug, Clone)]
pub struct AdapterDescription {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A software rasteriser (lavapipe, llvmpipe, WARP): correct, but no faster than a CPU.
    pub is_software: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub timestamps: bool,
    /// Whether the adapter computes in f64 (`SHADER_F64`).
    pub f64: bool,
    /// Whether the adapter has subgroup operations (`SUBGROUP`): workgroups then reduce
    /// through subgroup shuffles instead of a tree in workgroup memory.
    pub subgroups: bool,
}

impl AdapterDescription {
    pub(super) fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterDescription {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            f64: adapter.features().contains(wgpu::Features::SHADER_F64),
            subgroups: adapter.features().contains(wgpu::Features::SUBGROUP),
        }
    }
}

/// Adapter preference: a real GPU first, software rasterisers last.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The adapter `GpuEngine::new` opens: Vulkan, Metal or DX12 (never GL, where wgpu falls
/// back silently and which lacks what the kernels need), named like `KLDIV_ADAPTER` or
/// `WGPU_ADAPTER_NAME` when set, discrete GPUs first.
pub(super) fn preferred() -> Result<wgpu::Adapter> {
    // GL is never taken, so it is not even loaded (its EGL probing prints warnings and is
    // one more driver that can fail); WGPU_BACKEND still decides when set.
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all() - wgpu::Backends::GL);
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let wanted = std::env::var("KLDIV_ADAPTER")
        .or_else(|_| std::env::var("WGPU_ADAPTER_NAME"))
        .ok()
        .map(|s| s.to_lowercase());
    let mut candidates: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            info.backend != wgpu::Backend::Gl
                && wanted
                    .as_ref()
                    .is_none_or(|w| info.name.to_lowercase().contains(w))
        })
        .collect();
    candidates.sort_by_key(|a| rank(a.get_info().device_type));
    candidates.into_iter().next().ok_or_else(|| {
        Error::GpuUnavailable(match &wanted {
            Some(w) => format!("no Vulkan/Metal/DX12 adapter named like {w:?}"),
            None => "no Vulkan, Metal or DX12 adapter found (install a driver, e.g. \
                     mesa-vulkan-drivers for lavapipe)"
                .into(),
        })
    })
}

/// The adapter `GpuEngine::new` would open, described without opening a device (the
/// scheduler's calibration key needs no more).
pub fn preferred_info() -> Result<AdapterDescription> {
    Ok(AdapterDescription::of(&preferred()?))
}

/// A device on `adapter` with what the kernels use: its storage-binding and buffer limits,
/// timestamp queries, f64 arithmetic (SHADER_F64) and subgroup operations (SUBGROUP) when it
/// has them.
pub(super) fn open(
    adapter: &wgpu::Adapter,
) -> Result<(wgpu::Device, wgpu::Queue, AdapterDescription)> {
    let alimits = adapter.limits();
    let features = adapter.features()
        & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F64 | wgpu::Features::SUBGROUP);
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: alimits.max_storage_buffer_binding_size,
        max_buffer_size: alimits.max_buffer_size,
        ..wgpu::Limits::downlevel_defaults()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("kldiv"),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))
    .map_err(|e| Error::GpuUnavailable(format!("request_device failed: {e}")))?;
    let mut desc = AdapterDescription::of(adapter);
    desc.timestamps = features.contains(wgpu::Features::TIMESTAMP_QUERY);
    desc.f64 = features.contains(wgpu::Features::SHADER_F64);
    desc.subgroups = features.contains(wgpu::Features::SUBGROUP);
    Ok((device, queue, desc))
}
