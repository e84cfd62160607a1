//! The pipeline's visible contract: every stage named, dumped where asked, and the repository's
//! own hygiene (every source file says what it owns).

use optjit::optim::AdamW;
use optjit::{CompileOptions, Stage, Target, compile};
use std::path::{Path, PathBuf};

#[test]
fn dumps_go_to_one_file_per_selected_stage() {
    let dir = std::env::temp_dir().join(format!("optjit-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dump = optjit::Dump {
        stages: vec![Stage::Fuse, Stage::Clif],
        dir: Some(dir.clone()),
    };
    let options = CompileOptions {
        dump,
        keep_texts: true,
        ..CompileOptions::default()
    };
    let compiled =
        compile(&AdamW::new().build().expect("AdamW").definition, &options).expect("compile");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("dump dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["adamw.04-fuse.txt", "adamw.06-clif.txt"]);
    let fuse = std::fs::read_to_string(dir.join("adamw.04-fuse.txt")).expect("read");
    assert_eq!(Some(fuse.as_str()), compiled.text(Stage::Fuse));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn stage_names_round_trip_in_pipeline_order() {
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "trace", "verify", "simplify", "extract", "fuse", "lower", "clif", "ptx", "load"
        ]
    );
    for stage in Stage::ALL {
        assert_eq!(Stage::from_name(stage.name()), Some(stage));
    }
    assert_eq!(Stage::from_name("cuda"), None);
}

/// The CUDA target runs the shared stages, then `ptx` instead of `clif` and `load`.
#[test]
fn the_cuda_target_emits_ptx_and_no_clif() {
    let options = CompileOptions {
        keep_texts: true,
        target: Target::cuda(),
        ..CompileOptions::default()
    };
    let compiled =
        compile(&AdamW::new().build().expect("AdamW").definition, &options).expect("compile");
    let with_text: Vec<&str> = Stage::ALL
        .into_iter()
        .filter(|&s| compiled.text(s).is_some())
        .map(Stage::name)
        .collect();
    assert_eq!(
        with_text,
        [
            "trace", "verify", "simplify", "extract", "fuse", "lower", "ptx"
        ]
    );
    let modules = compiled.ptx().expect("ptx modules");
    assert_eq!(modules.len(), 1);
    assert!(modules[0].starts_with("//\n// optjit kernel adamw.phase0 for sm_80"));
    assert!(modules[0].contains(".visible .entry adamw_phase0("));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "ir", "kernels-gen", "crates", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 40, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).expect("read").starts_with("//!"))
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

/// The cache version hashes the sources of the crates whose output is cached: every source file
/// of optjit-rewrite and optjit-kernels-gen must be listed in its `SOURCES`.
#[test]
fn cache_version_sources_list_every_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, sources) in [
        ("crates/rewrite/src", optjit::rewrite::SOURCES),
        ("kernels-gen/src", optjit::kernels_gen::SOURCES),
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            assert!(
                sources.contains(&text.as_str()),
                "{} is missing from {dir}'s SOURCES (lib.rs)",
                file.display()
            );
        }
    }
}
