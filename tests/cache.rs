//! The compile cache's guarantees: data (hyperparameters, tensor counts and sizes, groups) never
//! recompiles; a new rule, target or option compiles exactly once; the disk cache skips the
//! e-graph in a fresh process, survives corrupt entries and concurrent writers; it trusts
//! nothing it reads (docs/cache.md): a tampered entry, one that other users could write, one in
//! such a directory, and special files in place of entries are never used.

mod common;

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
            rule: None,
        },
        Group {
            tensors: (5_000..10_000).collect(),
            hypers: BTreeMap::new(),
            rule: None,
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

/// FNV-1a twice, as the cache names and checksums entries: anyone can recompute it.
fn stable_hash(bytes: &[u8]) -> String {
    let fnv = |mut h: u64| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// The one entry file in `dir`.
fn the_entry(dir: &std::path::Path) -> PathBuf {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "optjit"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.pop().unwrap()
}

/// Rewrites the graph of the entry at `path` with `edit`, as someone who can write the file
/// would: the length and checksum made right again, so that only the graph is wrong.
fn tamper(path: &std::path::Path, edit: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(path).expect("entry");
    let mut lines = text.splitn(6, '\n');
    let head: Vec<&str> = lines.by_ref().take(5).collect();
    let body = lines.next().expect("a body");
    let (section, rest) = body.split_once('\n').expect("a section header");
    let n: usize = section["== graph ".len()..]
        .parse()
        .expect("the graph's length");
    let (graph, after) = rest.split_at(n);
    let graph = edit(graph);
    let body = format!("== graph {}\n{graph}{after}", graph.len());
    let head = format!(
        "{}\n{}\n{}\nchecksum {}\nlength {}\n",
        head[0],
        head[1],
        head[2],
        stable_hash(body.as_bytes()),
        body.len()
    );
    std::fs::write(path, head + &body).expect("tampered");
}

/// What the test `name` of this binary prints on stderr, run alone in a process of its own
/// (the cache reports a problem once per process).
fn stderr_of(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{name} failed:\n{stdout}");
    assert!(stdout.contains("1 passed"), "{name} did not run:\n{stdout}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// SGD's step from the disk cache of `options`, run on one tensor: its stats and parameter.
fn sgd_steps(sgd: &optjit::optim::Configured, options: &CompileOptions) -> (optjit::Stats, f32) {
    let mut opt = Optimizer::with_options(&sgd.definition, setup(&[1], &sgd.hypers), options)
        .expect("optimizer");
    let mut params = vec![vec![1.0f32]];
    opt.step(&mut params, &[vec![0.5f32]]).expect("step");
    (opt.stats(), params[0][0])
}

/// An entry whose update was turned from `param - lr * grad` into `param + lr * grad`, its
/// checksum recomputed, computes something else than SGD: it is not run, the step is compiled
/// again and descends.
#[test]
fn a_tampered_entry_is_compiled_again() {
    let (options, dir) = disk_only("tampered");
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let (stats, param) = sgd_steps(&sgd, &options);
    assert_eq!((stats.compiles, param), (1, 0.95));
    let entry = the_entry(&dir);
    let good = std::fs::read(&entry).expect("entry");
    tamper(&entry, |graph| {
        assert!(graph.contains(" = sub %0, "), "{graph}");
        graph.replacen(" = sub %0, ", " = add %0, ", 1)
    });
    let (stats, param) = sgd_steps(&sgd, &options);
    assert_eq!(
        (stats.compiles, stats.disk_hits),
        (1, 0),
        "the tampered entry ran"
    );
    assert_eq!(param, 0.95, "SGD descends");
    assert_eq!(std::fs::read(&entry).expect("entry"), good, "rebuilt");
    let (stats, _) = sgd_steps(&sgd, &options);
    assert_eq!(stats.disk_hits, 1);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_tampered_entry_is_reported_on_stderr() {
    let stderr = stderr_of("a_tampered_entry_is_compiled_again");
    assert!(
        stderr.contains("optjit: compile cache: ")
            && stderr.contains(".optjit: the cached graph does not compute what the definition does: tensor 0's param[0] is")
            && stderr.contains("; compiling again"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("optjit: compile cache").count(),
        1,
        "{stderr}"
    );
}

/// Entries that verify but do not fit the definition's interface (which panicked in the binding
/// before), or do not verify, are refused: the step is compiled again, nothing panics.
#[test]
fn an_entry_with_another_interface_is_compiled_again() {
    let (options, dir) = disk_only("interface");
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    sgd_steps(&sgd, &options);
    let entry = the_entry(&dir);
    type Edit = fn(&str) -> String;
    let edits: [(&str, Edit); 6] = [
        ("an extra state", |g| {
            g.replacen("  dtype f32\n", "  dtype f32\n  state extra = 0.0\n", 1)
        }),
        ("an extra state assigned", |g| {
            let g = g.replacen("  dtype f32\n", "  dtype f32\n  state extra = 0.0\n", 1);
            g.replacen("  param = ", "  extra = %1\n  param = ", 1)
        }),
        ("an extra row state", |g| {
            g.replacen("  dtype f32\n", "  dtype f32\n  state r : row = 1.0\n", 1)
        }),
        ("a hyperparameter fewer", |g| {
            g.replacen("  hyper dampening = 0.0\n", "", 1)
        }),
        ("another default", |g| {
            g.replacen("hyper lr = ", "hyper lr = 1", 1)
        }),
        ("an undeclared state read", |g| {
            g.replacen("= grad : elem f32", "= state nothing : elem f32", 1)
        }),
    ];
    for (what, edit) in edits {
        tamper(&entry, edit);
        let (stats, param) = sgd_steps(&sgd, &options);
        assert_eq!((stats.compiles, param), (1, 0.95), "{what}");
        let (stats, _) = sgd_steps(&sgd, &options);
        assert_eq!(stats.disk_hits, 1, "{what}: not rebuilt");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Steps that need shapes (Adafactor's per-row and per-column values) are checked too, on
/// tensors of one element.
#[test]
fn a_tampered_factored_entry_is_compiled_again() {
    let (options, dir) = disk_only("tampered-factored");
    let (_, adafactor) = common::factored_cases().remove(0);
    let (_, used) = compile_cached(&adafactor, &options).expect("cold");
    assert_eq!(used, CacheUse::Compiled);
    let entry = the_entry(&dir);
    tamper(&entry, |graph| {
        let line = (graph.lines())
            .find(|l| l.contains(" = sub ") && l.ends_with(": row f64"))
            .expect("a per-row subtraction");
        graph.replacen(line, &line.replacen(" = sub ", " = add ", 1), 1)
    });
    let (_, used) = compile_cached(&adafactor, &options).expect("tampered");
    assert_eq!(used, CacheUse::Compiled, "the tampered entry ran");
    let (_, used) = compile_cached(&adafactor, &options).expect("rebuilt");
    assert_eq!(used, CacheUse::DiskHit);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// No entry of a step optjit compiled itself is refused by the check: every built-in, both of
/// Adafactor's steps and the naive forms hit the disk cache on their second compile.
#[test]
fn every_built_in_passes_the_check_of_its_own_entry() {
    let (options, dir) = disk_only("every-built-in");
    let mut cases = common::snapshot_cases();
    cases.extend(common::factored_cases());
    for (name, definition) in &cases {
        let (cold, used) = compile_cached(definition, &options).expect(name);
        assert_eq!(used, CacheUse::Compiled, "{name}");
        let (warm, used) = compile_cached(definition, &options).expect(name);
        assert_eq!(used, CacheUse::DiskHit, "{name}: its own entry was refused");
        assert_eq!(warm.kernels, cold.kernels, "{name}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[cfg(unix)]
#[test]
fn what_other_users_could_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let (options, dir) = disk_only("others");
    let definition = unique_rule("cache_test_others");
    let used = || compile_cached(&definition, &options).expect("compile").1;
    assert_eq!(used(), CacheUse::Compiled);
    let entry = the_entry(&dir);
    assert_eq!(used(), CacheUse::DiskHit);

    // A world-writable entry is refused (for root too: the mode bits decide), then replaced.
    chmod(&entry, 0o666);
    assert_eq!(used(), CacheUse::Compiled);
    let mode = std::fs::metadata(&entry)
        .expect("entry")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "replaced by one of this user's");
    assert_eq!(used(), CacheUse::DiskHit);

    // A world-writable directory is not used at all: not read, not written.
    chmod(&dir, 0o777);
    assert_eq!(used(), CacheUse::Compiled);
    std::fs::remove_file(&entry).expect("remove");
    assert_eq!(used(), CacheUse::Compiled);
    assert!(!entry.exists(), "written into a directory others can write");
    chmod(&dir, 0o775);
    assert_eq!(used(), CacheUse::Compiled);
    assert!(
        !entry.exists(),
        "written into a directory its group can write"
    );
    chmod(&dir, 0o755);
    assert_eq!(used(), CacheUse::Compiled);
    assert_eq!(used(), CacheUse::DiskHit);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The answer of `f`, which must come within a minute: a regression fails instead of hanging.
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("no answer within 60 s: the cache reader hangs")
}

/// A FIFO or a link to `/dev/zero` in place of an entry is refused before anything is read
/// from it (a FIFO's reader waited for a writer forever, `/dev/zero` was read until memory ran
/// out), and replaced by a real entry.
#[cfg(unix)]
#[test]
fn special_files_in_place_of_entries_are_refused_promptly() {
    let (options, dir) = disk_only("special");
    let definition = unique_rule("cache_test_special");
    compile_cached(&definition, &options).expect("cold");
    let entry = the_entry(&dir);
    let used = move || {
        let (options, definition) = (options.clone(), definition.clone());
        promptly(move || compile_cached(&definition, &options).expect("compile").1)
    };

    std::fs::remove_file(&entry).expect("remove");
    let status = std::process::Command::new("mkfifo").arg(&entry).status();
    assert!(status.expect("mkfifo runs").success(), "mkfifo");
    assert_eq!(used(), CacheUse::Compiled);
    assert!(std::fs::symlink_metadata(&entry).expect("entry").is_file());
    assert_eq!(used(), CacheUse::DiskHit);

    std::fs::remove_file(&entry).expect("remove");
    std::os::unix::fs::symlink("/dev/zero", &entry).expect("symlink");
    assert_eq!(used(), CacheUse::Compiled);
    assert!(std::fs::symlink_metadata(&entry).expect("entry").is_file());
    assert_eq!(used(), CacheUse::DiskHit);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
