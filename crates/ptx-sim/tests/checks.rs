//! The interpreter's semantics and the faults it reports, each on a small kernel.

use optjit_ptx_sim::{Device, Module, SimError};

/// An entry `k(.param .u64 x)` with a few registers of each kind, whose body is `body`.
fn kernel(body: &str) -> Module {
    let text = format!(
        ".version 8.0\n.target sm_80\n.address_size 64\n\n.visible .entry k(\n    .param .u64 x\n)\n\
         .maxntid 256, 1, 1\n{{\n    .reg .pred %p<4>;\n    .reg .b32 %r<8>;\n    .reg .b64 %rd<8>;\n\
         .reg .f32 %f<8>;\n    .shared .align 16 .f32 s[64];\n{body}\n    ret;\n}}\n"
    );
    Module::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs `module` on `threads` threads of one block with `x` = a fresh buffer of `floats`;
/// returns the result and the buffer.
fn run(module: &Module, threads: usize, floats: &[f32]) -> (Result<u64, SimError>, Vec<f32>) {
    let mut device = Device::default();
    let bytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
    let x = device.memory.upload(&bytes);
    let result = device.launch(module, "k", 1, threads, &[x]);
    let out = device.memory.read_host(x, bytes.len()).expect("read back");
    let out = out
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    (result, out)
}

/// `%rd0` = x, `%r0` = tid.x, `%rd1` = &x[tid.x].
const THREAD_ADDRESS: &str = "    ld.param.u64 %rd0, [x];\n    mov.u32 %r0, %tid.x;\n    cvt.u64.u32 %rd2, %r0;\n    shl.b64 %rd3, %rd2, 2;\n    add.u64 %rd1, %rd0, %rd3;\n";

#[test]
fn each_thread_updates_its_element() {
    let module = kernel(&format!(
        "{THREAD_ADDRESS}    ld.global.f32 %f0, [%rd1];\n    fma.rn.f32 %f1, %f0, 0f40000000, 0f3F800000;\n    st.global.f32 [%rd1], %f1;"
    ));
    let (result, out) = run(&module, 3, &[1.0, 2.0, 3.0]);
    result.expect("runs");
    assert_eq!(out, [3.0, 5.0, 7.0]);
}

#[test]
fn a_shuffle_down_reads_the_lane_delta_above_up_to_the_clamp() {
    // Lane i: x[i] = lane (i + 16) while i + 16 <= 31, else its own value.
    let module = kernel(&format!(
        "{THREAD_ADDRESS}    ld.global.f32 %f0, [%rd1];\n    shfl.sync.down.b32 %f1, %f0, 16, 31, 0xffffffff;\n    st.global.f32 [%rd1], %f1;"
    ));
    let lanes: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let (result, out) = run(&module, 32, &lanes);
    result.expect("runs");
    let expected: Vec<f32> = (0..32)
        .map(|i| if i < 16 { i + 16 } else { i } as f32)
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn unsupported_instructions_are_refused_with_their_line() {
    let text = ".visible .entry k(\n.param .u64 x\n)\n{\n.reg .f32 %f<2>;\nadd.rn.ftz.f32 %f0, %f1, %f1;\nret;\n}\n";
    let error = Module::parse(text).expect_err("ftz is not simulated");
    assert!(error.to_string().contains("line 6"), "{error}");
    assert!(error.to_string().contains("add.rn.ftz.f32"), "{error}");
}

#[test]
fn a_barrier_that_some_threads_skip_is_reported() {
    let module = kernel(&format!(
        "{THREAD_ADDRESS}    setp.eq.u32 %p0, %r0, 0;\n    @%p0 bra $L_skip;\n    bar.sync 0;\n$L_skip:\n    mov.f32 %f0, 0f00000000;\n    st.global.f32 [%rd1], %f0;"
    ));
    let (result, _) = run(&module, 64, &[0.0; 64]);
    let error = result.expect_err("thread 0 never reaches the barrier");
    assert!(
        error.to_string().contains("barrier") || matches!(error, SimError::Deadlock(_)),
        "{error}"
    );
}

#[test]
fn two_threads_writing_one_element_are_a_race() {
    let module = kernel(
        "    ld.param.u64 %rd0, [x];\n    mov.f32 %f0, 0f3F800000;\n    st.global.f32 [%rd0], %f0;",
    );
    let (result, _) = run(&module, 2, &[0.0]);
    let error = result.expect_err("a race");
    assert!(matches!(error, SimError::Exec { .. }), "{error}");
    assert!(error.to_string().contains("both write"), "{error}");
}

#[test]
fn writing_what_the_launch_reads_through_the_non_coherent_cache_is_reported() {
    // Thread 0 reads x[0] through ld.global.nc; thread 1 then writes it.
    let module = kernel(&format!(
        "{THREAD_ADDRESS}    ld.global.nc.f32 %f0, [%rd0];\n    setp.eq.u32 %p0, %r0, 1;\n    @%p0 st.global.f32 [%rd0], %f0;"
    ));
    let (result, _) = run(&module, 2, &[0.0, 0.0]);
    let error = result.expect_err("an nc hazard");
    assert!(error.to_string().contains("non-coherent"), "{error}");
}

#[test]
fn accesses_outside_an_allocation_or_misaligned_fault() {
    let past_the_end = kernel("    ld.param.u64 %rd0, [x];\n    ld.global.f32 %f0, [%rd0+8];");
    let (result, _) = run(&past_the_end, 1, &[0.0, 0.0]);
    assert!(
        result
            .expect_err("out of bounds")
            .to_string()
            .contains("not inside one allocation")
    );

    let misaligned =
        kernel("    ld.param.u64 %rd0, [x];\n    ld.global.v4.f32 {%f0, %f1, %f2, %f3}, [%rd0+4];");
    let (result, _) = run(&misaligned, 1, &[0.0; 8]);
    assert!(
        result
            .expect_err("misaligned")
            .to_string()
            .contains("aligned to 16")
    );
}

#[test]
fn shared_memory_needs_a_barrier_between_threads() {
    // Thread t copies x[t] to s[t]; thread 0 then reads s[1] into x[0], with or without a barrier between.
    let body = |barrier: &str| {
        format!(
            "{THREAD_ADDRESS}    mov.u32 %r1, s;\n    mad.lo.u32 %r2, %r0, 4, %r1;\n    ld.global.f32 %f0, [%rd1];\n\
             st.shared.f32 [%r2], %f0;\n{barrier}    setp.eq.u32 %p0, %r0, 0;\n    @%p0 ld.shared.f32 %f1, [s+4];\n\
             @%p0 st.global.f32 [%rd1], %f1;"
        )
    };
    let (result, out) = run(&kernel(&body("    bar.sync 0;\n")), 2, &[5.0, 7.0]);
    result.expect("runs with the barrier");
    assert_eq!(out[0], 7.0);
    let (result, _) = run(&kernel(&body("")), 2, &[5.0, 7.0]);
    assert!(
        result
            .expect_err("a race")
            .to_string()
            .contains("no barrier")
    );
}

#[test]
fn launches_beyond_the_declared_block_size_are_refused() {
    let module = kernel("");
    let mut device = Device::default();
    let x = device.memory.alloc(4);
    let error = device
        .launch(&module, "k", 1, 512, &[x])
        .expect_err("512 > maxntid 256");
    assert!(error.to_string().contains(".maxntid"), "{error}");
    device
        .launch(&module, "k", 1, 256, &[x])
        .expect("256 threads");
}

#[test]
fn reading_a_register_before_writing_it_is_reported() {
    let module = kernel("    ld.param.u64 %rd0, [x];\n    st.global.f32 [%rd0], %f3;");
    let (result, _) = run(&module, 1, &[0.0]);
    let error = result.expect_err("%f3 was never written");
    assert!(
        error
            .to_string()
            .contains("reads %f3 before anything wrote it"),
        "{error}"
    );
}
