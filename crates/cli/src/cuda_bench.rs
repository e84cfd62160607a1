//! The GPU side of `optjit bench`: the compiled step timed with CUDA events, next to the device's
//! copy bandwidth and the project's hand-fused CUDA C AdamW (compiled at run time with NVRTC).

use crate::workload;
use optjit_ir::DType;
use optjit_runtime::cudarc::driver::{CudaSlice, DriverError, LaunchConfig, PushKernelArg};
use optjit_runtime::cudarc::nvrtc;
use optjit_runtime::half;
use optjit_runtime::{CudaDevice, CudaError, CudaOptimizer, DeviceFloat, Setup, Stats};
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The hand-fused reference kernel's source.
const REFERENCE_SOURCE: &str = include_str!("adamw_reference.cu");

/// What the GPU run measured.
pub struct CudaTimes {
    /// The compiled step's counters.
    pub stats: Stats,
    /// Median step time (ms, CUDA events).
    pub step_ms: f64,
    /// Median time the host spends inside `step` (ms): the scalar program, copies, launches.
    pub host_ms: f64,
    /// Mean step time (ms) of the same number of steps back to back between two events, as a
    /// training loop runs them: each step's host work overlaps the previous step's kernels.
    pub pipelined_ms: f64,
    /// Device-to-device copy bandwidth, bytes read plus written per second / 1e9.
    pub copy_gb_per_s: f64,
    /// Median step time of the hand-fused AdamW reference (ms), when the optimizer is AdamW
    /// with its default options and NVRTC could be loaded (otherwise the reason is printed on
    /// stderr).
    pub reference_ms: Option<f64>,
    /// The device's name.
    pub device: String,
}

fn cuda(e: CudaError) -> String {
    e.to_string()
}

/// A driver error while `doing`.
fn driver(doing: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |source| CudaError::Driver {
        doing: doing.into(),
        source,
    }
}

/// The median of `times` (NaN when empty).
pub(crate) fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `steps` steps (after 3 warm-ups) of `definition` set up as `setup` on `device`.
pub fn run(
    device: &Arc<CudaDevice>,
    definition: &Definition,
    setup: Setup,
    steps: usize,
    reference: bool,
) -> Result<CudaTimes, String> {
    match setup.dtype {
        DType::BF16 => time_steps::<half::bf16>(device, definition, setup, steps, reference),
        DType::F16 => time_steps::<half::f16>(device, definition, setup, steps, reference),
        _ => time_steps::<f32>(device, definition, setup, steps, reference),
    }
}

/// [`run`] on tensors of `T`.
fn time_steps<T: DeviceFloat>(
    device: &Arc<CudaDevice>,
    definition: &Definition,
    setup: Setup,
    steps: usize,
    reference: bool,
) -> Result<CudaTimes, String> {
    let sizes: Vec<usize> = setup.shapes.iter().map(|s| s.iter().product()).collect();
    let hypers = setup.hypers.clone();
    let (params, grads) = workload::data(&sizes);
    let upload = |t: &[f32]| device.upload(&t.iter().map(|&x| T::from_f32(x)).collect::<Vec<_>>());
    let mut params: Vec<CudaSlice<T>> = (params.iter().map(|p| upload(p)))
        .collect::<Result<_, _>>()
        .map_err(cuda)?;
    let grads: Vec<CudaSlice<T>> = (grads.iter().map(|g| upload(g)))
        .collect::<Result<_, _>>()
        .map_err(cuda)?;
    let mut opt =
        CudaOptimizer::new(definition, setup, device.clone()).map_err(|e| e.to_string())?;
    let (mut times, mut host_times) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for k in 0..steps + 3 {
        let mut host = 0.0;
        let ms = device
            .time_ms(|| {
                let started = std::time::Instant::now();
                let result = opt.step(&mut params, &grads);
                host = started.elapsed().as_secs_f64() * 1e3;
                result
            })
            .map_err(|e| e.to_string())?;
        if k >= 3 {
            times.push(f64::from(ms));
            host_times.push(host);
        }
    }
    let total = device
        .time_ms(|| (0..steps).try_for_each(|_| opt.step(&mut params, &grads)))
        .map_err(|e| e.to_string())?;
    let pipelined_ms = f64::from(total) / steps.max(1) as f64;
    drop(params);
    drop(grads);
    let elems: usize = sizes.iter().sum();
    let reference_ms = match reference.then(|| reference_adamw(device, elems, &hypers, steps)) {
        Some(Ok(ms)) => Some(ms),
        Some(Err(why)) => {
            eprintln!("optjit: bench: no hand-fused reference time: {why}");
            None
        }
        None => None,
    };
    Ok(CudaTimes {
        stats: opt.stats(),
        step_ms: median(times),
        host_ms: median(host_times),
        pipelined_ms,
        copy_gb_per_s: copy_bandwidth(device).map_err(cuda)?,
        reference_ms,
        device: device.name(),
    })
}

/// Device-to-device copy of 2^28 floats: bytes read plus written per second / 1e9, as the
/// PyTorch anchor measures it.
fn copy_bandwidth(device: &CudaDevice) -> Result<f64, CudaError> {
    let n = 1usize << 28;
    let stream = device.stream();
    let src = stream
        .alloc_zeros::<f32>(n)
        .map_err(driver("allocating the copy benchmark"))?;
    let mut dst = stream
        .alloc_zeros::<f32>(n)
        .map_err(driver("allocating the copy benchmark"))?;
    let mut times = Vec::new();
    for k in 0..23 {
        let ms = device.time_ms(|| {
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(driver("copying on the device"))
        })?;
        if k >= 3 {
            times.push(f64::from(ms));
        }
    }
    Ok(8.0 * n as f64 / (median(times) * 1e-3) / 1e9)
}

/// The hand-fused AdamW over one flat buffer of `elems` elements: median ms per step.
fn reference_adamw(
    device: &CudaDevice,
    elems: usize,
    hypers: &BTreeMap<String, f64>,
    steps: usize,
) -> Result<f64, String> {
    // SAFETY: only probes whether the library can be loaded (cudarc panics on a missing one).
    if !unsafe { nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so) not found; PyTorch's CUDA wheels ship it under \
                    site-packages/nvidia/cu13/lib (add it to LD_LIBRARY_PATH)"
                .into(),
        );
    }
    let ptx = nvrtc::compile_ptx(REFERENCE_SOURCE)
        .map_err(|e| format!("NVRTC could not compile the reference kernel: {e:?}"))?;
    let module = device
        .context()
        .load_module(ptx)
        .map_err(|e| format!("loading the reference kernel: {e}"))?;
    let function = module
        .load_function("adamw_reference")
        .map_err(|e| format!("finding the reference kernel: {e}"))?;
    let n = elems.div_ceil(4) * 4;
    let (p, g) = workload::data(&[n]);
    let mut p = device.upload(&p[0]).map_err(cuda)?;
    let g = device.upload(&g[0]).map_err(cuda)?;
    let zeros = vec![0f32; n];
    let mut m = device.upload(&zeros).map_err(cuda)?;
    let mut v = device.upload(&zeros).map_err(cuda)?;
    let h = |name: &str, default: f64| hypers.get(name).copied().unwrap_or(default);
    let (lr, beta1, beta2, eps, wd) = (
        h("lr", 1e-3),
        h("beta1", 0.9),
        h("beta2", 0.999),
        h("eps", 1e-8),
        h("weight_decay", 1e-2),
    );
    let n4 = (n / 4) as u64;
    let config = LaunchConfig {
        // Grid-stride: enough blocks to fill any current GPU, fewer for small buffers.
        grid_dim: ((n / 4).div_ceil(256).clamp(1, 1 << 12) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut times = Vec::new();
    for t in 1..=steps + 3 {
        let t_f = t as f64;
        let scalars = [
            (1.0 - lr * wd) as f32,
            beta1 as f32,
            beta2 as f32,
            (lr / (1.0 - beta1.powf(t_f))) as f32,
            (1.0 / (1.0 - beta2.powf(t_f)).sqrt()) as f32,
            eps as f32,
        ];
        let ms = device.time_ms(|| {
            let mut launch = device.stream().launch_builder(&function);
            launch.arg(&mut p).arg(&g).arg(&mut m).arg(&mut v).arg(&n4);
            for s in &scalars {
                launch.arg(s);
            }
            // SAFETY: the arguments match adamw_reference's signature; the four buffers hold
            // n = 4 * n4 floats each.
            unsafe { launch.launch(config) }
                .map(drop)
                .map_err(driver("launching the reference kernel"))
        });
        let ms = ms.map_err(cuda)?;
        if t > 3 {
            times.push(f64::from(ms));
        }
    }
    Ok(median(times))
}
