//! Time-boxed fuzzing of the XML parser and the dialect's row conversion:
//! `cargo bench --bench fuzz_xml -- --seconds 60` (default 60; CI runs it after the tests).
//!
//! Feeds the hostile answers of `tests/it/xml_gen.rs` (arbitrary bytes, token soups, mutated
//! real answers) to `licrenew::billmgr::xml::parse_with` and `Dialect::license` until the time
//! is up, and checks per case that nothing panics and that memory stays bounded: the peak heap
//! growth during one case may not exceed 64 × the input size + 1 MiB (a counting allocator
//! measures it). Prints the number of cases and `panics: 0`; exits 1 on any panic or bound
//! breach and writes the first offending inputs to `target/fuzz_xml-failures/`.

#[path = "../tests/it/xml_gen.rs"]
mod xml_gen;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Heap bytes in use, and the highest value since the last reset.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: defers every operation to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `--seconds N` (default 60); anything else cargo passes (`--bench`) is ignored.
fn seconds() -> u64 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// Inputs kept per run at most: one failure tends to repeat thousands of times.
const MAX_SAVED: u64 = 20;

fn save(dir: &std::path::Path, n: u64, what: &str, body: &[u8], saved: &mut u64) {
    if *saved >= MAX_SAVED {
        return;
    }
    *saved += 1;
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{what}-{n}.bin"));
    let _ = std::fs::write(&path, body);
    eprintln!(
        "fuzz_xml: {what} on case {n}: input saved to {}",
        path.display()
    );
}

fn main() {
    let budget = Duration::from_secs(seconds());
    let seed: [u8; 32] = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut s = [0u8; 32];
        s[..16].copy_from_slice(&t.to_le_bytes());
        s[16..].copy_from_slice(&t.rotate_left(64).to_le_bytes());
        s
    };
    let failures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz_xml-failures");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = xml_gen::answer();
    // Panics are counted and reported here, not printed one by one.
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let (mut cases, mut panics, mut breaches) = (0u64, 0u64, 0u64);
    let (mut bytes, mut largest, mut worst_ratio) = (0u64, 0usize, 0f64);
    let mut saved = 0u64;
    while started.elapsed() < budget {
        let body = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => {
                eprintln!("fuzz_xml: generator failed: {e}");
                std::process::exit(2);
            }
        };
        cases += 1;
        bytes += body.len() as u64;
        largest = largest.max(body.len());
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| xml_gen::exercise(&body));
        let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        if result.is_err() {
            panics += 1;
            save(&failures, cases, "panic", &body, &mut saved);
        }
        let bound = 64 * body.len() + (1 << 20);
        worst_ratio = worst_ratio.max(grew as f64 / (body.len().max(1)) as f64);
        if grew > bound {
            breaches += 1;
            save(&failures, cases, "memory", &body, &mut saved);
            eprintln!(
                "fuzz_xml: case {cases}: {grew} bytes of heap for a {}-byte input",
                body.len()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz_xml: {cases} cases in {secs:.1} s ({:.0}/s), {} MiB of input, largest {} KiB, \
         worst heap/input ratio {worst_ratio:.1}",
        cases as f64 / secs,
        bytes >> 20,
        largest >> 10
    );
    println!("panics: {panics}, memory bound breaches: {breaches}");
    if panics > 0 || breaches > 0 {
        std::process::exit(1);
    }
}
