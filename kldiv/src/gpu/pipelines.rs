//! The bind-group layout every kernel shares, and compiled pipelines, cached per variant.

use super::shaders::{self, KernelFile, Reduce};
use crate::element::Dtype;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// One compiled variant: file, element type, entry point and override constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeKey {
    pub file: KernelFile,
    pub dtype: Dtype,
    pub entry: &'static str,
    pub div: u32,
    pub transform: u32,
    pub reduce: Reduce,
}

pub struct Pipelines {
    pub layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(KernelFile, Dtype, Reduce), wgpu::ShaderModule>>,
    pipes: Mutex<HashMap<PipeKey, wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Bindings: 0, 1 the inputs (read-only storage), 2 the records, 3 `Params` (uniform),
    /// 4 per-row data (shaders/shared/layout.wgsl).
    pub fn new(device: &wgpu::Device) -> Self {
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kldiv"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(4, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("kldiv"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        Pipelines {
            layout,
            pipeline_layout,
            modules: Mutex::new(HashMap::new()),
            pipes: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline for `key`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, key: PipeKey) -> Result<wgpu::ComputePipeline> {
        fn poisoned<G>(_: G) -> Error {
            Error::Gpu("poisoned lock".into())
        }
        let mut pipes = self.pipes.lock().map_err(poisoned)?;
        if let Some(p) = pipes.get(&key) {
            return Ok(p.clone());
        }
        let mut modules = self.modules.lock().map_err(poisoned)?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = modules
            .entry((key.file, key.dtype, key.reduce))
            .or_insert_with(|| {
                let src = shaders::source(key.file, key.dtype, key.reduce);
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("kldiv"),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                })
            })
            .clone();
        let constants: Vec<(&str, f64)> = match key.file {
            KernelFile::Probs => vec![("DIV", key.div as f64), ("TRANSFORM", key.transform as f64)],
            KernelFile::Logits | KernelFile::LogitsJs | KernelFile::LogitsAgree => vec![],
        };
        let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: Some(&self.pipeline_layout),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("pipeline creation failed: {e}")));
        }
        pipes.insert(key, pipe.clone());
        Ok(pipe)
    }
}
