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
        "{THREAD_ADDRESS}    setp.eq.u32 %p0, %r0, 0;\n    @%p0 ld.global.nc.f32 %f0, [%rd0];\n    setp.eq.u32 %p1, %r0, 1;\n    mov.f32 %f1, 0f3F800000;\n    @%p1 st.global.f32 [%rd0], %f1;"
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

/// Runs `body` on one thread with `x` = `inputs` followed by `outputs` zeros (f32 bits); returns
/// the outputs' bits. `%rd0` = x.
fn one_thread(body: &str, inputs: &[u32], outputs: usize) -> Vec<u32> {
    let module = kernel(&format!("    ld.param.u64 %rd0, [x];\n{body}"));
    let mut floats: Vec<f32> = inputs.iter().map(|&b| f32::from_bits(b)).collect();
    floats.extend(std::iter::repeat_n(0.0, outputs));
    let (result, out) = run(&module, 1, &floats);
    result.expect("runs");
    out[inputs.len()..].iter().map(|x| x.to_bits()).collect()
}

const NEG_ZERO: u32 = 0x8000_0000;
const QNAN: u32 = 0x7fc0_0000;

#[test]
fn min_and_max_order_negative_zero_first_and_nan_rules_follow_the_qualifier() {
    // x = [-0, +0, NaN, 1]; out = [min(-0,+0), min(+0,-0), max(-0,+0), min.NaN(1,NaN), min(1,NaN)]
    let body = "    ld.global.f32 %f0, [%rd0];\n    ld.global.f32 %f1, [%rd0+4];\n    ld.global.f32 %f2, [%rd0+8];\n    ld.global.f32 %f3, [%rd0+12];\n\
        min.f32 %f4, %f0, %f1;\n    st.global.f32 [%rd0+16], %f4;\n    min.f32 %f4, %f1, %f0;\n    st.global.f32 [%rd0+20], %f4;\n\
        max.f32 %f4, %f0, %f1;\n    st.global.f32 [%rd0+24], %f4;\n    min.NaN.f32 %f4, %f3, %f2;\n    st.global.f32 [%rd0+28], %f4;\n\
        min.f32 %f4, %f3, %f2;\n    st.global.f32 [%rd0+32], %f4;";
    let out = one_thread(body, &[NEG_ZERO, 0, QNAN, 1f32.to_bits()], 5);
    assert_eq!(out[..3], [NEG_ZERO, NEG_ZERO, 0]);
    assert_eq!(out[3], 0x7fff_ffff, "min.NaN gives the canonical NaN");
    assert_eq!(out[4], 1f32.to_bits(), "min without .NaN drops the NaN");
}

#[test]
fn ordered_comparisons_are_false_on_nan_and_neu_is_true() {
    // x = [NaN, 1]; out = [selp(1, 0, lt), selp(1, 0, neu)]
    let body = "    ld.global.f32 %f0, [%rd0];\n    ld.global.f32 %f1, [%rd0+4];\n    mov.f32 %f2, 0f3F800000;\n    mov.f32 %f3, 0f00000000;\n\
        setp.lt.f32 %p0, %f0, %f1;\n    selp.f32 %f4, %f2, %f3, %p0;\n    st.global.f32 [%rd0+8], %f4;\n\
        setp.neu.f32 %p1, %f0, %f1;\n    selp.f32 %f4, %f2, %f3, %p1;\n    st.global.f32 [%rd0+12], %f4;";
    let out = one_thread(body, &[QNAN, 1f32.to_bits()], 2);
    assert_eq!(out, [0, 1f32.to_bits()]);
}

#[test]
fn bf16_stores_round_to_nearest_even_and_widen_through_the_high_half() {
    // 1 + 2^-8 lies halfway between two bf16 values: even rounds down to 1; 1 + 3 * 2^-8 rounds up.
    let body = "    ld.global.f32 %f0, [%rd0];\n    ld.global.f32 %f1, [%rd0+4];\n    .reg .b16 %h<4>;\n\
        cvt.rn.bf16.f32 %h0, %f0;\n    cvt.rn.bf16.f32 %h1, %f1;\n    mov.b16 %h2, 0;\n\
        mov.b32 %r0, {%h2, %h0};\n    mov.b32 %f2, %r0;\n    st.global.f32 [%rd0+8], %f2;\n\
        mov.b32 %r1, {%h2, %h1};\n    mov.b32 %f3, %r1;\n    st.global.f32 [%rd0+12], %f3;";
    let halfway = (1.0f32 + 2f32.powi(-8)).to_bits();
    let above = (1.0f32 + 3.0 * 2f32.powi(-8)).to_bits();
    let out = one_thread(body, &[halfway, above], 2);
    assert_eq!(out, [1f32.to_bits(), (1.0f32 + 2f32.powi(-6)).to_bits()]);
}

#[test]
fn a_shuffle_keeps_its_own_value_past_a_smaller_clamp() {
    // Clamp 15: lanes up to 15 - 4 = 11 read lane + 4; lanes 12 and above keep their own.
    let module = kernel(&format!(
        "{THREAD_ADDRESS}    ld.global.f32 %f0, [%rd1];\n    shfl.sync.down.b32 %f1, %f0, 4, 15, 0xffffffff;\n    st.global.f32 [%rd1], %f1;"
    ));
    let lanes: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let (result, out) = run(&module, 32, &lanes);
    result.expect("runs");
    let expected: Vec<f32> = (0..32)
        .map(|i| if i + 4 <= 15 { i + 4 } else { i } as f32)
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn a_block_reading_what_another_block_wrote_is_reported() {
    // Block 0 writes x[0]; block 1 reads it (the blocks of a launch run in no set order).
    let module = kernel(
        "    ld.param.u64 %rd0, [x];\n    mov.u32 %r0, %ctaid.x;\n    setp.eq.u32 %p0, %r0, 0;\n\
         mov.f32 %f0, 0f3F800000;\n    @%p0 st.global.f32 [%rd0], %f0;\n    @!%p0 ld.global.f32 %f1, [%rd0];",
    );
    let mut device = Device::default();
    let x = device.memory.upload(&[0u8; 4]);
    let error = device
        .launch(&module, "k", 2, 1, &[x])
        .expect_err("a race between blocks");
    assert!(error.to_string().contains("block 0 wrote"), "{error}");
}

#[test]
fn a_negative_shared_offset_faults() {
    let module = kernel("    ld.shared.v4.f32 {%f0, %f1, %f2, %f3}, [s-16];");
    let (result, _) = run(&module, 1, &[0.0]);
    assert!(
        result
            .expect_err("before the shared variable")
            .to_string()
            .contains("shared")
    );
}

#[test]
fn qualifiers_the_emitter_never_writes_are_refused() {
    for instruction in [
        "mul.wide.u32 %rd0, %r0, %r1;",
        "min.xorsign.abs.f32 %f0, %f1, %f2;",
        "sub.u32 %r0, %r1, %r2;",
    ] {
        let text = format!(
            ".visible .entry k(\n.param .u64 x\n)\n{{\n.reg .b32 %r<4>;\n.reg .b64 %rd<2>;\n.reg .f32 %f<4>;\n{instruction}\nret;\n}}\n"
        );
        let error = Module::parse(&text).expect_err(instruction);
        assert!(
            error.to_string().contains("unsupported"),
            "{instruction}: {error}"
        );
    }
}
