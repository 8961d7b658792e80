//! The fuzz targets (src/api/fuzz_targets.rs) on stable, in every test run: each replays its
//! corpus in fuzz/corpus/<target>, then a bounded number of seeded mutations of it. The
//! seed is fixed, so a run is the same on every machine; FUZZ_SEED and FUZZ_RUNS change
//! it for a longer search. Coverage-guided runs use cargo-fuzz (docs/fuzzing.md).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Mutations per target in a test run.
const RUNS: usize = 3000;
/// Fragments that reach the parsers' edges sooner than random bytes do.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b":",
    b",",
    b"=",
    b"&",
    b"%",
    b"%FF",
    b"%C3%A9",
    b"+",
    b"\n",
    b"\r\n",
    b"\0",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"/*",
    b"//",
    b"--XBOUNDARY",
    b"--XBOUNDARY--",
    b"Content-Disposition: form-data; name=\"",
    b"filename=\"",
    b"phones",
    b"op",
    b"+44",
    b"0044",
    b"\xd9\xa7",
    b"\xe2\x80\xae",
    b"\xff",
    b"@",
    b"(",
    b")",
    b"-",
    b".",
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    entries.sort();
    let inputs: Vec<Vec<u8>> = entries.iter().map(|path| std::fs::read(path).unwrap()).collect();
    assert!(inputs.len() >= 5, "{} holds a corpus", dir.display());
    inputs
}

fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = rng.gen_range(0..=data.len());
        match rng.gen_range(0..6) {
            0 if !data.is_empty() => {
                let i = rng.gen_range(0..data.len());
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = rng.gen_range(0..data.len());
                data[i] = rng.gen();
            }
            2 => {
                let end = rng.gen_range(at..=data.len().min(at + 16));
                data.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                let from = rng.gen_range(0..=other.len());
                let to = rng.gen_range(from..=other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                let end = rng.gen_range(at..=data.len());
                let copy = data[at..end].to_vec();
                data.splice(end..end, copy);
            }
        }
    }
    data
}

fn run(target: &str, check: fn(&[u8])) {
    let corpus = corpus(target);
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x07_9a7e);
    let runs = std::env::var("FUZZ_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(RUNS);
    let mut rng = StdRng::seed_from_u64(seed);
    let mutated = (0..runs).map(|_| {
        let base = &corpus[rng.gen_range(0..corpus.len())];
        mutate(&mut rng, base, &corpus)
    });
    let inputs: Vec<Vec<u8>> = corpus.iter().cloned().chain(mutated.collect::<Vec<_>>()).collect();
    for input in inputs {
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{target}-failure"));
            std::fs::write(&saved, &input).unwrap();
            panic!(
                "{target} failed on {:?} (saved as {}; add it to the corpus once fixed)",
                String::from_utf8_lossy(&input),
                saved.display()
            );
        }
    }
}

#[test]
fn request_parsing_survives_its_corpus_and_mutations_of_it() {
    run("request_fields", otpgate::api::fuzz_targets::request_fields);
}

#[test]
fn phone_checks_survive_their_corpus_and_mutations_of_it() {
    run("phone", otpgate::api::fuzz_targets::phone);
}
