//! Stages on a real S3 server (SeaweedFS on 127.0.0.1, started by the tests): the same job
//! as on local disk with identical output, reruns that do nothing, named errors for every bad
//! input, and no output that looks complete after a failure — an injected write failure, a
//! server stopped mid-write, a process killed mid-job.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use prefsmith_pipeline::stages::select::{self, RunOptions, SelectConfig};
use prefsmith_pipeline::storage;

use crate::common::{data, fails, ok, tempdir};
use crate::s3_server::{S3Server, get, keys, shared, upload};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A fresh bucket on the shared server with the arena file uploaded as `key`; with its store
/// and a runtime to drive it.
fn bucket_with_arena(
    label: &str,
    key: &str,
) -> (
    &'static S3Server,
    String,
    Arc<dyn ObjectStore>,
    tokio::runtime::Runtime,
) {
    let server = shared();
    let bucket = server.bucket(label);
    let store = server.store(&bucket);
    let rt = runtime();
    rt.block_on(upload(&store, key, Path::new(&data(ARENA))));
    (server, bucket, store, rt)
}

/// The binary in `dir` with the server's environment (plus `extra`), output captured.
fn s3_command(server: &S3Server, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefsmith"));
    command
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in server.env() {
        command.env(k, v);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

/// Runs the binary in `dir` with the server's environment (plus `extra`).
fn prefsmith_s3(server: &S3Server, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    s3_command(server, dir, args, extra)
        .output()
        .expect("the prefsmith binary runs")
}

const ARENA: &str = "arena_bench_v1_scored.parquet";

/// select → route, with small parts so that outputs have several.
fn job_text(input: &str, root: &str) -> String {
    format!(
        "name = \"s3\"\n\n[[stages]]\nkind = \"select\"\ninput = \"{input}\"\noutput = \"{root}/pairs\"\n\
         strategy = \"sweet-spot\"\nmax-rows-per-file = 100\n\n\
         [[stages]]\nkind = \"route\"\noutput = \"{root}/routed\"\nroute-percentile = 10\nmax-rows-per-file = 100\n\
         partition-by = \"route\"\n\n\
         [[stages]]\nkind = \"export\"\noutput = \"{root}/trl\"\nformat = \"trl-standard\"\n"
    )
}

fn manifest_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("manifest JSON")
}

#[test]
fn job_on_s3_writes_what_local_disk_gets_and_a_rerun_does_nothing() {
    let (server, bucket, store, rt) = bucket_with_arena("job", "input/arena.parquet");

    let dir = tempdir();
    std::fs::write(
        dir.path().join("local.toml"),
        job_text(&data(ARENA), "local"),
    )
    .unwrap();
    let root = format!("s3://{bucket}/out");
    std::fs::write(
        dir.path().join("s3.toml"),
        job_text(&format!("s3://{bucket}/input/arena.parquet"), &root),
    )
    .unwrap();
    ok(&prefsmith_s3(
        server,
        dir.path(),
        &["run", "local.toml"],
        &[],
    ));
    let stdout = ok(&prefsmith_s3(server, dir.path(), &["run", "s3.toml"], &[]));
    assert!(stdout.contains(&format!("{root}/pairs")), "{stdout}");
    // The job's report lands in its output root on S3, with plots read from S3 (the select
    // section's picked prompts come from the input object).
    assert!(
        stdout.contains(&format!("report: {root}/report.html")),
        "{stdout}"
    );
    let page = String::from_utf8(rt.block_on(get(&store, "out/report.html"))).unwrap();
    assert!(
        page.contains("data-kind=\"select\" data-state=\"ran\"")
            && page.contains("(widest spread)")
            && page.contains("Pairs by route")
            && !page.contains("class=\"notice\""),
        "{page}"
    );
    let stdout = ok(&prefsmith_s3(server, dir.path(), &["report", &root], &[]));
    assert!(
        stdout.contains(&format!("report: {root}/report.html (3 stages)")),
        "{stdout}"
    );

    for stage in ["pairs", "routed"] {
        let local_dir = dir.path().join("local").join(stage);
        let local = manifest_json(&std::fs::read(local_dir.join("_manifest.json")).unwrap());
        let remote =
            manifest_json(&rt.block_on(get(&store, &format!("out/{stage}/_manifest.json"))));
        // Identical as `docs/ALGORITHMS.md` §0.5 defines it: the same parts with the same rows and bytes, the
        // same statistics; only timing (and the input paths, which name different stores) differ.
        assert_eq!(local["parts"], remote["parts"], "{stage}");
        assert_eq!(local["stats"], remote["stats"], "{stage}");
        assert_eq!(local["rows"], remote["rows"], "{stage}");
        assert!(
            local["parts"].as_array().unwrap().len() >= 2,
            "{stage}: {local}"
        );
        for part in local["parts"].as_array().unwrap() {
            let name = part["path"].as_str().unwrap();
            let local_bytes = std::fs::read(local_dir.join(name)).unwrap();
            let remote_bytes = rt.block_on(get(&store, &format!("out/{stage}/{name}")));
            assert!(local_bytes == remote_bytes, "{stage}/{name} differs");
        }
        // Every input of a stage on S3 is recorded with its ETag.
        assert!(
            remote["inputs"][0]["etag"].is_string(),
            "the manifest records the input's ETag: {remote}"
        );
    }
    // route wrote Hive partitions, which export read back through the manifest.
    let routed = rt.block_on(keys(&store, "out/routed"));
    for partition in ["route=dpo", "route=sft"] {
        assert!(
            routed
                .iter()
                .any(|k| k.starts_with(&format!("out/routed/{partition}/part-"))),
            "{routed:?}"
        );
    }
    let routed_manifest = manifest_json(&rt.block_on(get(&store, "out/routed/_manifest.json")));
    let exported = manifest_json(&rt.block_on(get(&store, "out/trl/_manifest.json")));
    assert_eq!(exported["rows"], routed_manifest["rows"]);
    // `sql` reads S3 tables and writes its result to S3 (one object, complete or absent).
    let stdout = ok(&prefsmith_s3(
        server,
        dir.path(),
        &[
            "sql",
            "SELECT route, count(*) AS n FROM r GROUP BY route ORDER BY route",
            "--table",
            &format!("r={root}/routed"),
            "--output",
            &format!("{root}/reports/routes.csv"),
        ],
        &[],
    ));
    assert!(stdout.contains("2 rows written to"), "{stdout}");
    let csv = String::from_utf8(rt.block_on(get(&store, "out/reports/routes.csv"))).unwrap();
    assert!(
        csv.starts_with("route,n\ndpo,") && csv.contains("\nsft,"),
        "{csv}"
    );
    let before = rt.block_on(get(&store, "out/pairs/_manifest.json"));
    let stdout = ok(&prefsmith_s3(server, dir.path(), &["run", "s3.toml"], &[]));
    assert_eq!(stdout.matches("up to date").count(), 3, "{stdout}");
    assert_eq!(rt.block_on(get(&store, "out/pairs/_manifest.json")), before);
    // inspect reads an S3 stage output and says it is complete.
    let stdout = ok(&prefsmith_s3(
        server,
        dir.path(),
        &["inspect", &format!("{root}/pairs")],
        &[],
    ));
    assert!(stdout.contains("complete (stage select"), "{stdout}");
}

#[test]
fn bad_objects_and_bad_access_are_named_errors() {
    let server = shared();
    let bucket = server.bucket("bad");
    let store = server.store(&bucket);
    let rt = runtime();
    let arena = std::fs::read(data(ARENA)).unwrap();
    rt.block_on(async {
        use object_store::ObjectStoreExt;
        store
            .put(&ObjectPath::from("good/a.parquet"), arena.clone().into())
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from("notparquet/a.parquet"),
                b"prompt,response\nhello,world\n".to_vec().into(),
            )
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from("truncated/a.parquet"),
                arena[..arena.len() / 2].to_vec().into(),
            )
            .await
            .unwrap();
    });
    // A shard whose `scores` column is a list of strings instead of numbers.
    let dir = tempdir();
    let odd = dir.path().join("odd.parquet");
    ok(&Command::new(crate::common::python())
        .arg("-c")
        .arg(
            "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
             t = pa.table({'prompt': ['p'], 'all_generated_responses': [['a', 'b']], \
             'all_rm_scores': [['1', '2']]})\n\
             pq.write_table(t, sys.argv[1])",
        )
        .arg(&odd)
        .output()
        .expect("python runs"));
    rt.block_on(upload(&store, "mixed/a.parquet", Path::new(&data(ARENA))));
    rt.block_on(upload(&store, "mixed/b.parquet", &odd));

    let select = |input: &str, extra: &[(&str, &str)]| {
        prefsmith_s3(
            server,
            dir.path(),
            &[
                "select",
                "--input",
                input,
                "--output",
                &format!("s3://{bucket}/out"),
            ],
            extra,
        )
    };
    let object = |key: &str| format!("s3://{bucket}/{key}");
    // (input, extra environment, exit code, what the error must say).
    type Case<'a> = (String, &'a [(&'a str, &'a str)], i32, Vec<String>);
    let cases: [Case; 7] = [
        (
            object("notparquet/"),
            &[],
            1,
            vec![
                object("notparquet/a.parquet"),
                "not a readable Parquet file".into(),
            ],
        ),
        (
            object("truncated/a.parquet"),
            &[],
            1,
            vec![
                object("truncated/a.parquet"),
                "not a readable Parquet file".into(),
            ],
        ),
        (
            object("mixed/"),
            &[],
            1,
            vec![object("mixed/b.parquet"), "all_rm_scores".into()],
        ),
        (
            object("good/a.parquet"),
            &[("AWS_SECRET_ACCESS_KEY", "wrong")],
            2,
            vec![object("good/a.parquet"), "access denied".into()],
        ),
        (
            object("good/a.parquet"),
            &[("AWS_ACCESS_KEY_ID", "nobody")],
            2,
            vec!["access denied".into()],
        ),
        (
            "s3://no-such-bucket-here/x.parquet".into(),
            &[],
            2,
            vec![
                "s3://no-such-bucket-here/".into(),
                "bucket does not exist".into(),
            ],
        ),
        // A server that is not there at all.
        (
            object("good/a.parquet"),
            &[
                ("AWS_ENDPOINT", "http://127.0.0.1:9"),
                ("PREFSMITH_STORAGE_MAX_RETRIES", "0"),
            ],
            2,
            vec!["cannot reach the object store".into()],
        ),
    ];
    for (input, extra, code, expected) in &cases {
        let stderr = fails(&select(input, extra), *code);
        for needle in expected {
            assert!(
                stderr.contains(needle.as_str()),
                "{input} {extra:?}: {stderr}"
            );
        }
    }
    // Nothing was written by any of the failures.
    assert!(rt.block_on(keys(&store, "out")).is_empty());
}

/// A store that fails every write of one object name (`fail_on`), counting the attempts.
#[derive(Debug)]
struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    fail_on: String,
    failures: AtomicUsize,
}

impl std::fmt::Display for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailingStore({})", self.inner)
    }
}

impl FailingStore {
    fn check(&self, location: &ObjectPath) -> object_store::Result<()> {
        if location.filename() == Some(self.fail_on.as_str()) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "FailingStore",
                source: format!("injected failure writing {location}").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

fn select_config(max_rows_per_file: usize) -> SelectConfig {
    toml::from_str(&format!(
        "output = \"x\"\nstrategy = \"sweet-spot\"\nmax-rows-per-file = {max_rows_per_file}\n"
    ))
    .expect("a select config")
}

#[test]
fn a_write_failing_mid_select_leaves_no_manifest_and_the_rerun_is_identical() {
    let server = shared();
    let bucket = server.bucket("inject");
    let rt = runtime();
    let real = server.store(&bucket);
    rt.block_on(upload(&real, "in/arena.parquet", Path::new(&data(ARENA))));
    let input = format!("s3://{bucket}/in/arena.parquet");
    let output = format!("s3://{bucket}/pairs");
    let config = select_config(50);
    let options = RunOptions { threads: 1 };

    // A clean run first (the expected output), on the real store.
    storage::register_store(&format!("s3://{bucket}"), Arc::clone(&real));
    let clean = rt
        .block_on(select::run(&config, &input, &output, &options))
        .expect("a clean run");
    assert!(clean.parts.len() >= 4, "{:?}", clean.parts);
    let expected: Vec<Vec<u8>> = clean
        .parts
        .iter()
        .map(|p| rt.block_on(get(&real, &format!("pairs/{}", p.path))))
        .collect();

    // The third part cannot be written.
    let failing = Arc::new(FailingStore {
        inner: Arc::clone(&real),
        fail_on: "part-00002.parquet".into(),
        failures: AtomicUsize::new(0),
    });
    storage::register_store(&format!("s3://{bucket}"), Arc::clone(&failing) as _);
    let error = rt
        .block_on(select::run(&config, &input, &output, &options))
        .expect_err("the injected failure stops the stage");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{output}/part-00002.parquet"))
            && message.contains("injected failure"),
        "{message}"
    );
    assert!(failing.failures.load(Ordering::SeqCst) >= 1);
    let listed = rt.block_on(keys(&real, "pairs"));
    assert!(
        !listed.iter().any(|k| k.ends_with("_manifest.json")),
        "no manifest after a failed run: {listed:?}"
    );
    // The next stage refuses the incomplete output.
    let refused = rt.block_on(prefsmith_pipeline::input::resolve(&output));
    assert!(
        matches!(
            refused,
            Err(prefsmith_pipeline::Error::IncompleteStageOutput { .. })
        ),
        "{refused:?}"
    );

    // The rerun (store healthy again) completes with the same bytes.
    storage::register_store(&format!("s3://{bucket}"), Arc::clone(&real));
    let rerun = rt
        .block_on(select::run(&config, &input, &output, &options))
        .expect("the rerun");
    assert_eq!(rerun.parts, clean.parts);
    assert_eq!(rerun.stats, clean.stats);
    for (part, bytes) in rerun.parts.iter().zip(&expected) {
        assert!(
            &rt.block_on(get(&real, &format!("pairs/{}", part.path))) == bytes,
            "{} differs",
            part.path
        );
    }
    storage::unregister_store(&format!("s3://{bucket}"));
}

#[test]
fn stopping_the_server_mid_write_fails_cleanly_and_the_rerun_completes() {
    let mut server = S3Server::start();
    let bucket = server.bucket("stop");
    let rt = runtime();
    let dir = tempdir();
    // A large input on local disk, the output on S3: the stage is writing when the server goes.
    let input = dir.path().join("big");
    ok(&crate::common::prefsmith_in(
        dir.path(),
        &[
            "synth",
            "--output",
            "big",
            "--prompts",
            "30000",
            "--responses",
            "4",
            "--response-bytes",
            "1000",
            "--shards",
            "4",
        ],
    ));
    let output = format!("s3://{bucket}/pairs");
    let store = server.store(&bucket);
    let select = [
        "select",
        "--input",
        input.to_str().unwrap(),
        "--output",
        &output,
        "--max-rows-per-file",
        "4000",
    ];
    // Parts of ~8 MB go up as multipart uploads.
    let multipart = [("PREFSMITH_STORAGE_MULTIPART_THRESHOLD_BYTES", "5242880")];
    let child = s3_command(&server, dir.path(), &select, &multipart)
        .spawn()
        .expect("prefsmith runs");
    // Stop the server as soon as the first part is stored.
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt.block_on(keys(&store, "pairs")).is_empty() {
        assert!(Instant::now() < deadline, "no part appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let out = child.wait_with_output().expect("prefsmith exits");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the stage cannot succeed without its store: {stderr}"
    );
    assert!(stderr.contains(&format!("s3://{bucket}/pairs")), "{stderr}");

    server.restart();
    let store = server.store(&bucket);
    let listed = rt.block_on(keys(&store, "pairs"));
    assert!(
        !listed.iter().any(|k| k.ends_with("_manifest.json")),
        "no manifest after the failed run: {listed:?}"
    );
    ok(&prefsmith_s3(&server, dir.path(), &select, &[]));
    // The same stage on local disk gives the same parts.
    let mut local_args = select;
    local_args[4] = "local-pairs";
    ok(&crate::common::prefsmith_in(dir.path(), &local_args));
    let local = crate::common::manifest(&dir.path().join("local-pairs"));
    let remote = manifest_json(&rt.block_on(get(&store, "pairs/_manifest.json")));
    assert_eq!(local["parts"], remote["parts"]);
    assert_eq!(local["stats"], remote["stats"]);
    let listed = rt.block_on(keys(&store, "pairs"));
    assert_eq!(
        listed.len(),
        remote["parts"].as_array().unwrap().len() + 1,
        "exactly the listed parts and the manifest: {listed:?}"
    );
}

/// `configs/s3-job.toml` — the whole quickstart job (SmolLM2 on the CPU) on S3 — killed
/// (SIGKILL) once its first stage is complete, then rerun: the finished stage is not
/// recomputed, the rest completes, and a third run finds everything up to date.
#[test]
fn the_s3_job_survives_a_sigkill_and_resumes_where_it_stopped() {
    crate::model::smollm2_path();
    let (server, bucket, store, rt) =
        bucket_with_arena("s3job", "data/arena_bench_v1_scored.parquet");
    let dir = tempdir();
    let text = std::fs::read_to_string(crate::common::repo().join("configs/s3-job.toml"))
        .expect("configs/s3-job.toml")
        .replace("s3://prefsmith-quickstart/", &format!("s3://{bucket}/"));
    std::fs::write(dir.path().join("s3-job.toml"), text).unwrap();
    let staging = dir.path().join("staging");
    let staging_env = ("PREFSMITH_STAGING", staging.to_str().unwrap());
    let command = || s3_command(server, dir.path(), &["run", "s3-job.toml"], &[staging_env]);
    let first_manifest = "quickstart/responses/_manifest.json";
    let mut child = command().spawn().expect("prefsmith runs");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !rt
        .block_on(keys(&store, "quickstart/responses"))
        .iter()
        .any(|k| k == first_manifest)
    {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the job ended ({status}) before its first stage finished:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "sample did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let sampled = rt.block_on(get(&store, first_manifest));
    // The stage that was running has no manifest.
    assert!(
        !rt.block_on(keys(&store, "quickstart/rated"))
            .iter()
            .any(|k| k.ends_with("_manifest.json"))
    );

    let out = command().output().expect("prefsmith runs");
    let stdout = ok(&out);
    assert!(
        stdout.contains(&format!(
            "sample: 8 rows in s3://{bucket}/quickstart/responses (up to date, not rerun)"
        )),
        "{stdout}"
    );
    assert_eq!(
        rt.block_on(get(&store, first_manifest)),
        sampled,
        "the finished stage was not recomputed"
    );
    for stage in [
        "responses",
        "rated",
        "cleaned",
        "pairs",
        "scored-ref",
        "seed",
        "scored-policy",
        "selected",
        "routed",
        "trl",
        "model",
    ] {
        let manifest =
            manifest_json(&rt.block_on(get(&store, &format!("quickstart/{stage}/_manifest.json"))));
        assert!(manifest["stage"].is_string(), "{stage}: {manifest}");
    }
    let model_files = rt.block_on(keys(&store, "quickstart/model/model"));
    assert!(
        model_files.iter().any(|k| k.ends_with("model.safetensors"))
            && model_files.iter().any(|k| k.ends_with("tokenizer.json")),
        "{model_files:?}"
    );
    let stdout = ok(&command().output().expect("prefsmith runs"));
    assert_eq!(stdout.matches("up to date").count(), 11, "{stdout}");
}

/// 100 small shards on S3 (a prefix of Parquet objects, not a stage output) give the pairs the
/// same shards give on local disk; one 200 MB shard is selected with memory bounded by row
/// groups and parts, not by the shard (the process's peak RSS is in the manifest).
#[test]
fn a_hundred_small_shards_on_s3_and_a_200_mb_shard_in_bounded_memory() {
    let server = shared();
    let bucket = server.bucket("shards");
    let store = server.store(&bucket);
    let rt = runtime();
    let dir = tempdir();
    let synth = [
        "synth",
        "--output",
        "small",
        "--prompts",
        "5000",
        "--responses",
        "4",
        "--shards",
        "100",
        "--response-bytes",
        "100",
    ];
    ok(&crate::common::prefsmith_in(dir.path(), &synth));
    // Upload the shards as plain objects (no manifest): the input is a prefix of 100 files.
    for n in 0..100 {
        let name = format!("part-{n:05}.parquet");
        rt.block_on(upload(
            &store,
            // Named as a producer outside prefsmith would (`part-…` names mean a stage output).
            &format!("shards/shard-{n:03}.parquet"),
            &dir.path().join("small").join(&name),
        ));
    }
    assert_eq!(rt.block_on(keys(&store, "shards")).len(), 100);
    let remote_input = format!("s3://{bucket}/shards/");
    let stdout = ok(&prefsmith_s3(
        server,
        dir.path(),
        &[
            "select",
            "--input",
            &remote_input,
            "--output",
            &format!("s3://{bucket}/pairs"),
        ],
        &[],
    ));
    assert!(stdout.contains("select: 5000 pairs"), "{stdout}");
    ok(&crate::common::prefsmith_in(
        dir.path(),
        &["select", "--input", "small", "--output", "local-pairs"],
    ));
    let local = crate::common::manifest(&dir.path().join("local-pairs"));
    let remote = manifest_json(&rt.block_on(get(&store, "pairs/_manifest.json")));
    assert_eq!(remote["inputs"].as_array().unwrap().len(), 100);
    assert_eq!(local["stats"], remote["stats"]);
    assert_eq!(local["parts"], remote["parts"]);

    ok(&crate::common::prefsmith_in(
        dir.path(),
        &[
            "synth",
            "--output",
            "big",
            "--prompts",
            "50000",
            "--responses",
            "4",
            "--response-bytes",
            "1000",
            "--shards",
            "1",
        ],
    ));
    let shard = dir.path().join("big/part-00000.parquet");
    let bytes = std::fs::metadata(&shard).unwrap().len();
    assert!(bytes > 190_000_000, "the shard has {bytes} bytes");
    ok(&crate::common::prefsmith_in(
        dir.path(),
        &["select", "--input", "big", "--output", "big-pairs"],
    ));
    let manifest = crate::common::manifest(&dir.path().join("big-pairs"));
    assert_eq!(manifest["rows"], 50_000);
    let peak = manifest["timing"]["peak_rss_bytes"]
        .as_u64()
        .expect("peak RSS recorded");
    // Measured: ~340 MB for this shard (~590 MB for a 1 GB one): one input row group being
    // decoded, one output row group (≤ 64 MB) being encoded, and the upload buffer.
    assert!(
        peak < 600 * 1024 * 1024,
        "peak RSS {peak} bytes for a {bytes}-byte shard"
    );
}
