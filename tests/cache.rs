//! The compile cache's guarantees: data (hyperparameters, tensor counts and sizes, groups) never
//! recompiles; a new rule, target or option compiles exactly once; the disk cache skips the
//! e-graph in a fresh process, survives corrupt entries and concurrent writers.

use optjit::optim::{AdamW, Sgd};
use optjit::{
    CacheOptions, CacheUse, CompileOptions, Group, Optimizer, Setup, Target, Tracer, compile_cached,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Options with only the memory cache.
fn memory_only() -> CompileOptions {
    CompileOptions {
        cache: CacheOptions {
            memory: true,
            dir: None,
        },
        ..CompileOptions::default()
    }
}

/// Options with only a disk cache in a fresh directory named after `test`.
fn disk_only(test: &str) -> (CompileOptions, PathBuf) {
    let dir = std::env::temp_dir().join(format!("optjit-cache-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = CompileOptions {
        cache: CacheOptions {
            memory: false,
            dir: Some(dir.clone()),
        },
        ..CompileOptions::default()
    };
    (options, dir)
}

fn setup(sizes: &[usize], hypers: &BTreeMap<String, f64>) -> Setup {
    Setup {
        shapes: sizes.iter().map(|&n| vec![n]).collect(),
        hypers: hypers.clone(),
        threads: 1,
        ..Setup::default()
    }
}

#[test]
fn data_never_recompiles() {
    // The first optimizer may hit the cache of another test's AdamW: only the second one's
    // counters are asserted.
    let adamw = AdamW::new().lr(0.01).build().expect("AdamW");
    let options = memory_only();
    let first =
        Optimizer::with_options(&adamw.definition, setup(&[10; 10], &adamw.hypers), &options)
            .expect("first");
    assert_eq!(first.stats().builds(), 1);

    let mut hypers = adamw.hypers.clone();
    hypers.insert("lr".into(), 0.5);
    hypers.insert("weight_decay".into(), 0.123);
    let groups = vec![
        Group {
            tensors: (0..5_000).collect(),
            hypers: BTreeMap::from([("lr".to_string(), 0.25)]),
        },
        Group {
            tensors: (5_000..10_000).collect(),
            hypers: BTreeMap::new(),
        },
    ];
    let many = Setup {
        shapes: (0..10_000).map(|t| vec![1 + t % 7, 3]).collect(),
        groups,
        hypers,
        threads: 1,
        ..Setup::default()
    };
    let second = Optimizer::with_options(&adamw.definition, many, &options).expect("second");
    let stats = second.stats();
    assert_eq!(
        (stats.compiles, stats.memory_hits, stats.disk_hits),
        (0, 1, 0)
    );
    assert!(
        stats.compile_ms < 5.0,
        "a memory hit took {} ms",
        stats.compile_ms
    );
}

/// A rule no other test compiles: its first lookup must compile.
fn unique_rule(name: &str) -> optjit::Definition {
    let t = Tracer::new(name);
    let lr = t.hyper("lr", 0.01);
    let (param, grad) = (t.param(), t.grad());
    t.set_param(&param - &lr * (grad.abs() + 1.0).sqrt());
    t.finish().expect("traced")
}

#[test]
fn a_new_rule_target_or_option_compiles_exactly_once() {
    let options = memory_only();
    let definition = &unique_rule("cache_test_once");
    let mut exact = options.clone();
    exact.simplify.exact_only = true;
    let cuda = CompileOptions {
        target: Target::cuda(),
        ..options.clone()
    };
    let other_rule = AdamW::new()
        .amsgrad(true)
        .maximize(true)
        .build()
        .expect("AdamW");
    for (what, definition, options) in [
        ("a new rule", definition, &options),
        ("exact-only rules", definition, &exact),
        ("the cuda target", definition, &cuda),
        ("another rule", &other_rule.definition, &options),
    ] {
        // The first lookup compiles, unless another test compiled the same built-in already;
        // after it the same key always hits.
        let (first, used) = compile_cached(definition, options).expect(what);
        if what != "another rule" {
            assert_eq!(used, CacheUse::Compiled, "{what}");
        }
        for _ in 0..3 {
            let (again, used) = compile_cached(definition, options).expect(what);
            assert_eq!(used, CacheUse::MemoryHit, "{what}");
            assert!(std::sync::Arc::ptr_eq(&first, &again), "{what}");
        }
    }
    // Different keys give different steps.
    let (cpu, _) = compile_cached(definition, &options).expect("cpu");
    let (gpu, _) = compile_cached(definition, &cuda).expect("cuda");
    assert!(cpu.ptx().is_none() && gpu.ptx().is_some());
}

#[test]
fn a_second_process_skips_the_e_graph_through_the_disk_cache() {
    let (options, dir) = disk_only("second-process");
    let adamw = AdamW::new().build().expect("AdamW");
    let (cold, used) = compile_cached(&adamw.definition, &options).expect("cold");
    assert_eq!(used, CacheUse::Compiled);
    // Memory is off, so this is what a fresh process sees.
    let (warm, used) = compile_cached(&adamw.definition, &options).expect("warm");
    assert_eq!(used, CacheUse::DiskHit);
    assert_eq!(warm.plan.to_string(), cold.plan.to_string());
    assert_eq!(warm.kernels, cold.kernels);
    let stages: Vec<&str> = warm.stage_times.iter().map(|(s, _)| s.name()).collect();
    assert!(
        !stages.contains(&"simplify") && !stages.contains(&"extract"),
        "{stages:?}"
    );

    // PTX comes back from the disk as it was written.
    let cuda = CompileOptions {
        target: Target::cuda(),
        ..options.clone()
    };
    let (cold, _) = compile_cached(&adamw.definition, &cuda).expect("cold ptx");
    let (warm, used) = compile_cached(&adamw.definition, &cuda).expect("warm ptx");
    assert_eq!(used, CacheUse::DiskHit);
    assert_eq!(warm.ptx(), cold.ptx());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Steps from a disk-cached compile give the same numbers as a cold one.
#[test]
fn a_disk_hit_steps_like_a_cold_compile() {
    let (options, dir) = disk_only("same-numbers");
    let adamw = AdamW::new()
        .lr(0.05)
        .weight_decay(0.1)
        .build()
        .expect("AdamW");
    let run = || {
        let mut opt =
            Optimizer::with_options(&adamw.definition, setup(&[37, 5], &adamw.hypers), &options)
                .expect("optimizer");
        let mut params = vec![vec![0.5f32; 37], vec![-1.0f32; 5]];
        let grads = vec![vec![0.25f32; 37], vec![0.125f32; 5]];
        for _ in 0..3 {
            opt.step(&mut params, &grads).expect("step");
        }
        (params, opt.stats())
    };
    let (cold, cold_stats) = run();
    let (warm, warm_stats) = run();
    assert_eq!((cold_stats.compiles, warm_stats.disk_hits), (1, 1));
    assert_eq!(cold, warm);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn corrupt_entries_are_rebuilt() {
    let (options, dir) = disk_only("corrupt");
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let (_, used) = compile_cached(&sgd.definition, &options).expect("cold");
    assert_eq!(used, CacheUse::Compiled);
    let entry = std::fs::read_dir(&dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "optjit"))
        .expect("an entry was written");
    let good = std::fs::read(&entry).expect("read");
    let text = String::from_utf8(good.clone()).expect("utf-8");
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("flipped byte", {
            let mut bytes = good.clone();
            let last = bytes.len() - 2;
            bytes[last] ^= 0x01;
            bytes
        }),
        (
            "wrong version",
            text.replacen("version ", "version 0.0.0-old+", 1)
                .into_bytes(),
        ),
    ];
    for (what, bytes) in corruptions {
        std::fs::write(&entry, &bytes).expect("corrupt");
        let (compiled, used) = compile_cached(&sgd.definition, &options).expect(what);
        assert_eq!(used, CacheUse::Compiled, "{what}: not detected");
        assert_eq!(compiled.kernels.len(), 1, "{what}");
        let (_, used) = compile_cached(&sgd.definition, &options).expect(what);
        assert_eq!(used, CacheUse::DiskHit, "{what}: not rebuilt");
        assert_eq!(
            std::fs::read(&entry).expect("read"),
            good,
            "{what}: rebuilt differently"
        );
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn concurrent_compiles_of_one_step_all_succeed() {
    let (options, dir) = disk_only("concurrent");
    let adamw = AdamW::new().amsgrad(true).build().expect("AdamW");
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| compile_cached(&adamw.definition, &options).map(|(_, u)| u)))
            .collect();
        for handle in handles {
            handle.join().expect("thread").expect("compile");
        }
    });
    let (_, used) = compile_cached(&adamw.definition, &options).expect("after");
    assert_eq!(used, CacheUse::DiskHit);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_none_or(|e| e != "optjit"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
