//! Helpers shared by the integration tests: the binary, the repository's data, and the Python
//! environment with the independent references (numpy, pyarrow, duckdb), created on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the shipped real data.
pub fn data(name: &str) -> String {
    repo().join("data").join(name).display().to_string()
}

/// Runs the `prefsmith` binary with `args` in `dir`.
pub fn prefsmith_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prefsmith"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the prefsmith binary runs")
}

/// Runs the `prefsmith` binary with `args` in the repository root.
pub fn prefsmith(args: &[&str]) -> Output {
    prefsmith_in(&repo(), args)
}

/// Asserts success, printing the output otherwise; returns stdout.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts failure with `code`, returns stderr.
pub fn fails(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit code {code}\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The Python interpreter of a virtual environment holding `tests/python/requirements.txt`,
/// created once (under the target directory, reused across runs). `PREFSMITH_PYTHON` points
/// at an interpreter that already has them. A missing Python is a test failure, never a skip.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("PREFSMITH_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
        let python = venv.join("bin").join("python");
        let requirements = repo().join("tests/python/requirements.txt");
        let stamp = venv.join("requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("tests/python/requirements.txt");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            let status = Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "python3 -m venv failed: install python3 with venv support"
            );
            let status = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "pip install -r {} failed",
                requirements.display()
            );
            std::fs::write(&stamp, wanted).expect("write the venv stamp");
        }
        python
    })
}

/// Runs a script of `tests/python` with the reference environment.
pub fn python_script(script: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("python runs")
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Reads a stage output's manifest as JSON.
pub fn manifest(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("_manifest.json")).expect("a manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}
