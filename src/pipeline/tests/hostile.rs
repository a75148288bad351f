//! The hostile corpus (tests/fixtures/hostile, made by scripts/make_hostile_fixtures.py): every
//! file gives its expected outcome with the default limits, and the memory decoding +
//! preprocessing allocates stays bounded. A counting global allocator measures the peak bytes
//! allocated during each call (this test binary only).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use imgsim_pipeline::{DecodeBudget, ErrorKind, Limits, ModelSpec, Preprocessor};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged and
// only updates counters; the allocator's contract is the system allocator's.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Old and new blocks may coexist during the copy: count the new one first.
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests in this binary measure one call at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// With the default limits, no hostile file makes one call allocate more than this at once.
const HOSTILE_PEAK_BOUND: usize = 64 << 20;

fn preprocessor() -> Preprocessor {
    Preprocessor::new(
        &ModelSpec::from_json(
            r#"{"format":1,"name":"t","weights":"x","input_name":"input","output_name":"embedding",
            "input_width":224,"input_height":224,"resize_shorter":256,"crop":"center","channel_order":"rgb",
            "layout":"nchw","normalize":{"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]},"dims":4}"#,
        )
        .unwrap(),
    )
}

fn sqlstate(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::LimitExceeded => "54000",
        ErrorKind::InvalidInput => "22P03",
        ErrorKind::Unsupported => "0A000",
        ErrorKind::OutOfMemory => "53200",
        ErrorKind::Cancelled => "57014",
        _ => "XX000",
    }
}

/// Run one image; returns (outcome, peak bytes allocated during the call, reserved estimate).
fn run(pre: &Preprocessor, bytes: &[u8], limits: &Limits) -> (String, usize, u64) {
    let mut out = vec![0f32; pre.tensor_len()];
    let budget = DecodeBudget::new(limits.max_decode_bytes);
    let stop = AtomicBool::new(false);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = pre.process_bytes_budgeted(bytes, limits, true, &budget, &stop, &mut out);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let outcome = match &r {
        Ok(()) => "ok".to_string(),
        Err(e) => sqlstate(e.kind()).to_string(),
    };
    if let Err(e) = &r {
        println!("    {}", e);
    }
    (outcome, peak, budget.peak())
}

#[test]
fn hostile_corpus_outcomes_and_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let manifest = String::from_utf8(common::fixture("hostile/manifest.tsv")).unwrap();
    let pre = preprocessor();
    let limits = Limits::default();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut f = line.split('\t');
        let (file, want) = (f.next().unwrap(), f.next().unwrap());
        let bytes = common::fixture(&format!("hostile/{file}"));
        let t = std::time::Instant::now();
        let (got, peak, estimate) = run(&pre, &bytes, &limits);
        println!(
            "{file:40} {got:6} peak {:8.2} MiB  estimate {:8.2} MiB  {:?}",
            peak as f64 / 1048576.0,
            estimate as f64 / 1048576.0,
            t.elapsed()
        );
        if got != want {
            failures.push(format!("{file}: expected {want}, got {got}"));
        }
        if peak > HOSTILE_PEAK_BOUND {
            failures.push(format!(
                "{file}: peak {peak} bytes over {HOSTILE_PEAK_BOUND}"
            ));
        }
        if got == "ok" && peak as u64 > estimate + (1 << 20) {
            failures.push(format!(
                "{file}: peak {peak} bytes over the reserved estimate {estimate}"
            ));
        }
        n += 1;
    }
    assert!(n >= 40, "manifest has {n} entries");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The estimate reserved before decoding covers what decoding + preprocessing really allocate,
/// for ordinary images of every format.
#[test]
fn estimates_cover_real_allocations() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pre = preprocessor();
    let limits = Limits::default();
    let mut files: Vec<String> = Vec::new();
    for dir in ["formats", "parity", "alpha", "grey", "exif"] {
        let p = common::repo_root().join("tests/fixtures").join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".txt") && !n.ends_with(".ppm"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut failures = Vec::new();
    for f in &files {
        let bytes = common::fixture(f);
        let (got, peak, estimate) = run(&pre, &bytes, &limits);
        println!(
            "{f:36} {got:4} peak {:7.2} MiB  estimate {:7.2} MiB",
            peak as f64 / 1048576.0,
            estimate as f64 / 1048576.0
        );
        if got != "ok" {
            failures.push(format!("{f}: {got}"));
        } else if peak as u64 > estimate {
            failures.push(format!("{f}: peak {peak} > estimate {estimate}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
